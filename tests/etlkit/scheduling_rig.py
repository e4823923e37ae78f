"""Test doubles for the scheduler: pipeline files, a fake worker launcher, a scheduler factory."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from etlkit.scheduling import FakeClock, Scheduler
from etlkit.settings.config import Settings, load_settings
from etlkit.storage.store import RunState, RunStore

T0 = datetime(2025, 3, 1, tzinfo=UTC)

PIPELINE = """\
import datetime
from pathlib import Path

import pyarrow as pa

import etlkit as ek
from etlkit.testing import MemorySource


class Flag(ek.Sensor):
    \"\"\"Passes once the file exists; counts its pokes; raises while `<path>.raise` exists.\"\"\"

    def __init__(self, path, **options):
        super().__init__(**options)
        self.path = path

    def poke(self, ctx):
        with open(self.path + ".pokes", "a") as fh:
            fh.write(ctx.ds + "\\n")
        if Path(self.path + ".raise").exists():
            raise RuntimeError("cannot look")
        return Path(self.path).exists()

    def describe(self, ctx):
        return f"flag {{self.path}} for {{ctx.ds}}"


class {cls}(ek.Pipeline):
{attrs}
    numbers = MemorySource(pa.table({{"x": [1, 2, 3]}}))
"""


def write_pipeline(project: Path, module: str, *, extra: str = "", **attrs: object) -> Path:
    """Write `pipelines/<module>.py` defining one pipeline with these class attributes."""
    cls = "".join(part.title() for part in module.split("_"))
    lines = [f"    {name} = {value!r}" for name, value in attrs.items()]
    lines += [f"    {line}" for line in extra.splitlines() if line]
    path = project / "pipelines" / f"{module}.py"
    path.write_text(PIPELINE.format(cls=cls, attrs="\n".join(lines) or "    pass"))
    return path


@dataclass
class FakeWorker:
    """A launched worker that never runs: tests decide when and how it ends."""

    pid: int
    returncode: int | None = None
    polls: int = 0
    ends_after_polls: int | None = None

    def poll(self) -> int | None:
        self.polls += 1
        if self.ends_after_polls is not None and self.polls >= self.ends_after_polls:
            self.returncode = 0 if self.returncode is None else self.returncode
        return self.returncode

    def terminate(self) -> None:
        self.returncode = -signal.SIGTERM

    def kill(self) -> None:
        self.returncode = -signal.SIGKILL


@dataclass
class FakeLauncher:
    """Starts no process: marks the run started as a worker would and hands out a FakeWorker."""

    store: RunStore
    clock: FakeClock
    pid: int
    launched: list[str] = field(default_factory=list)
    workers: dict[str, FakeWorker] = field(default_factory=dict)
    ends_after_polls: int | None = None

    def __call__(self, run_id: str) -> FakeWorker:
        self.store.start_run(run_id, pid=self.pid, at=self.clock.now())
        worker = FakeWorker(self.pid, ends_after_polls=self.ends_after_polls)
        self.launched.append(run_id)
        self.workers[run_id] = worker
        return worker

    def finish(self, run_id: str, state: RunState = "success", returncode: int = 0) -> None:
        """The worker recorded its run's end and exited."""
        self.store.finish_run(run_id, state, at=self.clock.now())
        self.workers[run_id].returncode = returncode

    def crash(self, run_id: str, returncode: int) -> None:
        """The worker died without recording anything."""
        self.workers[run_id].returncode = returncode


def project_settings(project: Path, **scheduler: object) -> Settings:
    cli: dict[str, object] = {"paths.state_dir": str(project / "state")}
    cli.update({f"scheduler.{key}": value for key, value in scheduler.items()})
    return load_settings(project, env={}, cli=cli)


@dataclass
class Rig:
    """A scheduler with a fake clock and a fake launcher on a tmp project."""

    project: Path
    clock: FakeClock
    store: RunStore
    launcher: FakeLauncher
    scheduler: Scheduler

    @classmethod
    def build(
        cls,
        project: Path,
        clock: FakeClock,
        *,
        store: RunStore | None = None,
        pid: int,
        **scheduler: object,
    ) -> Rig:
        settings = project_settings(project, **scheduler)
        store = store or RunStore(settings.paths.store)
        launcher = FakeLauncher(store, clock, pid)
        made = Scheduler(store, settings, project_dir=project, clock=clock, launch=launcher)
        return cls(project, clock, store, launcher, made)
