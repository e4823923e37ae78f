"""The node roles a pipeline is made of: Source, Transform, Sink, Sql and Lazy, and their Context.

Each role has one small base class with one required method:

- `Source.read(ctx)` yields `pyarrow.RecordBatch` chunks.
- `Transform[In, Out].process(batch, ctx)` maps one polars DataFrame chunk to another.
- `Sink.write(batches, ctx)` consumes an iterator of record batches and returns a `WriteResult`.
- `Sql(query)` runs DuckDB SQL over its inputs' staged outputs, inputs named in braces.
- `Lazy[Out].query(ctx, *frames)` builds a polars LazyFrame over its inputs' staged outputs,
  executed by polars' streaming engine.

Node names are the attribute names on the pipeline class. Inputs are other nodes (or node names,
resolved when the pipeline's graph is built).
"""

from __future__ import annotations

import re
import string
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Self, TypeVar

from etlkit.errors import ConfigError, PipelineDefinitionError, quoted

if TYPE_CHECKING:
    import pandera.polars as pdp
    import polars as pl
    import pyarrow as pa

    Model = type[pdp.DataFrameModel]
else:
    Model = type

InT = TypeVar("InT")
OutT = TypeVar("OutT")

Kind = Literal["source", "transform", "sink", "sql", "lazy", "sensor", "task"]

#: Names usable in path and SQL templates besides params; no node may be called one of these.
TEMPLATE_NAMES: frozenset[str] = frozenset(
    {
        "ds",
        "ds_nodash",
        "logical_date",
        "data_interval_start",
        "data_interval_end",
        "run_id",
        "pipeline",
        "node",
        "params",
    }
)


@dataclass(frozen=True)
class Context:
    """What a node knows about the run it is part of.

    Attributes:
        pipeline: the pipeline's name (its class name in snake_case).
        run_id: the run's unique, sortable, path-safe id.
        node: the name of the node being run ('' outside a node).
        logical_date: the date the run is for (`--date`), timezone-aware.
        params: `--param key=value` pairs.
        chunk_rows: the preferred number of rows per chunk (a hint for sources).
        data_interval_start: start of the data interval the run covers.
        data_interval_end: end of the data interval the run covers.
        cursors: per node, the last cursor value an incremental source loaded (as text).
        store_path: the run store's path, for nodes that look at other runs (sensors).
        cancelled: returns True once the run is being cancelled (poll it in long waits).
    """

    pipeline: str
    run_id: str
    logical_date: datetime
    node: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    chunk_rows: int = 131_072
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    cursors: Mapping[str, str] = field(default_factory=dict)
    store_path: str | None = None
    cancelled: Callable[[], bool] = field(default=lambda: False, compare=False, repr=False)

    @property
    def cursor(self) -> str | None:
        """The last cursor value this (incremental) node loaded, or None on its first run."""
        return self.cursors.get(self.node)

    @property
    def ds(self) -> str:
        """The logical date as `YYYY-MM-DD`."""
        return self.logical_date.strftime("%Y-%m-%d")

    @property
    def ds_nodash(self) -> str:
        """The logical date as `YYYYMMDD`."""
        return self.logical_date.strftime("%Y%m%d")

    def template_values(self) -> dict[str, Any]:
        """The names a path or SQL template may use: `{ds}`, `{run_id}`, params by name, ..."""
        values: dict[str, Any] = dict(self.params)
        values.update(
            ds=self.ds,
            ds_nodash=self.ds_nodash,
            logical_date=self.logical_date.isoformat(),
            data_interval_start=(self.data_interval_start or self.logical_date).isoformat(),
            data_interval_end=(self.data_interval_end or self.logical_date).isoformat(),
            run_id=self.run_id,
            pipeline=self.pipeline,
            node=self.node,
            params=dict(self.params),
        )
        return values

    def render(self, template: str, extra: Mapping[str, str] | None = None) -> str:
        """Fill `template`'s `{name}` fields from the context (and `extra`).

        Raises:
            ConfigError: the template names a field the context does not have.
        """
        values = self.template_values()
        if extra:
            values.update(extra)
        try:
            return template.format_map(values)
        except KeyError as exc:
            raise ConfigError(
                f"Node '{self.node}' in pipeline '{self.pipeline}': template {template!r} "
                f"uses {{{exc.args[0]}}}, which is neither a built-in name "
                f"({', '.join(sorted(TEMPLATE_NAMES - {'params'}))}) nor a --param "
                f"(params: {quoted(sorted(self.params))})."
            ) from exc
        except (ValueError, IndexError) as exc:
            raise ConfigError(
                f"Node '{self.node}' in pipeline '{self.pipeline}': template {template!r} "
                f"is malformed ({exc}); write literal braces as '{{{{' and '}}}}'."
            ) from exc

    def for_node(self, node: str) -> Context:
        """This context, for the named node."""
        # not `replace`, which re-runs __init__, nor `copy.copy` (its reduce protocol is 4x
        # this): one per node adds up on graphs of quick nodes
        ctx = object.__new__(type(self))
        ctx.__dict__.update(self.__dict__, node=node)
        return ctx


Policy = Literal["fail", "drop", "quarantine"]
POLICIES: tuple[Policy, ...] = ("fail", "drop", "quarantine")


@dataclass(frozen=True)
class Expectations:
    """Dataset-level checks on a node's output and its policy for invalid rows (see `expect`)."""

    min_rows: int | None = None
    max_rows: int | None = None
    unique: tuple[str, ...] = ()
    sql: tuple[str, ...] = ()
    on_invalid: Policy | None = None
    max_invalid_fraction: float | None = None

    @property
    def dataset_checks(self) -> bool:
        """Whether checks need the node's whole staged output (uniqueness, SQL assertions)."""
        return bool(self.unique or self.sql)


@dataclass(frozen=True)
class NodeOptions:
    """How a node runs: retries, timeout and pool (see `Node.options`); None means the default."""

    retries: int | None = None
    retry_delay: float | None = None
    retry_exponential_backoff: bool | None = None
    max_retry_delay: float | None = None
    retry_validation_errors: bool = False
    timeout: float | None = None
    pool: str | None = None


@dataclass(frozen=True)
class WriteResult:
    """What a sink wrote: the rows, where to (a URI or table name) and free-form facts."""

    rows: int
    uri: str
    extra: Mapping[str, Any] = field(default_factory=dict)


class Node:
    """Base of every node. Users subclass one of the roles below, never this directly.

    Attributes:
        name: the attribute name on the pipeline class (set when the class is created).
        inputs: upstream nodes, or node names resolved when the graph is built.
        input_model: the Pandera model this node expects from its inputs, if declared.
        output_model: the Pandera model of what this node produces, if declared.
        stage: whether the node's output is staged as Parquet (blocking consumers force it).
    """

    kind: ClassVar[Kind]
    input_model: Model | None = None
    output_model: Model | None = None

    def __init__(self, *inputs: Node | str, stage: bool = True) -> None:
        for item in inputs:
            if not isinstance(item, Node | str):
                raise PipelineDefinitionError(
                    "?",
                    [
                        f"{type(self).__name__} got an input of type {type(item).__name__}; "
                        "inputs are nodes (or node names)"
                    ],
                )
        self.inputs: tuple[Node | str, ...] = tuple(inputs)
        self.stage = stage
        self.name = ""
        self.expectations = Expectations()
        self.run_options = NodeOptions()
        self.cursor_column: str | None = None

    def incremental(self, cursor: str) -> Self:
        """Load only rows whose `cursor` column is above the last successful run's maximum.

            visits = PostgresSource(conn="hospital_db", table="visits", schema=Visit)
            visits = visits.incremental("updated_at")

        The cursor is stored per pipeline and node after a successful run only (a failed run
        does not advance it); `etlkit state show/reset PIPELINE` inspects or resets it.
        Connectors that can push the predicate down read `ctx.cursor`; every other source is
        filtered as it streams.
        """
        self.cursor_column = cursor
        return self

    def options(
        self,
        *,
        retries: int | None = None,
        retry_delay: float | None = None,
        retry_exponential_backoff: bool | None = None,
        max_retry_delay: float | None = None,
        retry_validation_errors: bool = False,
        timeout: float | None = None,
        pool: str | None = None,
    ) -> Self:
        """Set how the node runs; returns the node. Unset values fall back to the pipeline's.

            load = PostgresSink(cleaned, conn="warehouse", table="t").options(
                retries=3, retry_delay=30, retry_exponential_backoff=True, pool="warehouse"
            )

        Args:
            retries: attempts after the first failure; a retried node restarts from its inputs'
                staged outputs (committed nodes are not recomputed).
            retry_delay: seconds before the first retry.
            retry_exponential_backoff: double the delay on each further retry.
            max_retry_delay: cap on the delay, in seconds.
            retry_validation_errors: retry data validation failures too (off: bad data rarely
                fixes itself).
            timeout: seconds the node may run; it is cancelled at the next chunk boundary, or
                abandoned if it does not yield.
            pool: a named pool (`[pools]` in etlkit.toml) whose slots bound how many nodes using
                it run at once, across runs.
        """
        problems = []
        for label, value in (("retries", retries), ("retry_delay", retry_delay)):
            if value is not None and value < 0:
                problems.append(f"{label} must be >= 0")
        for label, value in (("timeout", timeout), ("max_retry_delay", max_retry_delay)):
            if value is not None and value <= 0:
                problems.append(f"{label} must be > 0")
        if problems:
            raise PipelineDefinitionError(self.name or type(self).__name__, problems)
        self.run_options = NodeOptions(
            retries=retries,
            retry_delay=retry_delay,
            retry_exponential_backoff=retry_exponential_backoff,
            max_retry_delay=max_retry_delay,
            retry_validation_errors=retry_validation_errors,
            timeout=timeout,
            pool=pool,
        )
        return self

    def expect(
        self,
        *,
        min_rows: int | None = None,
        max_rows: int | None = None,
        unique: Sequence[str] = (),
        sql: Sequence[str] = (),
        on_invalid: Policy | None = None,
        max_invalid_fraction: float | None = None,
    ) -> Self:
        """Declare checks on the node's output and what to do with invalid rows; returns the node.

            patients = CsvSource("patients.csv", schema=RawPatient).expect(
                min_rows=1, unique=["patient_id"], on_invalid="quarantine"
            )

        Args:
            min_rows: fewer output rows fail the run (`min_rows=1`: "no data found").
            max_rows: more output rows fail the run.
            unique: columns whose combination must be unique across the whole output.
            sql: assertions as DuckDB queries over `{output}` returning the offending rows;
                any row returned fails the run.
            on_invalid: rows breaking the output model: `fail` the run (default), `drop` them
                (counted), or `quarantine` them in the `<node>_rejects` staged output.
            max_invalid_fraction: with drop or quarantine, fail the run anyway when more than
                this fraction of the rows is invalid.

        Dataset-level checks run over the node's whole staged output when it finishes.
        """
        problems = []
        if any(bound is not None and bound < 0 for bound in (min_rows, max_rows)):
            problems.append("min_rows and max_rows must be >= 0")
        if on_invalid is not None and on_invalid not in POLICIES:
            problems.append(f"on_invalid must be one of {quoted(POLICIES)}, not {on_invalid!r}")
        if max_invalid_fraction is not None and not 0 <= max_invalid_fraction <= 1:
            problems.append("max_invalid_fraction must be between 0 and 1")
        for query in sql:
            if "{output}" not in query:
                problems.append(f"SQL assertion {query!r} must select from {{output}}")
        if problems:
            raise PipelineDefinitionError(self.name or type(self).__name__, problems)
        self.expectations = Expectations(
            min_rows=min_rows,
            max_rows=max_rows,
            unique=tuple(unique),
            sql=tuple(sql),
            on_invalid=on_invalid,
            max_invalid_fraction=max_invalid_fraction,
        )
        return self

    def __set_name__(self, owner: type, name: str) -> None:
        if not self.name:
            self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or '(unnamed)'}>"

    @property
    def streaming(self) -> bool:
        """Whether the node consumes its inputs chunk by chunk (else it reads staged outputs)."""
        return self.kind in ("transform", "sink")


def _model_args(cls: type, base: type) -> tuple[Any, ...]:
    for orig in getattr(cls, "__orig_bases__", ()):
        if typing.get_origin(orig) is base:
            return typing.get_args(orig)
    return ()


def _as_model(arg: Any) -> Model | None:
    return arg if isinstance(arg, type) and hasattr(arg, "to_schema") else None


@dataclass(frozen=True)
class SourceFiles:
    """Immutable files a source would read, which staging may reference instead of copying.

    Parquet files (`csv` None): a source that can describe its input this way (`Source.files`)
    is not copied into staging when only `Sql` and `Lazy` nodes read it: the staged output is a
    reference (these files, their sizes and footer checksums, which a resume verifies),
    validated in one pass; when it streams to other nodes it is validated chunk by chunk and
    still staged as the reference.

    CSV files (`csv`: how they are parsed, as `staging.CsvLayout.to_json` gives it): when
    every consumer takes the source's chunks as they are read, the staged output is a reference
    to the files (sizes and `staging.file_fingerprint`s, which a resume verifies); whoever
    reads it later (a resumed run, `etlkit query`) parses them again as the source did.
    `rows` is unknown then (0).

    `metadata`: the Parquet files' parsed footers (`pyarrow.parquet.FileMetaData`, in `urls`
    order) when the source read them anyway, so validation does not parse them again.
    """

    urls: tuple[str, ...]
    columns: tuple[str, ...]
    rows: int
    sizes: tuple[int, ...]
    checksums: tuple[str, ...]
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    csv: Mapping[str, Any] | None = None
    metadata: tuple[Any, ...] = field(default=(), compare=False, repr=False)


class Source(Node):
    """Produces record batches from the outside world.

    Subclasses call `super().__init__(schema=...)` and implement `read`. The schema model is the
    source's projection: read only its columns, with its types.
    """

    kind = "source"
    #: Whether the files `files` describes are best read in place by `Sql` and `Lazy` consumers
    #: (Parquet, which DuckDB and polars read themselves), rather than the chunks `read` yields
    #: (CSV: a `Sql` node then scans the parsed chunks as they come).
    files_in_place: ClassVar[bool] = True

    def __init__(self, *, schema: Model | None = None, stage: bool = True) -> None:
        super().__init__(stage=stage)
        self.output_model = schema

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        """Yield the source's data, one record batch at a time."""
        raise NotImplementedError(f"{type(self).__name__} must implement read(ctx)")

    def files(self, ctx: Context) -> SourceFiles | None:
        """The immutable files `read` would read, if its output is those files as they are
        (Parquet), or parsed from them by fixed rules (CSV: `SourceFiles.csv`).

        Optional: None (the default) means the source's output is always streamed and staged.
        """
        return None


class Transform(Node, Generic[InT, OutT]):
    """Maps each chunk of its inputs to a chunk of output, in polars.

    Declare the models as type arguments; both are checked on every edge:

        class AddMonth(ek.Transform[RawBilling, Billing]):
            def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
                return batch.with_columns(month=pl.col("billed_at").dt.strftime("%Y-%m"))

    Several inputs are a union: chunks arrive in the order they are produced.
    """

    kind = "transform"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        args = _model_args(cls, Transform)
        if args:
            cls.input_model = _as_model(args[0])
            cls.output_model = _as_model(args[1])

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        """Return the output chunk for one input chunk (an empty frame drops it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement process(batch, ctx)")


class Sink(Node):
    """Writes its inputs' chunks to the outside world, atomically: all of it or nothing.

    Subclasses call `super().__init__(*inputs, schema=...)` and implement `write`, writing to a
    temporary location and committing only when the iterator is exhausted. When the run fails,
    the iterator raises `RunCancelledError` and the sink must discard what it wrote.
    """

    kind = "sink"

    def __init__(self, *inputs: Node | str, schema: Model | None = None) -> None:
        super().__init__(*inputs, stage=False)
        self.input_model = schema

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        """Consume `batches` and commit them; return what was written."""
        raise NotImplementedError(f"{type(self).__name__} must implement write(batches, ctx)")


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Sql(Node):
    """DuckDB SQL over the staged outputs of the nodes it names in braces.

        totals = ek.Sql("select month, sum(amount) as total from {monthly} group by month")

    Other brace fields (`{ds}`, params) are filled from the context. DuckDB runs out-of-core
    (memory limit and spill directory come from the settings) and the result streams out in chunks.
    A query over one input that streams (not a Parquet source read in place) scans its chunks as
    they arrive, while they are staged, unless its plan reads that input more than once.
    """

    kind = "sql"

    def __init__(self, query: str, *, schema: Model | None = None, stage: bool = True) -> None:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(query) if name]
        except ValueError as exc:
            raise PipelineDefinitionError(
                "?",
                [
                    f"SQL {query!r} is malformed ({exc}): node names and template fields go in "
                    "single braces, literal braces are written '{{' and '}}'"
                ],
            ) from exc
        referenced = [
            name
            for name in fields
            if _FIELD.fullmatch("{" + name + "}") and name not in TEMPLATE_NAMES
        ]
        super().__init__(*dict.fromkeys(referenced), stage=stage)
        self.query = query
        self.output_model = schema


class Lazy(Node, Generic[OutT]):
    """A polars lazy query over the staged outputs of its inputs, run by the streaming engine.

    class Joined(ek.Lazy[Report]):
        def query(self, ctx, billing: pl.LazyFrame, insurance: pl.LazyFrame) -> pl.LazyFrame:
            return billing.join(insurance, on="patient_id")

    joined = Joined(billing, insurance)
    """

    kind = "lazy"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        args = _model_args(cls, Lazy)
        if args:
            cls.output_model = _as_model(args[0])

    def query(self, ctx: Context, *frames: pl.LazyFrame) -> pl.LazyFrame:
        """Build the lazy query from one LazyFrame per input, in the order of the inputs."""
        raise NotImplementedError(f"{type(self).__name__} must implement query(ctx, *frames)")


class Sensor(Node):
    """Waits for a condition before the rest of the run starts (a file arrived, a run succeeded).

    Subclasses implement `poke(ctx) -> bool`. In a run, every sensor must pass before any other
    node starts; the scheduler pokes a due run's sensors itself and starts the run only when
    they pass, so a waiting sensor holds no process and no slot.

    Args:
        poke_interval: seconds between pokes.
        timeout: seconds to wait in all before failing (or skipping, with `soft_fail`).
        soft_fail: on timeout, skip the run instead of failing it.
    """

    kind = "sensor"

    def __init__(
        self, *, poke_interval: float = 60.0, timeout: float = 3600.0, soft_fail: bool = False
    ) -> None:
        super().__init__(stage=False)
        if poke_interval <= 0 or timeout <= 0:
            raise PipelineDefinitionError(
                type(self).__name__, ["poke_interval and timeout must be > 0"]
            )
        self.poke_interval = poke_interval
        self.timeout = timeout
        self.soft_fail = soft_fail

    def poke(self, ctx: Context) -> bool:
        """Whether the condition holds now. Must be quick and must not block."""
        raise NotImplementedError(f"{type(self).__name__} must implement poke(ctx)")

    def describe(self, ctx: Context) -> str:
        """What the sensor waits for, for messages (`file s3://b/billing/2025-03-01.csv`)."""
        return type(self).__name__


class Task(Node):
    """A step with no data output: runs after its inputs finished (sinks included).

        notify = Command(["python", "send_report.py", "{ds}"], after=[report])

    Subclasses implement `run(ctx)`; raising fails the node.
    """

    kind = "task"

    def __init__(self, *, after: Sequence[Node | str] = ()) -> None:
        super().__init__(*after, stage=False)

    def run(self, ctx: Context) -> None:
        """Do the step's work."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(ctx)")
