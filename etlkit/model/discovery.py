"""The discovery of pipelines: importing pipeline files and modules, and finding one by name.

`discover` imports every file of a pipelines folder (reporting the files that fail),
`load_pipeline` finds one pipeline by file path, module path or name. A pipelines folder is made
importable while its files are (`from common import Billing`), one folder at a time.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
import sys
import types
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from etlkit.errors import EtlkitError, PipelineDefinitionError, PipelineNotFoundError, quoted
from etlkit.model.pipeline import PipelineDefinition


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
