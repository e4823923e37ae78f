"""The Pipeline class declaration (`PipelineDefinition`) and the logical dates runs are for.

    class MonthlyReport(ek.Pipeline):
        billing = CsvSource("billing/{ds}/*.csv", schema=RawBilling)
        monthly = AddMonth(billing)
        report = ParquetSink("reports/{ds}/totals.parquet", monthly)

A pipeline's name is its class name in snake_case (`monthly_report`), its nodes are its class
attributes that are nodes, named after the attribute. Pipelines are found in a folder or by
name by `etlkit.model.discovery`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etlkit.errors import (
    ConfigError,
    PipelineDefinitionError,
    quoted,
)
from etlkit.model.graph import Graph, build_graph
from etlkit.model.nodes import Node

if TYPE_CHECKING:
    from etlkit.settings.config import Settings

#: Pipeline class attributes that override `[run]` settings for that pipeline.
RUN_SETTING_ATTRIBUTES: tuple[str, ...] = (
    "chunk_rows",
    "chunk_bytes",
    "channel_depth",
    "max_workers",
    "retries",
    "retry_delay",
    "retry_exponential_backoff",
    "max_retry_delay",
    "timeout",
    "validate",
    "on_invalid",
    "max_invalid_fraction",
)


def snake_case(name: str) -> str:
    """`MonthlyReport` -> `monthly_report`, `TPCHQ1` -> `tpchq1`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class PipelineDefinition:
    """What a pipeline is: its nodes, graph, schedule, settings and params. Users subclass
    `ek.Pipeline` (`etlkit.runs.pipeline`), which adds `run` and `retry`; everything that only
    reads a pipeline (the scheduler, the UI, discovery) takes this class.

    Class attributes:
        name: the pipeline's name (default: the class name in snake_case).
        params: declared `--param` names with their default values.
        schedule: a 5-field cron expression, a preset (`@daily`, `@hourly`, `@monthly`, ...) or
            a timedelta interval, read by the scheduler (None: manual and triggered runs only).
        start_date, end_date: the first and last logical dates the scheduler plans.
        timezone: the IANA timezone the schedule is read in (DST-correct).
        catchup: whether the scheduler runs the intervals missed while it was down.
        max_active_runs: runs of this pipeline at once.
        on_failure, on_retry, on_success: notifier names (`[notifiers.NAME]` in etlkit.toml)
            or callables receiving a notification context.
        chunk_rows, retries, retry_delay, timeout, ...: override the `[run]` settings for this
            pipeline (`timeout` bounds the whole run).
    """

    name: ClassVar[str] = ""
    params: ClassVar[Mapping[str, str]] = {}
    schedule: ClassVar[str | timedelta | None] = None
    start_date: ClassVar[str | datetime | None] = None
    end_date: ClassVar[str | datetime | None] = None
    timezone: ClassVar[str] = "UTC"
    catchup: ClassVar[bool] = False
    max_active_runs: ClassVar[int] = 1
    on_failure: ClassVar[Sequence[str | Callable[[Any], None]]] = ()
    on_retry: ClassVar[Sequence[str | Callable[[Any], None]]] = ()
    on_success: ClassVar[Sequence[str | Callable[[Any], None]]] = ()
    nodes: ClassVar[Mapping[str, Node]] = {}
    _graph: ClassVar[Graph | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = snake_case(cls.__name__)
        found: dict[str, Node] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                found.pop(attr, None)  # a subclass attribute that is not a node removes the node
                if isinstance(value, Node):
                    found[attr] = value
        members = {  # of etlkit's classes: ek.Pipeline adds run and retry to this one's
            attr
            for klass in cls.__mro__[1:]
            if klass.__module__.startswith("etlkit.")
            for attr in vars(klass)
        }
        shadowing = sorted(attr for attr in found if attr in members)
        if shadowing:
            raise PipelineDefinitionError(
                cls.name,
                [
                    f"node name(s) {shadowing} shadow Pipeline members "
                    f"({', '.join(sorted(a for a in members if not a.startswith('_')))}); "
                    "rename the node(s)"
                ],
            )
        cls.nodes = found
        cls._graph = None

    @classmethod
    def graph(cls) -> Graph:
        """The pipeline's checked graph (built once).

        Raises:
            PipelineDefinitionError: every problem of the graph, at once.
        """
        cached: Graph | None = cls.__dict__.get("_graph")
        if cached is None:
            problems = [
                f"node '{attr}' is the node already named '{node.name}' "
                "(one node object per attribute)"
                for attr, node in cls.nodes.items()
                # the same object twice in this class is reported by build_graph
                if node.name != attr and cls.nodes.get(node.name) is not node
            ]
            try:
                cached = build_graph(
                    cls.name, cls.nodes, params=cls.params, replaced=cls._replaced_nodes()
                )
            except PipelineDefinitionError as exc:
                raise PipelineDefinitionError(cls.name, [*problems, *exc.problems]) from exc
            if problems:
                raise PipelineDefinitionError(cls.name, problems)
            cls._graph = cached
        return cached

    @classmethod
    def _replaced_nodes(cls) -> dict[str, list[Node]]:
        """Base pipelines' nodes this class overrides, by name: their consumers read the new one."""
        replaced: dict[str, list[Node]] = {}
        for klass in cls.__mro__[1:]:
            for attr, value in vars(klass).items():
                if isinstance(value, Node) and attr in cls.nodes and cls.nodes[attr] is not value:
                    replaced.setdefault(attr, []).append(value)
        return replaced

    @classmethod
    def layered(cls, settings: Settings) -> Settings:
        """`settings` with this class's attributes applied (below CLI flags)."""
        return settings.with_overrides(cls.settings_overrides(), f"pipeline {cls.__name__}")

    @classmethod
    def resolve_params(cls, given: Mapping[str, str]) -> dict[str, str]:
        """The declared params' defaults overridden by `given`.

        Raises:
            ConfigError: `given` names a param the class does not declare.
        """
        unknown = [k for k in given if k not in cls.params]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(cls.params), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"Pipeline '{cls.name}' has no param {unknown[0]!r}; it declares "
                f"{quoted(sorted(cls.params))} (add it to the class's `params`).{hint}"
            )
        return {**cls.params, **given}

    @classmethod
    def settings_overrides(cls) -> dict[str, object]:
        """`[run]` settings this pipeline class sets, as dotted keys (`run.retries`)."""
        return {
            f"run.{attr}": getattr(cls, attr)
            for attr in RUN_SETTING_ATTRIBUTES
            if hasattr(cls, attr)
        }


def parse_logical_date(value: str | datetime | None, timezone: str = "UTC") -> datetime:
    """A logical date from `YYYY-MM-DD`, an ISO datetime or a datetime; naive means in
    `timezone` (an IANA name), and None means today's midnight there.

    Raises:
        ConfigError: the text is not a date, or `timezone` is not an IANA timezone.
    """
    try:
        zone: tzinfo = UTC if timezone == "UTC" else ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"Timezone {timezone!r} is not an IANA timezone (e.g. 'Europe/Berlin', 'UTC')."
        ) from exc
    if value is None:
        now = datetime.now(zone)
        return datetime(now.year, now.month, now.day, tzinfo=zone)
    return parse_moment(value, zone)


def parse_moment(value: str | datetime, zone: tzinfo, *, what: str = "Logical date") -> datetime:
    """A moment from `YYYY-MM-DD`, ISO text or a datetime; naive means in `zone`. It keeps the
    offset it has (`.astimezone(UTC)` for the store), and a day on either side of it exists,
    as a data interval around it needs.

    Raises:
        ConfigError: the text is not a date, or the moment is out of range.
    """
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ConfigError(
                f"{what} {value!r} is not a date: use YYYY-MM-DD or an ISO datetime"
            ) from exc
    moment = moment if moment.utcoffset() is not None else moment.replace(tzinfo=zone)
    try:  # 9999-12-31T23:59:59-05:00 is in year 10000 in UTC
        moment.astimezone(UTC) + timedelta(days=1) - timedelta(days=2)
    except OverflowError as exc:
        raise ConfigError(
            f"{what} {value!r} is out of range: use a date between 0001-01-02 and 9999-12-30 "
            "(in UTC)"
        ) from exc
    return moment
