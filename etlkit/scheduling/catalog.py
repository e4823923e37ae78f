"""The pipelines the scheduler knows: its pipelines folder, reloaded when a file changes.

A file that fails to import is reported (ERROR, once per change) without stopping the others:
if it loaded before, its last good version stays scheduled; otherwise it is skipped. A pipeline
whose graph or schedule is invalid is reported and skipped the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from etlkit.errors import EtlkitError, PipelineDefinitionError
from etlkit.model.discovery import discover
from etlkit.model.pipeline import PipelineDefinition
from etlkit.scheduling.schedules import Schedule, pipeline_zone

logger = logging.getLogger(__name__)

_Fingerprint = dict[Path, tuple[int, int]]


@dataclass(frozen=True)
class Entry:
    """A loaded pipeline: its class, its schedule (None: triggered runs only), its file."""

    pipeline: type[PipelineDefinition]
    schedule: Schedule | None
    path: Path


class Catalog:
    """The pipelines of a folder by name; `refresh()` reloads them when the files changed."""

    def __init__(self, pipelines_dir: Path, *, log_problems: bool = True) -> None:
        self.pipelines_dir = Path(pipelines_dir)
        self.log_problems = log_problems
        self.entries: dict[str, Entry] = {}
        #: problems by file or pipeline name, as last reported
        self.errors: dict[str, str] = {}
        self._fingerprint: _Fingerprint | None = None
        self._good: dict[Path, tuple[type[PipelineDefinition], ...]] = {}

    def get(self, name: str) -> Entry | None:
        """The pipeline named `name`, or None."""
        return self.entries.get(name)

    def refresh(self) -> bool:
        """Reload the folder if a file was added, changed or removed; True if it reloaded."""
        fingerprint = self._scan()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        errors: dict[str, str] = {}
        loaded: dict[Path, tuple[type[PipelineDefinition], ...]] = {}
        for found in discover(self.pipelines_dir) if self.pipelines_dir.is_dir() else []:
            if found.error is None:
                loaded[found.path] = found.pipelines
                continue
            key = str(found.path)
            errors[key] = str(found.error)
            kept = self._good.get(found.path)
            if kept is not None:
                loaded[found.path] = kept
            if self.log_problems and self.errors.get(key) != errors[key]:
                what = "keeping its last good version" if kept else "skipping it"
                logger.error("pipeline file %s failed to import, %s: %s", key, what, found.error)
        self._good = loaded
        entries: dict[str, Entry] = {}
        for path, classes in sorted(loaded.items()):
            for cls in classes:
                entry = self._entry(cls, path, errors)
                if entry is None:
                    continue
                if cls.name in entries:
                    errors[cls.name] = (
                        f"pipeline '{cls.name}' is defined in both {entries[cls.name].path} and "
                        f"{path}; the scheduler uses the first"
                    )
                    if self.log_problems and self.errors.get(cls.name) != errors[cls.name]:
                        logger.error("%s", errors[cls.name])
                    continue
                entries[cls.name] = entry
        added = sorted(set(entries) - set(self.entries))
        removed = sorted(set(self.entries) - set(entries))
        log = logger.info if self.log_problems else logger.debug
        log(
            "pipelines in %s: %d loaded%s%s",
            self.pipelines_dir,
            len(entries),
            f", new: {', '.join(added)}" if added else "",
            f", gone: {', '.join(removed)}" if removed else "",
        )
        self.entries = entries
        self.errors = errors
        return True

    def _entry(
        self, cls: type[PipelineDefinition], path: Path, errors: dict[str, str]
    ) -> Entry | None:
        try:
            cls.graph()
            pipeline_zone(cls)
            schedule = Schedule.of(cls)
            if cls.max_active_runs < 1:
                raise PipelineDefinitionError(
                    cls.name, [f"max_active_runs is {cls.max_active_runs}; it must be >= 1"]
                )
        except EtlkitError as exc:  # an invalid graph or schedule, or a schema problem
            errors[cls.name] = str(exc)
            if self.log_problems and self.errors.get(cls.name) != errors[cls.name]:
                logger.error("pipeline %s in %s cannot be scheduled: %s", cls.name, path, exc)
            return None
        return Entry(cls, schedule, path)

    def _scan(self) -> _Fingerprint:
        if not self.pipelines_dir.is_dir():
            return {}
        found: _Fingerprint = {}
        for path in self.pipelines_dir.glob("*.py"):
            if path.name.startswith("_"):
                continue
            try:
                stat = path.stat()
            except OSError:  # removed while we looked
                continue
            found[path] = (stat.st_mtime_ns, stat.st_size)
        return found
