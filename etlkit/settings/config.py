"""Settings and their layered resolution.

Precedence, lowest to highest: defaults < `etlkit.toml` < `ETLKIT_*` environment variables
< pipeline class attributes < CLI flags. `load_settings` tries each layer in turn, converts every
value to its field's type, records where each value came from (`Settings.sources`) and validates
ranges. It is the only place in etlkit that reads the environment, and it runs once, at the edge.

TOML sections are `[paths]`, `[run]`, `[duckdb]`, `[scheduler]` and `[dask]`; environment keys
nest with `__` (`ETLKIT_RUN__RETRIES=3`). Variables starting with `ETLKIT_CONN_`
and the `[connections]` table belong to `etlkit.settings.connections` and are skipped here.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from etlkit.errors import ConfigError


@dataclass(frozen=True)
class PathSettings:
    """Where etlkit keeps its files. Relative paths resolve against the project directory;
    fsspec URLs (`s3://...`) are kept as given. After `load_settings` every path is absolute."""

    state_dir: str = ".etlkit"
    staging_root: str = ""  # "" means <state_dir>/staging
    store: str = ""  # "" means <state_dir>/etlkit.sqlite
    pipelines_dir: str = "pipelines"
    logs_dir: str = ""  # "" means <state_dir>/logs


@dataclass(frozen=True)
class RunSettings:
    """How one run executes."""

    chunk_rows: int = 131_072
    chunk_bytes: int = 64 * 1024 * 1024  # a chunk is split when it exceeds this many bytes
    channel_depth: int = 4  # bounded queue depth per edge
    retries: int = 0
    retry_delay: float = 0.0  # seconds
    retry_exponential_backoff: bool = False  # double the delay on each further retry
    max_retry_delay: float | None = None  # cap on the delay, seconds
    timeout: float | None = None  # seconds; None means no timeout
    validate: bool = True  # validation of every edge on/off
    adopt_staged: bool = True  # a sink may adopt its input's staged file (a hard link or copy)
    on_invalid: str = "fail"  # default policy for invalid rows: fail, drop or quarantine
    max_invalid_fraction: float | None = None  # above it even drop/quarantine fail the run
    max_workers: int = 0  # nodes running at once, blocked ones not counted; 0: max(8, 2 x cores)
    cancel_grace: float = 10.0  # seconds a cancelled node may take to stop before it is abandoned
    executor: str = "local"  # what runs the nodes: local (threads here) or dask (see [dask])


@dataclass(frozen=True)
class SchedulerSettings:
    """The scheduler process: polling, heartbeats, global concurrency."""

    poll_seconds: float = 5.0  # how often due runs and sensors are checked
    heartbeat_seconds: float = 10.0  # how often a running run reports it is alive
    stale_after_seconds: float = 60.0  # a running run silent this long is presumed dead
    max_active_runs: int = 16  # runs at once, all pipelines together
    max_active_nodes: int = 0  # nodes running at once across all runs; 0 means no limit
    on_stale: str = "fail"  # what to do with a run whose process vanished: fail or retry
    # how a run's worker process starts: forked from a server that has imported the stack and
    # the pipelines (warm), a fresh interpreter (cold), or warm where the platform can fork (auto)
    worker_start: str = "auto"


@dataclass(frozen=True)
class DuckDBSettings:
    """Options passed to DuckDB connections."""

    memory_limit: str = "2GB"
    threads: int = 0  # 0 means the number of CPUs
    temp_directory: str = ""  # "" means <state_dir>/duckdb_tmp


@dataclass(frozen=True)
class DaskSettings:
    """The Dask cluster a run with `run.executor = "dask"` uses."""

    address: str | None = None  # a scheduler's address (tcp://host:8786); none: a LocalCluster
    workers: int = 2  # worker processes of the LocalCluster started without an address
    dashboard: bool = False  # the LocalCluster's dashboard on a free port
    no_workers_grace: float = 60.0  # seconds a run waits on a cluster with no worker, then fails


@dataclass(frozen=True)
class Settings:
    """The resolved settings, plus where each value came from.

    `sources` maps every dotted key (`run.retries`) to its origin: `default`,
    `etlkit.toml (/path/etlkit.toml)`, `env ETLKIT_RUN__RETRIES`, `pipeline MonthlyReport` or
    `cli --retries`.
    """

    paths: PathSettings
    run: RunSettings
    duckdb: DuckDBSettings
    scheduler: SchedulerSettings
    sources: Mapping[str, str]
    dask: DaskSettings = DaskSettings()

    def with_overrides(self, overrides: Mapping[str, object], label: str) -> Settings:
        """These settings with `overrides` (dotted keys, from `label`) applied, except where a
        CLI flag set the key: a pipeline class's attributes rank below the command line.

        Raises:
            ConfigError: an unknown key, or a value of the wrong type or out of range.
        """
        specs = _fields()
        values = {
            f"{section}.{f.name}": getattr(getattr(self, section), f.name)
            for section, cls in _SECTIONS.items()
            for f in dataclasses.fields(cls)
        }
        sources = dict(self.sources)
        for key, raw in overrides.items():
            if key not in specs:
                raise _unknown(f"setting '{key}'", f" from {label}", key, _same(specs))
            if sources.get(key, "").startswith("cli"):
                continue
            values[key] = _convert(key, raw, specs[key], label)
            sources[key] = label
        _check_values(values, sources)
        sections = {
            section: cls(
                **{k.partition(".")[2]: v for k, v in values.items() if k.startswith(section + ".")}
            )
            for section, cls in _SECTIONS.items()
        }
        return Settings(**sections, sources=types.MappingProxyType(sources))

    def explain(self) -> list[tuple[str, str, str]]:
        """Return `(dotted key, value as text, source)` for every setting, sorted by key."""
        rows = []
        for section in _SECTIONS:
            for f in dataclasses.fields(_SECTIONS[section]):
                key = f"{section}.{f.name}"
                value = getattr(getattr(self, section), f.name)
                rows.append((key, _as_text(value), self.sources.get(key, "default")))
        return sorted(rows)


_SECTIONS: Final[dict[str, type[Any]]] = {
    "paths": PathSettings,
    "run": RunSettings,
    "duckdb": DuckDBSettings,
    "scheduler": SchedulerSettings,
    "dask": DaskSettings,
}
# sections read by their own modules: connections, notifiers, pools
_SKIPPED_SECTIONS: Final = frozenset({"connections", "notifiers", "pools"})
_ENV_PREFIX: Final = "ETLKIT_"
_CONN_PREFIX: Final = "ETLKIT_CONN_"
# set by etlkit for the programs a Command node runs: not settings
_RUN_VARIABLES: Final = frozenset({"ETLKIT_DS", "ETLKIT_RUN_ID", "ETLKIT_PIPELINE"})
# read by `etlkit ui` itself: a secret, kept out of the settings (and of their explanation)
_UI_VARIABLES: Final = frozenset({"ETLKIT_UI_TOKEN"})
_BOOLS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_EXPECTED: Final[dict[type[Any], str]] = {
    bool: "a boolean (true/false, yes/no, 1/0)",
    int: "an integer",
    float: "a number",
    str: "a string",
}
_MINIMUMS: Final[dict[str, tuple[str, float]]] = {
    "run.chunk_rows": (">=", 1),
    "run.chunk_bytes": (">=", 1024),
    "run.channel_depth": (">=", 1),
    "run.retries": (">=", 0),
    "run.retry_delay": (">=", 0),
    "run.timeout": (">", 0),
    "run.max_retry_delay": (">", 0),
    "run.max_workers": (">=", 0),
    "run.cancel_grace": (">", 0),
    "duckdb.threads": (">=", 0),
    "scheduler.poll_seconds": (">", 0),
    "scheduler.heartbeat_seconds": (">", 0),
    "scheduler.stale_after_seconds": (">", 0),
    "scheduler.max_active_runs": (">=", 1),
    "scheduler.max_active_nodes": (">=", 0),
    "dask.workers": (">=", 1),
    "dask.no_workers_grace": (">", 0),
}
_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "run.on_invalid": ("fail", "drop", "quarantine"),
    "scheduler.on_stale": ("fail", "retry"),
    "scheduler.worker_start": ("auto", "warm", "cold"),
    "run.executor": ("local", "dask"),
}
# CLI flags named otherwise than their key's last part (`cli --executor` is `run.executor`'s)
_CLI_FLAGS: Final[dict[str, str]] = {"dask.address": "--scheduler-address"}
# a Dask scheduler's address: a protocol and a place (tcp://10.0.0.5:8786), or host:port
_ADDRESS: Final = re.compile(r"[a-z][a-z0-9+.-]*://\S+|[^\s:/]+:\d+")
# dotted key -> file or directory name under state_dir used when the value is ""
_UNDER_STATE_DIR: Final[dict[str, str]] = {
    "paths.staging_root": "staging",
    "paths.store": "etlkit.sqlite",
    "paths.logs_dir": "logs",
    "duckdb.temp_directory": "duckdb_tmp",
}
_PATH_KEYS: Final = ("paths.state_dir", "paths.pipelines_dir", *_UNDER_STATE_DIR)


@dataclass(frozen=True)
class _Field:
    kind: type[Any]  # bool, int, float or str
    optional: bool
    default: object


@functools.cache
def _fields() -> Mapping[str, _Field]:
    """Every setting's type and default, by dotted key (read once: `get_type_hints` evaluates
    the annotations' strings anew each call, and every run resolves its settings)."""
    specs = {}
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            args = [a for a in typing.get_args(hints[f.name]) if a is not types.NoneType]
            kind = args[0] if args else hints[f.name]
            specs[f"{section}.{f.name}"] = _Field(kind, bool(args), f.default)
    return types.MappingProxyType(specs)


def load_settings(
    project_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    pipeline: Mapping[str, object] | None = None,
    pipeline_name: str = "",
    cli: Mapping[str, object] | None = None,
) -> Settings:
    """Resolve settings from every layer, lowest to highest precedence.

    Args:
        project_dir: Directory relative paths resolve against; holds `etlkit.toml` by default.
        env: Environment variables; `None` reads `os.environ`.
        config_file: TOML file to read; `None` reads `<project_dir>/etlkit.toml` if it exists.
        pipeline: The pipeline class's settings as dotted keys, e.g. `{"run.retries": 2}`.
        pipeline_name: The pipeline's class name, used in `Settings.sources`.
        cli: CLI flags the user gave, as dotted keys. Pass only flags that were given.

    Raises:
        ConfigError: An unknown key (with a did-you-mean), a value of the wrong type or out of
            range, or an unreadable config file. The message names the key and its source.
    """
    project = Path(project_dir).resolve()
    specs = _fields()
    values: dict[str, object] = {key: spec.default for key, spec in specs.items()}
    sources: dict[str, str] = dict.fromkeys(specs, "default")

    def put(key: str, raw: object, source: str) -> None:
        values[key] = _convert(key, raw, specs[key], source)
        sources[key] = source

    if config_file is None and (project / "etlkit.toml").is_file():
        config_file = project / "etlkit.toml"
    if config_file is not None:
        path = config_file.resolve()
        source = f"{path.name} ({path})"
        for key, raw in _read_toml(path, source, specs).items():
            put(key, raw, source)

    for key, raw, source in _env_layer(os.environ if env is None else env, specs):
        put(key, raw, source)

    for label, mapping in ((f"pipeline {pipeline_name}".strip(), pipeline), ("cli", cli)):
        for key, raw in (mapping or {}).items():
            if key not in specs:
                raise _unknown(f"setting '{key}'", f" from {label}", key, _same(specs))
            flag = _CLI_FLAGS.get(key) or "--" + key.rpartition(".")[2].replace("_", "-")
            put(key, raw, f"cli {flag}" if label == "cli" else label)

    _check_values(values, sources)
    _resolve_paths(values, project)

    def build(section: str) -> Any:
        prefix = section + "."
        kwargs = {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix)}
        return _SECTIONS[section](**kwargs)

    return Settings(
        paths=build("paths"),
        run=build("run"),
        duckdb=build("duckdb"),
        scheduler=build("scheduler"),
        dask=build("dask"),
        sources=types.MappingProxyType(sources),
    )


def _env_layer(
    environ: Mapping[str, str], specs: Mapping[str, _Field]
) -> Iterator[tuple[str, object, str]]:
    """`(key, raw value, source)` per `ETLKIT_<SECTION>__<KEY>` variable, in the environment's
    order; the variables of connections, runs and the UI are theirs to read."""
    env_names = {_env_name(key): key for key in specs}
    for name, raw in environ.items():
        upper = name.upper()
        if (
            not upper.startswith(_ENV_PREFIX)
            or upper.startswith(_CONN_PREFIX)
            or upper in _RUN_VARIABLES
            or upper in _UI_VARIABLES
        ):
            continue
        if upper not in env_names:
            where = " (settings are ETLKIT_<SECTION>__<KEY>, connections ETLKIT_CONN_<NAME>)"
            raise _unknown(f"environment variable {name}", where, upper, _same(env_names))
        yield env_names[upper], raw, f"env {name}"


def _resolve_paths(values: dict[str, object], project: Path) -> None:
    """Make every path setting absolute against `project`; an empty one under the state
    directory gets its default place there."""
    state_dir = _resolve_path(str(values["paths.state_dir"]), project)
    for key in _PATH_KEYS:
        text = str(values[key])
        if key in _UNDER_STATE_DIR and not text:
            values[key] = _join(state_dir, _UNDER_STATE_DIR[key])
        else:
            values[key] = _resolve_path(text, project)


def _check_values(values: Mapping[str, object], sources: Mapping[str, str]) -> None:
    """Ranges and choices, checked once on the final values."""
    for key, (op, bound) in _MINIMUMS.items():
        value = values[key]
        if isinstance(value, int | float) and not (value > bound if op == ">" else value >= bound):
            raise ConfigError(
                f"Setting {key} = {_as_text(value)} (from {sources[key]}) is out of range: "
                f"it must be {op} {bound}."
            )

    for key, choices in _CHOICES.items():
        if values[key] not in choices:
            raise ConfigError(
                f"Setting {key} = {_as_text(values[key])} (from {sources[key]}) must be one of "
                f"{', '.join(choices)}."
            )
    address = values["dask.address"]
    if isinstance(address, str) and address and not _ADDRESS.fullmatch(address):
        raise ConfigError(
            f"Setting dask.address = {address!r} (from {sources['dask.address']}) is not a Dask "
            "scheduler's address: give one like tcp://10.0.0.5:8786 (or host:8786), or leave it "
            "unset for a LocalCluster on this machine."
        )
    fraction = values["run.max_invalid_fraction"]
    if isinstance(fraction, float | int) and not 0 <= fraction <= 1:
        raise ConfigError(
            f"Setting run.max_invalid_fraction = {fraction} (from "
            f"{sources['run.max_invalid_fraction']}) must be between 0 and 1."
        )


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file (etlkit.toml); the other sections' readers use it too.

    Raises:
        ConfigError: the file is missing, unreadable or not valid TOML (the message names it).
    """
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"Config file {path} not found.") from exc
    except OSError as exc:
        raise ConfigError(f"Config file {path} could not be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from exc


def _read_toml(path: Path, source: str, specs: Mapping[str, _Field]) -> dict[str, object]:
    data = read_toml(path)
    found: dict[str, object] = {}
    where = f" in {source}"
    for section, table in data.items():
        if section in _SKIPPED_SECTIONS:
            continue
        if section not in _SECTIONS:
            bare = {key.rpartition(".")[2]: key for key in specs}
            if section in bare:  # e.g. `retries = 1` above any [section]
                raise _unknown(f"top-level key '{section}'", where, section, bare)
            names = {name: f"[{name}]" for name in [*_SECTIONS, *_SKIPPED_SECTIONS]}
            raise _unknown(f"section [{section}]", where, section, names)
        if not isinstance(table, dict):
            raise ConfigError(f"'{section}'{where} must be a table ([{section}]).")
        for name, raw in table.items():
            key = f"{section}.{name}"
            if key not in specs:
                raise _unknown(f"setting '{name}' in [{section}]", where, key, _same(specs))
            found[key] = raw
    return found


def _unknown(what: str, where: str, given: str, known: Mapping[str, str]) -> ConfigError:
    """An unknown-key error; `known` maps each valid spelling to what to suggest for it."""
    matches = difflib.get_close_matches(given, list(known), n=1)
    if matches:
        hint = f"Did you mean '{known[matches[0]]}'?"
    else:
        hint = "Known: " + ", ".join(sorted(known.values())) + "."
    return ConfigError(f"Unknown {what}{where}. {hint}")


def _same(keys: Iterable[str]) -> dict[str, str]:
    return {key: key for key in keys}


def _env_name(key: str) -> str:
    return _ENV_PREFIX + key.replace(".", "__").upper()


def _convert(key: str, raw: object, spec: _Field, source: str) -> object:
    if spec.optional and isinstance(raw, str) and raw.strip().lower() in ("", "none"):
        return None
    if isinstance(raw, str) and spec.kind is not str:
        text = raw.strip().lower()
        if spec.kind is bool and text in _BOOLS:
            return _BOOLS[text]
        try:
            if spec.kind is int:
                return int(text)
            if spec.kind is float:
                return float(text)
        except ValueError:
            pass
    elif raw is None and spec.optional:
        return None
    elif isinstance(raw, bool):
        if spec.kind is bool:
            return raw
    elif isinstance(raw, int) and spec.kind in (int, float):
        return spec.kind(raw)
    elif isinstance(raw, float | str) and isinstance(raw, spec.kind):
        return raw
    expected = _EXPECTED[spec.kind] + (" or none" if spec.optional else "")
    raise ConfigError(f"Invalid value {raw!r} for {key} (from {source}): expected {expected}.")


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def _resolve_path(path: str, project: Path) -> str:
    return path if "://" in path else os.path.normpath(project / path)  # keep fsspec URLs


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if "://" in base else str(Path(base) / name)
