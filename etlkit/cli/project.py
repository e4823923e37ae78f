"""What commands resolve from their arguments: the project directory, its settings, the pipelines
folder, a named pipeline, the run store, notifiers, pools, params and the run named on the line.

Each loads what it needs only when called, so `etlkit --help` imports no heavy library.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etlkit.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from etlkit.model.pipeline import PipelineDefinition
    from etlkit.settings.config import Settings
    from etlkit.storage.store import RunRecord, RunStore


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    """The `--param KEY=VALUE` pairs as a dict; a pair without `=` is a `ConfigError`."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {pair!r} is not key=value")
        params[key.strip()] = value
    return params


def project_dir(args: argparse.Namespace) -> Path:
    """The project directory (`--project`), absolute."""
    return Path(args.project).resolve()


def settings_for(
    args: argparse.Namespace,
    pipeline: type[PipelineDefinition] | None = None,
    cli: dict[str, object] | None = None,
) -> Settings:
    """The settings of the project, layered with a pipeline's and the given CLI flags."""
    from etlkit.settings.config import load_settings

    return load_settings(
        project_dir(args),
        config_file=Path(args.config) if args.config else None,
        pipeline=pipeline.settings_overrides() if pipeline else None,
        pipeline_name=pipeline.__name__ if pipeline else "",
        cli=cli,
    )


def executor_options(args: argparse.Namespace) -> dict[str, object]:
    """The settings `--executor` and `--scheduler-address` give, as dotted keys (none given:
    the settings' own)."""
    from etlkit.runs.executors import executor_flags

    return executor_flags(getattr(args, "executor", None), getattr(args, "scheduler_address", None))


def pipelines_dir(args: argparse.Namespace) -> Path:
    """The pipelines folder: `--pipelines`, else the setting `paths.pipelines_dir`."""
    if getattr(args, "pipelines", None):
        return Path(args.pipelines)
    return Path(settings_for(args).paths.pipelines_dir)


def load_named_pipeline(args: argparse.Namespace) -> type[PipelineDefinition]:
    """The pipeline class the command names (a file, module path or name)."""
    from etlkit.model.discovery import load_pipeline

    return load_pipeline(args.pipeline, pipelines_dir(args))


def freeze_imports(args: argparse.Namespace) -> None:
    """Once the command has loaded its pipelines (before a run starts, or when `list` and
    `validate` are done), move every object alive (what the command imported: the pipeline
    files, their libraries, etlkit) to the garbage collector's permanent generation, when
    the command is its own process (`args.owns_process`).

    They live until the process ends, yet every full collection scans them again, the one
    the interpreter makes at exit included: with polars and pandera loaded that scan costs
    more than the rest of a small run. Collections then scan only what the run creates. Not
    when `main` is called inside another program (a test), whose objects are not ours to pin.
    """
    if getattr(args, "owns_process", False):
        gc.freeze()


def notifiers_for(args: argparse.Namespace) -> dict[str, Any]:
    """The notifiers configured in the project's settings file, by name."""
    from etlkit.runs.notifications import load_notifiers

    config = Path(args.config) if args.config else None
    return dict(load_notifiers(project_dir(args), config_file=config))


def pools_for(args: argparse.Namespace) -> dict[str, int]:
    """The pool sizes configured in the project's settings file, by name."""
    from etlkit.settings.pools import load_pools

    return load_pools(project_dir(args), Path(args.config) if args.config else None)


def open_store(settings: Settings) -> RunStore:
    """The run store the settings name (a context manager closing it)."""
    from etlkit.storage.store import RunStore

    return RunStore(settings.paths.store)


def get_run(store: RunStore, run_id: str) -> RunRecord:
    """The run named on the command line: an id, a unique prefix, or `latest` (the newest)."""
    if run_id == "latest":
        newest = store.runs(limit=1)
        if not newest:
            raise StoreError(f"No runs yet in the run store at {store.path}: nothing is 'latest'.")
        return newest[0]
    return store.get_run(run_id)
