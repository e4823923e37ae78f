"""Nodes that pipelines imported from Airflow use: a function called as Airflow's
`PythonOperator`/`@task` called it, a DataFrame function as a source, transform or sink, an
email sent through a notifier, and a TODO stub for what could not be mapped.

    extract = PythonCall(extract_orders, kwargs={"day": "{ds}"}, returns=True)
    load = PythonCall(load_orders, reads={"0": "extract"}, after=["extract"])

Return values pass between tasks as JSON files keyed by run id (never pickles): under the run
store's folder (`handoff/<pipeline>/<run id>/<node>.json`), or the system's temporary folder
for runs without a store. A value JSON cannot hold fails the node with what to do instead.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etlkit.errors import ConfigError
from etlkit.model.nodes import Context, Node, Sink, Source, Task, Transform, WriteResult

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa


def airflow_context(ctx: Context) -> dict[str, Any]:
    """The Airflow context names a callable may take, from etlkit's context."""
    return {
        "ds": ctx.ds,
        "ds_nodash": ctx.ds_nodash,
        "ts": ctx.logical_date.isoformat(),
        "logical_date": ctx.logical_date,
        "execution_date": ctx.logical_date,
        "data_interval_start": ctx.data_interval_start or ctx.logical_date,
        "data_interval_end": ctx.data_interval_end or ctx.logical_date,
        "params": dict(ctx.params),
        "run_id": ctx.run_id,
        "dag_id": ctx.pipeline,
        "task_id": ctx.node,
    }


def handoff_path(ctx: Context, node: str) -> Path:
    """Where `node`'s return value is kept for this run."""
    root = Path(ctx.store_path).parent if ctx.store_path else Path(tempfile.gettempdir())
    return root / "handoff" / ctx.pipeline / ctx.run_id / f"{node}.json"


def _render(value: Any, ctx: Context) -> Any:
    if isinstance(value, str):
        return ctx.render(value)
    if isinstance(value, list | tuple):
        return [_render(item, ctx) for item in value]
    if isinstance(value, dict):
        return {key: _render(item, ctx) for key, item in value.items()}
    return value


def _call(
    func: Callable[..., Any],
    ctx: Context,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    context: bool,
) -> Any:
    """Call `func` as Airflow does: templates rendered, context names it asks for passed."""
    call_args = [_render(arg, ctx) for arg in args]
    call_kwargs = {key: _render(value, ctx) for key, value in kwargs.items()}
    if context:
        available = airflow_context(ctx)
        try:
            parameters = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature takes no context
            parameters = inspect.Signature().parameters.values()
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        named = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
        for key, value in available.items():
            if key not in call_kwargs and (takes_all or key in named):
                call_kwargs[key] = value
        # a positional argument fills a named parameter that the context would fill too
        filled = [p.name for p in list(parameters)[: len(call_args)]]
        for key in filled:
            if key in available and key not in kwargs:
                call_kwargs.pop(key, None)
    return func(*call_args, **call_kwargs)


class PythonCall(Task):
    """Calls a function as Airflow's `PythonOperator` or `@task` did.

    Args:
        func: the function.
        args, kwargs: its arguments; strings are templates (`{ds}`).
        reads: argument (its position as text, or its keyword) -> the node whose return
            value it is.
        context: pass the Airflow context names the function takes (`ds`, `**context`).
        returns: keep the return value for nodes reading it (`reads`), as JSON.
        after: nodes that must finish first.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        reads: Mapping[str, str] | None = None,
        context: bool = True,
        returns: bool = False,
        after: Sequence[Node | str] = (),
    ) -> None:
        super().__init__(after=after)
        self.func = func
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.reads = dict(reads or {})
        self.context = context
        self.returns = returns

    def run(self, ctx: Context) -> None:
        """Call the function with its inputs; keep its return value if asked to."""
        args = list(self.args)
        kwargs = dict(self.kwargs)
        for key, node in sorted(self.reads.items()):
            value = self.read_input(ctx, node)
            if key.isdigit():
                args.insert(int(key), value)
            else:
                kwargs[key] = value
        result = _call(self.func, ctx, args, kwargs, context=self.context)
        if self.returns:
            self.keep(ctx, result)

    def read_input(self, ctx: Context, node: str) -> Any:
        path = handoff_path(ctx, node)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(
                f"Node '{ctx.node}' of pipeline '{ctx.pipeline}' reads the return value of "
                f"node '{node}', which run {ctx.run_id} did not keep ({path} is missing): "
                f"give '{node}' returns=True, or rerun the whole run."
            ) from exc

    def keep(self, ctx: Context, value: Any) -> None:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"Node '{ctx.node}' of pipeline '{ctx.pipeline}' returned a "
                f"{type(value).__name__}, which is passed on as JSON and JSON cannot hold it "
                f"({exc}): return plain data (dicts, lists, strings, numbers), or make the "
                "data a node output (a Source or Transform returning a DataFrame)."
            ) from exc
        path = handoff_path(ctx, ctx.node)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)  # readers see the whole value or none


class FunctionSource(Source):
    """A source whose rows are the polars DataFrame a function returns."""

    def __init__(
        self, func: Callable[..., pl.DataFrame], *, kwargs: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.func = func
        self.kwargs = dict(kwargs or {})

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        """Call the function; yield its DataFrame's record batches."""
        frame = _call(self.func, ctx, (), self.kwargs, context=True)
        yield from _frame(frame, ctx).to_arrow().to_batches()


class FunctionTransform(Transform[Any, Any]):
    """A transform calling a function `DataFrame -> DataFrame` on every chunk of its input."""

    def __init__(self, func: Callable[..., pl.DataFrame], upstream: Node | str) -> None:
        super().__init__(upstream)
        self.func = func

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        """The function's result for this chunk."""
        return _frame(_call(self.func, ctx, (batch,), {}, context=True), ctx)


class FunctionSink(Sink):
    """A sink handing its whole input, as one polars DataFrame, to a function."""

    def __init__(self, func: Callable[..., Any], upstream: Node | str) -> None:
        super().__init__(upstream)
        self.func = func

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        """Collect the input and call the function with it."""
        import polars as pl
        import pyarrow as pa

        table = pa.Table.from_batches(list(batches))
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        _call(self.func, ctx, (frame,), {}, context=True)
        return WriteResult(rows=frame.height, uri=getattr(self.func, "__qualname__", ""))


def _frame(value: Any, ctx: Context) -> pl.DataFrame:
    import polars as pl

    if not isinstance(value, pl.DataFrame):
        raise ConfigError(
            f"Node '{ctx.node}' of pipeline '{ctx.pipeline}' must return a polars DataFrame, "
            f"not a {type(value).__name__}: return one, or make the node a PythonCall."
        )
    return value


class SendEmail(Task):
    """Sends the run's summary through a notifier of etlkit.toml, as Airflow's EmailOperator
    sent its email (the subject and body are the notifier's)."""

    def __init__(
        self, notifier: str, *, project_dir: str = ".", after: Sequence[Node | str] = ()
    ) -> None:
        super().__init__(after=after)
        self.notifier = notifier
        self.project_dir = project_dir

    def run(self, ctx: Context) -> None:
        """Send through the notifier; fail if it is not configured or cannot deliver."""
        from etlkit.runs.notifications import NotificationContext, load_notifiers

        notifiers = load_notifiers(Path(self.project_dir))
        if self.notifier not in notifiers:
            raise ConfigError(
                f"Node '{ctx.node}' of pipeline '{ctx.pipeline}' sends through notifier "
                f"'{self.notifier}', which etlkit.toml in {Path(self.project_dir).resolve()} "
                f"does not configure: add [notifiers.{self.notifier}]."
            )
        notifiers[self.notifier].send(
            NotificationContext(
                event="success",
                pipeline=ctx.pipeline,
                run_id=ctx.run_id,
                logical_date=ctx.logical_date,
                node=ctx.node,
                state="running",
            )
        )


class Todo(Task):
    """A task the importer could not map: it fails, saying what to write instead."""

    def __init__(
        self, what: str, *, line: int, suggestion: str, after: Sequence[Node | str] = ()
    ) -> None:
        super().__init__(after=after)
        self.what = what
        self.line = line
        self.suggestion = suggestion

    def run(self, ctx: Context) -> None:
        """Fail: this node is still to be written."""
        raise NotImplementedError(
            f"Node '{ctx.node}' of pipeline '{ctx.pipeline}' is a TODO left by "
            f"`etlkit import-airflow`: {self.what} (DAG file line {self.line}) was not "
            f"mapped. {self.suggestion}; then replace this node."
        )


def airflow_callback(func: Callable[[dict[str, Any]], Any]) -> Callable[[Any], None]:
    """An `on_failure`/`on_retry`/`on_success` callback calling an Airflow callback function
    with the context names it read (`dag_id`, `run_id`, `ds`, `exception`, `task_id`)."""

    def call(note: Any) -> None:
        func(
            {
                "dag_id": note.pipeline,
                "run_id": note.run_id,
                "ds": note.logical_date.strftime("%Y-%m-%d"),
                "logical_date": note.logical_date,
                "execution_date": note.logical_date,
                "task_id": note.node,
                "exception": note.error,
                "event": note.event,
            }
        )

    call.__qualname__ = getattr(func, "__qualname__", "airflow_callback")
    return call
