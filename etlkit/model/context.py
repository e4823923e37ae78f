"""The run's context as a node sees it, and the templates it fills.

`Context` carries what a node knows about its run (pipeline, run id, logical date, params,
cursors, cancellation) and renders path and shell templates (`{ds}`, `{run_id}`, params by name).
`TEMPLATE_NAMES` are the built-in template names, which no node may take as its name. SQL
templates are filled by `etlkit.model.sql_binding.bind_sql`, which binds values instead of
pasting them.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from etlkit.errors import ConfigError, quoted

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
    def load_id(self) -> str:
        """This node's load in this run: `pipeline/run_id/node`, the same on every retry.

        Sinks record it with what they commit, so a retry after a kill between the
        destination's commit and the run store's finds the load and does not repeat it.
        """
        return f"{self.pipeline}/{self.run_id}/{self.node}"

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

    def render(
        self,
        template: str,
        extra: Mapping[str, str] | None = None,
        *,
        quote: Callable[[str], str] | None = None,
    ) -> str:
        """Fill `template`'s `{name}` fields from the context (and `extra`).

        `quote`, if given, is applied to the whole text of every field once it is formatted
        (`{x}`, `{params[x]}`, `{x!r}`, `{x:>8}` alike), as a shell needs each value quoted.

        Raises:
            ConfigError: the template names a field the context does not have.
        """
        values = self.template_values()
        if extra:
            values.update(extra)
        try:
            if quote is not None:
                return _QuotingFormatter(quote).vformat(template, (), values)
            return template.format_map(values)
        except KeyError as exc:
            raise ConfigError(
                f"Node '{self.node}' in pipeline '{self.pipeline}': template {template!r} "
                f"uses {{{exc.args[0]}}}, which is neither a built-in name "
                f"({', '.join(sorted(TEMPLATE_NAMES - {'params'}))}) nor a --param "
                f"(params: {quoted(sorted(self.params))})."
            ) from exc
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise ConfigError(
                f"Node '{self.node}' in pipeline '{self.pipeline}': template {template!r} "
                f"is malformed ({exc}); write literal braces as '{{{{' and '}}}}'."
            ) from exc

    def days(self) -> list[Context]:
        """This context once for each day of the run's data interval: its logical date the
        interval's start, then a day later (on the clock of the start's timezone), and so on
        while before the interval's end, so `{ds}` renders each day of a weekly or monthly run
        and a daily run at 02:00 renders one. Only this context when the run has no interval.
        """
        start, end = self.data_interval_start, self.data_interval_end
        if start is None or end is None or end <= start:
            return [self]
        days, moment = [], start
        while moment < end:
            days.append(self._with(logical_date=moment))
            moment = start + timedelta(days=len(days))  # wall-clock days across DST changes
        return days

    def for_node(self, node: str) -> Context:
        """This context, for the named node."""
        return self._with(node=node)

    def _with(self, **changes: Any) -> Context:
        """This context with `changes`: not `replace`, which re-runs __init__, nor `copy.copy`
        (its reduce protocol costs more): one per node adds up on graphs of quick nodes."""
        ctx = object.__new__(type(self))
        ctx.__dict__.update(self.__dict__, **changes)
        return ctx


class _QuotingFormatter(string.Formatter):
    """`str.format_map` that passes each field's formatted text through `quote`."""

    def __init__(self, quote: Callable[[str], str]) -> None:
        self.quote = quote

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):  # `{}` or `{0}`: a template has no positional values
            raise ValueError(f"field {{{key}}} has no name")
        return kwargs[key]

    def format_field(self, value: Any, format_spec: str) -> str:
        return self.quote(super().format_field(value, format_spec))
