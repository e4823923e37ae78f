"""The Pipeline class declaration and the discovery of pipelines in a folder.

    class MonthlyReport(ek.Pipeline):
        billing = CsvSource("billing/{ds}/*.csv", schema=RawBilling)
        monthly = AddMonth(billing)
        report = ParquetSink("reports/{ds}/totals.parquet", monthly)

A pipeline's name is its class name in snake_case (`monthly_report`), its nodes are its class
attributes that are nodes, named after the attribute.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
import sys
import types
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etlkit.errors import (
    ConfigError,
    EtlkitError,
    PipelineDefinitionError,
    PipelineNotFoundError,
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
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ConfigError(
                f"Logical date {value!r} is not a date: use YYYY-MM-DD or an ISO datetime"
            ) from exc
    moment = moment if moment.utcoffset() is not None else moment.replace(tzinfo=zone)
    try:  # the store keeps UTC, and a day on either side must exist for the data interval
        moment.astimezone(UTC) + timedelta(days=1) - timedelta(days=2)
    except OverflowError as exc:
        raise ConfigError(
            f"Logical date {value!r} is out of range: use a date between 0001-01-02 and "
            "9999-12-30 (in UTC)"
        ) from exc
    return moment


def _module_name_for(path: Path) -> str:
    digest = zlib.crc32(str(path.resolve()).encode())
    return f"etlkit_pipeline_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"


@dataclass
class _Folder:
    """A pipelines folder made importable: its `sys.path` entry, whether etlkit added it, and
    the modules imported from it (`common` for `from common import Billing`)."""

    entry: str
    added: bool = False
    modules: dict[str, types.ModuleType] = field(default_factory=dict)


#: Every pipelines folder made importable in this process, by `sys.path` entry.
_FOLDERS: dict[str, _Folder] = {}
#: The entry of the folder importable now (one at a time, see `_importable`).
_CURRENT: list[str] = []


def _importable(folder: Path) -> None:
    """Make the modules beside the pipeline files importable (`from common import Billing`),
    as Airflow does with its dags folder: the folder goes at the end of `sys.path` (the
    standard library and installed packages win over a file named like them) and stays
    there, for imports at run time too.

    One folder at a time: switching to another one takes the previous folder off `sys.path`
    and its modules out of `sys.modules` (the pipelines already imported keep theirs), so two
    folders' `common.py` never mix in one process; switching back restores them.
    """
    entry = str(folder.resolve())
    if _CURRENT and _CURRENT[0] == entry:
        return
    if _CURRENT:
        _leave(_FOLDERS[_CURRENT[0]])
    now = _FOLDERS.setdefault(entry, _Folder(entry))
    now.added = entry not in sys.path
    if now.added:
        sys.path.append(entry)
    for name, module in now.modules.items():
        sys.modules.setdefault(name, module)
    _CURRENT[:] = [entry]


def _leave(folder: _Folder) -> None:
    """Take `folder` off `sys.path`, and the modules imported from it out of `sys.modules`."""
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if not origin or not origin.startswith(folder.entry + "/"):
            continue
        top = Path(origin).relative_to(folder.entry).parts[0].removesuffix(".py")
        if top == name.split(".")[0]:  # imported through the folder's entry, not as a package
            folder.modules[name] = module
            del sys.modules[name]
    if folder.added and folder.entry in sys.path:
        sys.path.remove(folder.entry)


def _import_file(path: Path) -> types.ModuleType:
    module_name = _module_name_for(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineNotFoundError(f"Cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    _importable(path.parent)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except PipelineDefinitionError as exc:  # raised by a node constructor: name the file
        sys.modules.pop(module_name, None)
        raise PipelineDefinitionError(
            path.stem, [f"importing {path} failed: {problem}" for problem in exc.problems]
        ) from exc
    except EtlkitError:
        sys.modules.pop(module_name, None)
        raise
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise _import_failed(path.stem, str(path), exc) from exc
    return module


def _import_failed(name: str, what: str, exc: Exception) -> PipelineDefinitionError:
    """The error for a pipeline module whose own code failed while it was imported."""
    return PipelineDefinitionError(
        name.rsplit(".", 1)[-1], [f"importing {what} failed: {type(exc).__name__}: {exc}"]
    )


def pipelines_in(module: types.ModuleType) -> list[type[PipelineDefinition]]:
    """The Pipeline subclasses defined (not merely imported) in `module`."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, PipelineDefinition)
        and value is not PipelineDefinition
        and value.__module__ == module.__name__
    ]


def _pick(
    found: list[type[PipelineDefinition]], where: str, wanted: str | None
) -> type[PipelineDefinition]:
    if wanted:
        for cls in found:
            if wanted in (cls.name, cls.__name__):
                return cls
        names = [cls.__name__ for cls in found]
        raise PipelineNotFoundError(
            f"No pipeline '{wanted}' in {where}; it defines {quoted(names)}."
        )
    if len(found) == 1:
        return found[0]
    if not found:
        raise PipelineNotFoundError(f"{where} defines no ek.Pipeline subclass.")
    # the module's own name: `pipelines/billing.py` and `pkg.billing` both give `billing`
    stem = where.rsplit("/", 1)[-1].removesuffix(".py").rsplit(".", 1)[-1]
    for cls in found:
        if cls.name == stem:
            return cls
    names = [cls.__name__ for cls in found]
    raise PipelineNotFoundError(
        f"{where} defines several pipelines {quoted(names)}; name one as '{where}:ClassName'."
    )


@dataclass(frozen=True)
class Discovered:
    """A pipeline file found in the pipelines folder: its pipelines, or why it failed to load."""

    path: Path
    pipelines: tuple[type[PipelineDefinition], ...]
    error: EtlkitError | None


def discover(pipelines_dir: Path) -> list[Discovered]:
    """Import every `*.py` in `pipelines_dir` (not `_`-prefixed); a failing file is reported."""
    results = []
    for path in sorted(pipelines_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            module = _import_file(path)
            results.append(Discovered(path, tuple(pipelines_in(module)), None))
        except EtlkitError as exc:
            results.append(Discovered(path, (), exc))
    return results


def load_pipeline(ref: str, pipelines_dir: Path) -> type[PipelineDefinition]:
    """Find a pipeline by file path (`pipelines/x.py[:Class]`), module path or name.

    Raises:
        PipelineNotFoundError: nothing matches; the message lists what exists.
        PipelineDefinitionError: the file or module failed to import (its own code raised).
    """
    target, _, wanted = ref.partition(":")
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise PipelineNotFoundError(f"Pipeline file {target} does not exist.")
        return _pick(pipelines_in(_import_file(path)), target, wanted or None)
    candidate = pipelines_dir / f"{target}.py"
    if candidate.is_file():  # a file stem: pick as for a file path
        return _pick(pipelines_in(_import_file(candidate)), str(candidate), wanted or None)
    if "." in target:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name is None or not f"{target}.".startswith(f"{exc.name}."):
                raise _import_failed(target, f"module {target}", exc) from exc  # not the target
            raise PipelineNotFoundError(f"Cannot import module '{target}': {exc}") from exc
        except EtlkitError:
            raise
        except Exception as exc:
            raise _import_failed(target, f"module {target}", exc) from exc
        return _pick(pipelines_in(module), target, wanted or None)
    known: dict[str, type[PipelineDefinition]] = {}
    broken: list[str] = []
    for found in discover(pipelines_dir) if pipelines_dir.is_dir() else []:
        if found.error is not None:
            broken.append(found.path.name)
        for cls in found.pipelines:
            known[cls.name] = cls
            known[cls.__name__] = cls
    if target in known:
        return known[target]
    close = difflib.get_close_matches(target, list(known), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    failed = (
        f" Files that failed to import (see `etlkit list`): {quoted(broken)}." if broken else ""
    )
    raise PipelineNotFoundError(
        f"No pipeline named '{target}' in {pipelines_dir}/ "
        f"(found: {quoted(sorted({c.name for c in known.values()}))}).{hint}{failed}"
    )
