"""What crosses to a Dask worker: a run described as JSON, and how a worker rebuilds it.

Workers never receive user objects or data. A `WorkSpec` names the pipeline class by import
path (or, for a pipeline loaded from a file of a pipelines folder, by that file), and carries
the run's `Context`, its `RunOptions`, the staging root and what the coordinator decided
about the plan (`Layout` fields), all as JSON. A worker imports the class, builds its graph
and plan exactly as the coordinator did, and runs the steps of the nodes it is given.
`pipeline_ref` finds the class behind a graph; `load_definition` imports it on a worker,
failing with an error that names the class and how to make it importable there.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from etlkit.engine.plan import RunOptions
from etlkit.errors import EtlkitError, PipelineNotFoundError
from etlkit.model.context import Context
from etlkit.model.pipeline import PipelineDefinition

if TYPE_CHECKING:
    from etlkit.engine.plan import Plan
    from etlkit.model.graph import Graph
    from etlkit.storage.staging import Staging

#: The module name prefix `model.discovery` gives a pipeline file it imports by path.
_FILE_MODULE: Final = "etlkit_pipeline_"
#: How to make a pipeline importable on the workers (every such error says it).
IMPORT_HINT: Final = (
    "make it importable on every Dask worker: the executor puts its folder on the path of "
    "workers on this machine and uploads its code (the file's folder, or the module's top "
    "package) to workers elsewhere; code it does not ship (another package it imports) "
    "must be installed on the workers"
)


@dataclass(frozen=True)
class PipelineRef:
    """Where a pipeline class lives: its module and qualified name, the module's file, the
    folder to put on `sys.path` so the module (and what it imports beside it) imports, and the
    file's content hash (a worker imports the class again when the file was edited)."""

    module: str
    qualname: str
    file: str
    folder: str
    digest: str = ""

    @property
    def label(self) -> str:
        return f"{self.module}.{self.qualname}" if not self.from_file else self.qualname

    @property
    def from_file(self) -> bool:
        """Whether discovery imported the class from a file (its module is not importable
        by name: the worker imports the file)."""
        return self.module.startswith(_FILE_MODULE)


def pipeline_ref(graph: Graph) -> PipelineRef:
    """The pipeline class whose graph `graph` is (the class keeps the graph it built).

    Raises:
        EtlkitError: no `ek.Pipeline` class built this graph (a graph made by hand), or it
            is defined where no worker can import it (inside a function).
    """
    found = _definition_of(graph, PipelineDefinition)
    if found is None:
        raise EtlkitError(
            f"Pipeline '{graph.pipeline}': the Dask executor runs pipelines defined as "
            "ek.Pipeline classes (workers import the class and build its graph again); this "
            "graph was built by no such class. Use the local executor for it."
        )
    if "<locals>" in found.__qualname__:
        raise EtlkitError(
            f"Pipeline class {found.__qualname__} is defined inside a function; workers "
            f"cannot import it. Define it at the top level of a module, and {IMPORT_HINT}."
        )
    module = sys.modules[found.__module__]
    file = str(Path(module.__file__ or "").resolve()) if getattr(module, "__file__", None) else ""
    if found.__module__.startswith(_FILE_MODULE) or not file:
        folder = str(Path(file).parent) if file else ""
    else:  # the folder the top package of the module is in
        depth = found.__module__.count(".") + (1 if file.endswith("__init__.py") else 0)
        folder = str(Path(file).parents[depth])
    return PipelineRef(found.__module__, found.__qualname__, file, folder, _digest(file))


def _digest(file: str) -> str:
    """The content hash of a pipeline's file ("" when it has none to read)."""
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16] if file else ""
    except OSError:
        return ""


def _definition_of(graph: Graph, base: type[PipelineDefinition]) -> type[PipelineDefinition] | None:
    stack = list(base.__subclasses__())
    seen: set[type[PipelineDefinition]] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls.__dict__.get("_graph") is graph:
            return cls
        stack.extend(cls.__subclasses__())
    return None


def load_definition(
    ref: PipelineRef, where: str, *, again: bool = False
) -> type[PipelineDefinition]:
    """Import the pipeline class on this worker (`where`: its address, for the error);
    `again`: its module was imported here from another version of the file, reload it.

    Raises:
        PipelineNotFoundError: the class cannot be imported here; the message names the
            class, the worker and the fix.
    """
    from etlkit.model.discovery import load_pipeline

    try:
        if ref.from_file:
            path = _pipeline_file(ref)
            return load_pipeline(f"{path}:{ref.qualname}", path.parent)
        if ref.folder and ref.folder not in sys.path and Path(ref.folder).is_dir():
            sys.path.append(ref.folder)  # the plugin's work, unless it did not run yet
        found: Any = importlib.import_module(ref.module)
        if again:
            found = importlib.reload(found)
        for part in ref.qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, OSError, EtlkitError) as exc:
        raise PipelineNotFoundError(
            f"Pipeline class {ref.label} cannot be imported on Dask worker {where}: "
            f"{type(exc).__name__}: {exc}. To fix it, {IMPORT_HINT}."
        ) from exc
    if not (isinstance(found, type) and issubclass(found, PipelineDefinition)):
        raise PipelineNotFoundError(
            f"{ref.label} on Dask worker {where} is not an ek.Pipeline class; the workers "
            f"import another version of its module than this process. To fix it, {IMPORT_HINT}."
        )
    return found


def _pipeline_file(ref: PipelineRef) -> Path:
    """The pipeline's file on this worker: where it is on the coordinator's machine, else
    in a folder on `sys.path` (an uploaded pipelines folder)."""
    path = Path(ref.file)
    if path.is_file():
        return path
    for entry in sys.path:
        candidate = Path(entry) / path.name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{path.name} is neither at {path} nor in a folder on sys.path")


@dataclass(frozen=True)
class WorkSpec:
    """A run as a worker needs it, all JSON: see the module docstring."""

    pipeline: PipelineRef
    context: Mapping[str, Any]
    options: Mapping[str, Any]
    staging_root: str  # its storage options cross sealed, with the secrets (`connections`)
    layout: Mapping[str, list[str]]  # adjusted plan fields, by name
    cancel_event: str  # the name of the distributed Event set when the run is cancelled

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkSpec:
        value = json.loads(text)
        value["pipeline"] = PipelineRef(**value["pipeline"])
        return cls(**value)


def work_spec(
    plan: Plan, ctx: Context, staging: Staging, layout: Mapping[str, list[str]], event: str
) -> WorkSpec:
    """The run described for the workers: a local staging root as an absolute path (their
    working directory is not this process's), an fsspec root as its URL (its options, which
    may hold credentials, cross apart: see `connections.seal`)."""
    return WorkSpec(
        pipeline=pipeline_ref(plan.graph),
        context=context_json(ctx),
        options=options_json(plan.options),
        staging_root=staging.root if staging.local else staging.root_url,
        layout=layout,
        cancel_event=event,
    )


def context_json(ctx: Context) -> dict[str, Any]:
    """The run's `Context` as JSON (its cancellation check stays behind)."""

    def moment(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "pipeline": ctx.pipeline,
        "run_id": ctx.run_id,
        "logical_date": ctx.logical_date.isoformat(),
        "params": dict(ctx.params),
        "chunk_rows": ctx.chunk_rows,
        "data_interval_start": moment(ctx.data_interval_start),
        "data_interval_end": moment(ctx.data_interval_end),
        "cursors": dict(ctx.cursors),
        "store_path": ctx.store_path,
    }


def context_from(value: Mapping[str, Any]) -> Context:
    """The `Context` `context_json` gave."""
    fields = dict(value)
    for key in ("logical_date", "data_interval_start", "data_interval_end"):
        if fields[key] is not None:
            fields[key] = datetime.fromisoformat(fields[key])
    return Context(**fields)


def options_json(options: RunOptions) -> dict[str, Any]:
    """The run's options as JSON. Pool slots stay with the coordinator: a worker runs the
    tasks Dask gives it, and the cluster's size bounds what runs at once."""
    value: dict[str, Any] = {}
    for field in dataclasses.fields(options):
        item = getattr(options, field.name)
        if field.name == "slots":
            continue
        if isinstance(item, frozenset):
            item = sorted(item)
        elif field.name == "cursor_seen":
            item = {k: sorted(v) for k, v in item.items()}
        elif field.name == "pools":
            item = dict(item)
        value[field.name] = item
    return value


def options_from(value: Mapping[str, Any]) -> RunOptions:
    """The `RunOptions` `options_json` gave."""
    fields = dict(value)
    fields["reuse"] = frozenset(fields["reuse"])
    fields["skip"] = frozenset(fields["skip"])
    fields["cursor_seen"] = {k: frozenset(v) for k, v in fields["cursor_seen"].items()}
    return RunOptions(**fields)


def plain_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Storage options that cross as JSON (credentials, endpoint, flags); others are left
    to the workers' own configuration (their environment, ~/.aws)."""
    kept: dict[str, Any] = {}
    for key, item in options.items():
        try:
            json.dumps(item)
        except (TypeError, ValueError):
            continue
        kept[key] = item
    return kept


def write_schema(schema: pa.Schema) -> str:
    """Columns as they cross: the Arrow IPC schema, base64."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def read_schema(text: str) -> pa.Schema:
    """The columns `write_schema` gave."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
