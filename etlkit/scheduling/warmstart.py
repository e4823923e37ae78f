"""Warm worker start: launching each run's worker forked from a fork server that has imported
the stack and the pipelines once, instead of from a fresh interpreter (~1 s of imports per run).

`WarmLauncher` is the scheduler's and the backfill's launcher when `scheduler.worker_start` is
`warm` (or `auto`, on Linux). It starts `etlkit.scheduling.forkserver` on first use and starts it
again when a file of the pipelines folder changes (names, mtimes, sizes) or the environment does,
so a run never sees a stale module. A run still gets its own process (its own session, so its
process group is its pid), the launcher's stdout and stderr, and records its own pid and owner;
`WarmHandle` is the `Handle` the scheduler watches, fed with the child's exit code by the server.
When the server cannot be started or fails, the run starts cold (`SubprocessLauncher`), and after
`MAX_FAILURES` servers failed, every run does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from etlkit.scheduling.processes import Handle, Launcher, SubprocessLauncher
from etlkit.storage.store import owner_gone, owner_of

logger = logging.getLogger(__name__)

#: Fork servers that may fail (not start, decline, die) before runs start cold for good.
MAX_FAILURES: Final = 3
#: Seconds the server may take to import the stack and the pipelines.
READY_TIMEOUT: Final = 120.0
#: Seconds the server may take to answer a request with the child's pid.
FORK_TIMEOUT: Final = 30.0
#: The exit code reported for a worker whose server vanished before telling how it ended.
UNKNOWN_EXIT: Final = 255

WorkerStart = str  # "auto", "warm" or "cold" (`scheduler.worker_start`)


def warm_supported() -> bool:
    """Whether this platform forks safely and passes descriptors: Linux (macOS's system
    frameworks are not fork-safe, so `multiprocessing` spawns there too)."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


def launcher_for(
    worker_start: WorkerStart,
    project_dir: Path,
    *,
    pipelines_dir: Path,
    config_file: Path | None = None,
    log_level: str = "INFO",
    worker_flags: Sequence[str] = (),
) -> SubprocessLauncher | WarmLauncher:
    """The launcher `scheduler.worker_start` asks for: warm where supported, else cold; every
    worker gets `worker_flags` (the executor's, from the command line)."""
    cold = SubprocessLauncher(
        project_dir,
        config_file=config_file,
        pipelines_dir=pipelines_dir,
        log_level=log_level,
        worker_flags=worker_flags,
    )
    if worker_start == "cold":
        return cold
    if not warm_supported():
        if worker_start == "warm":
            logger.warning("worker_start = warm needs Linux; workers start cold")
        return cold
    return WarmLauncher(cold)


def close_launcher(launcher: Launcher) -> None:
    """Stop the fork server of a `WarmLauncher` (other launchers have nothing to stop)."""
    if isinstance(launcher, WarmLauncher):
        launcher.close()


class WarmHandle:
    """A worker forked by the server: signalled by pid, its end told by the server."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self._pid = pid
        self._channel = channel
        self._owner = owner_of(pid)  # to tell it ended, should the server vanish first
        self._buffer = b""
        self._orphaned = False  # the server vanished without telling how the worker ended
        self.returncode: int | None = None
        channel.setblocking(False)

    @property
    def pid(self) -> int:
        """The worker's process id (its process group's too)."""
        return self._pid

    @property
    def owner(self) -> str | None:
        """`host|pid|start` of the worker, read as it was forked (what its run records)."""
        return self._owner

    def watch(self) -> int | None:
        """A descriptor readable once the server tells the worker's end (None: poll instead)."""
        return None if self._orphaned or self.returncode is not None else self._channel.fileno()

    def poll(self) -> int | None:
        """The exit code once the worker ended (negative: killed by that signal), else None."""
        if self.returncode is not None:
            return self.returncode
        try:
            data = b"" if self._orphaned else self._channel.recv(4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        self._buffer += data
        for line in self._buffer.decode(errors="replace").splitlines():
            if line.startswith("exit "):
                return self._ended(int(line.split()[1]))
        if data:
            return None
        # the server vanished without telling: the worker runs on (orphaned) until it is gone
        self._orphaned = True
        if owner_gone(self._owner) is None:
            return None
        logger.warning("worker %d ended after its fork server vanished: exit unknown", self._pid)
        return self._ended(UNKNOWN_EXIT)

    def _ended(self, code: int) -> int:
        self.returncode = code
        self._channel.close()
        return code

    def terminate(self) -> None:
        """Ask the worker to stop (SIGTERM)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Stop the worker now (SIGKILL)."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.poll() is None:  # never signal a pid that may have been reused
            os.kill(self._pid, signum)


class ForkServerDeclinedError(OSError):
    """The fork server cannot fork safely (see `forkserver.preload`): start workers cold."""


class ForkServer:
    """One running fork server: started cold, ready once it has imported everything."""

    def __init__(
        self,
        python: str,
        project_dir: Path,
        pipelines_dir: Path,
        env: Mapping[str, str] | None,
    ) -> None:
        self.control, theirs = socket.socketpair()
        command = [python, "-m", "etlkit.scheduling.forkserver", "--fd", str(theirs.fileno())]
        command += ["--pipelines", str(pipelines_dir)]
        try:
            process = subprocess.Popen(
                command,
                cwd=project_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # Ctrl-C in the scheduler's terminal is not for it
            )
        except OSError:
            self.control.close()
            raise
        finally:
            theirs.close()
        try:
            process.wait(timeout=READY_TIMEOUT)  # it forks the server and exits (`forkserver`)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.wait()
            self.control.close()
            raise OSError("the fork server did not start") from exc
        self.control.settimeout(READY_TIMEOUT)
        answer = _read_line(self.control)
        if answer.startswith("ready "):
            self.pid = int(answer.split()[1])
        else:
            self.close()
            if answer.startswith("cold "):
                raise ForkServerDeclinedError(answer.removeprefix("cold "))
            raise OSError("the fork server exited before it was ready")

    def fork(self, argv: list[str], cwd: Path) -> WarmHandle:
        """Fork the worker `python -m etlkit.runs.worker ARGV`; OSError when that fails."""
        ours, theirs = socket.socketpair()
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            request = json.dumps({"argv": argv, "cwd": str(cwd)}) + "\n"
            socket.send_fds(self.control, [request.encode()], [devnull, 1, 2, theirs.fileno()])
        except OSError:
            ours.close()
            raise
        finally:
            os.close(devnull)
            theirs.close()
        ours.settimeout(FORK_TIMEOUT)
        try:
            answer = _read_line(ours)
        except OSError:
            ours.close()
            raise
        if not answer.startswith("pid "):
            ours.close()
            raise OSError(answer.removeprefix("error ") or "the fork server exited")
        return WarmHandle(int(answer.split()[1]), ours)

    def close(self) -> None:
        """Let it go: it forks no more, and exits once its running workers have ended."""
        self.control.close()


def _read_line(channel: socket.socket) -> str:
    """One line (without its end) from `channel`, read byte by byte: nothing after it is taken."""
    data = b""
    while not data.endswith(b"\n"):
        byte = channel.recv(1)
        if not byte:
            break
        data += byte
    return data.decode(errors="replace").strip()


class WarmLauncher:
    """Starts each run's worker forked from a fork server; see the module doc."""

    def __init__(self, cold: SubprocessLauncher) -> None:
        self.cold = cold
        self.pipelines_dir = Path(cold.pipelines_dir or cold.project_dir / "pipelines")
        if not self.pipelines_dir.is_absolute():
            self.pipelines_dir = cold.project_dir / self.pipelines_dir
        self.failures = 0
        self._server: ForkServer | None = None
        self._key: tuple[object, ...] = ()
        self._declined: tuple[object, ...] | None = None  # the key a server declined at

    def __call__(self, run_id: str) -> Handle:
        """Fork the run's worker from a server current with the pipelines, or start it cold."""
        argv = self.cold.command(run_id)[3:]  # after `python -m etlkit.runs.worker`
        while self.failures < MAX_FAILURES:
            try:
                return self._current().fork(argv, self.cold.project_dir)
            except ForkServerDeclinedError:
                break  # until the pipelines or the environment change
            except OSError as exc:
                self.failures += 1
                logger.warning("run %s: cannot start its worker warm (%s)", run_id, exc)
                self.close()
        return self.cold(run_id)

    def close(self) -> None:
        """Let the fork server go (it exits once its workers have ended)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def _current(self) -> ForkServer:
        env = self.cold.env if self.cold.env is not None else dict(os.environ)
        key = (_fingerprint(self.pipelines_dir), sorted(env.items()))
        if self._server is not None and key != self._key:
            logger.info("pipelines changed: restarting the fork server")
            self.close()
        if self._server is None:
            if key == self._declined:
                raise ForkServerDeclinedError("declined before")
            try:
                self._server = ForkServer(
                    self.cold.python, self.cold.project_dir, self.pipelines_dir, self.cold.env
                )
            except ForkServerDeclinedError as exc:
                logger.warning("workers start cold: %s", exc)
                self._declined = key
                raise
            self._key = key
        return self._server


def _fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Every Python file under `folder` with its mtime and size: a change means re-import."""
    found = []
    with contextlib.suppress(OSError):
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            with contextlib.suppress(OSError):
                stat = path.stat()
                found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(found))
