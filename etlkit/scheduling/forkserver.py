"""The fork server: a process that imports the stack and a project's pipelines once, then forks
one worker per run, so a run starts warm (`python -m etlkit.scheduling.forkserver --fd N`).

A process that forks must have no threads of its own running, or the child may inherit a lock a
thread held. The scheduler runs threads, so the forking is done here, in a process that imports
and runs nothing else (as `multiprocessing`'s forkserver with a preload, and as Airflow's
LocalExecutor forks its task runners from a parent that has parsed the DAGs): `WarmLauncher`
starts it cold; it imports the worker's modules, polars, pyarrow, pandera, DuckDB and every file
of the pipelines folder, freezes the garbage collector (the children share the imported pages
copy-on-write), says it is ready and waits. The only other threads in it are the libraries' idle
service threads started at import (jemalloc's purgers, OpenBLAS's workers, polars' spill
cleaner), which register fork handlers or hold nothing a child needs. A pipeline file that
starts a Python thread makes the server decline, and the launcher starts workers cold.

The protocol, over the control socket (a Unix socket pair with the launcher):
- server -> launcher, once: `ready <pid>`, or `cold <why>` (then it exits). The server is the
  child of the process the launcher started, which exits at once: it is nobody's child to wait
  for, and init reaps it.
- launcher -> server, per run: a JSON line `{"argv": [...], "cwd": DIR}` with four file
  descriptors attached: the worker's stdin, stdout and stderr, and the run's own socket.
- the child -> the run's socket: `pid N` once in its own session; the server -> the run's
  socket: `error <why>` when it cannot fork, `exit CODE` when the worker ended (CODE as
  `subprocess.Popen.returncode`: negative for the signal that killed it).

The child is what `python -m etlkit.runs.worker` would be: its own session (its process group is
its pid), the launcher's stdio, the project as working directory; it runs `worker.main` and exits
with its code. When the launcher goes away (the control socket closes) the server starts no more
runs and exits once its children have ended: they outlive it as workers outlive a killed scheduler.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final, NoReturn

#: What every worker imports, beyond etlkit's own modules: each costs a cold worker 0.1-0.9 s.
STACK: Final = (
    "polars",
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.dataset",
    "pyarrow.parquet",
    "duckdb",
    "pandera.polars",
)
#: The largest request line (a worker's arguments and working directory).
MAX_REQUEST: Final = 1 << 16


def preload(pipelines: Path | None) -> str | None:
    """Import what a worker imports; None when ready to fork, else why this process cannot."""
    try:
        importlib.import_module("etlkit.runs.worker")
        for name in STACK:
            with contextlib.suppress(ImportError):  # an optional part of the stack not installed
                importlib.import_module(name)
        if pipelines is not None and pipelines.is_dir():
            from etlkit.model.discovery import discover

            discover(pipelines)  # a failing file fails the run that loads it, as when cold
    except ImportError as exc:
        return f"cannot import the worker's modules: {exc}"
    if threading.active_count() > 1:
        names = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
        return f"importing the pipelines started threads ({', '.join(names)}): forking is unsafe"
    return None


class Server:
    """Forks a worker per request on the control socket, and reports each one's end."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.accepting = True
        #: the run socket of every worker still running, by pid
        self.runs: dict[int, socket.socket] = {}
        # SIGCHLD wakes `select` through this pipe: no polling, no reaping race
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, _wake)
        signal.set_wakeup_fd(self.wake_w)

    def serve(self) -> None:
        """Fork and reap until the launcher has gone and every child has ended."""
        while self.accepting or self.runs:
            watched = [self.control.fileno(), self.wake_r] if self.accepting else [self.wake_r]
            readable, _, _ = select.select(watched, [], [])
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
            self.reap()
            if self.accepting and self.control.fileno() in readable:
                self.accept()

    def reap(self) -> None:
        """Report the end of every child that ended."""
        while self.runs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.runs.pop(pid, None)
            if run is not None:
                _tell(run, f"exit {os.waitstatus_to_exitcode(status)}")
                run.close()

    def accept(self) -> None:
        """Read one request and fork its worker; the launcher gone: accept no more."""
        data, fds, _, _ = socket.recv_fds(self.control, MAX_REQUEST, 4)
        while data and not data.endswith(b"\n"):
            more = self.control.recv(MAX_REQUEST)
            if not more:
                break
            data += more
        if not data or len(fds) != 4:
            for fd in fds:
                os.close(fd)
            if not data:  # the launcher closed the socket: no more runs
                self.accepting = False
            return  # a malformed request's run socket closes: its launcher falls back to cold
        *stdio, run_fd = fds
        run = socket.socket(fileno=run_fd)
        try:
            request = json.loads(data)
            _flush_stdio()
            pid = os.fork()
        except (OSError, ValueError) as exc:
            _tell(run, f"error {exc}")
            run.close()
            pid = -1
        if pid == 0:
            self.become_worker(request, stdio, run)
        for fd in stdio:
            os.close(fd)
        if pid > 0:
            self.runs[pid] = run  # the child tells its pid itself, once in its own session

    def become_worker(
        self, request: dict[str, Any], stdio: list[int], run: socket.socket
    ) -> NoReturn:
        """In the forked child: be `python -m etlkit.runs.worker ARGV`, exit with its code."""
        code: int = 1
        try:
            os.setsid()
            _tell(run, f"pid {os.getpid()}")  # killable as a group from now on, as with Popen
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for sock in (self.control, run, *self.runs.values()):
                sock.close()  # a worker holding them would hide the server's end from the launcher
            os.close(self.wake_r)
            os.close(self.wake_w)
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            from etlkit.runs import worker

            argv = [str(arg) for arg in request["argv"]]
            sys.argv = [worker.__file__, *argv]
            code = worker.main(argv)
        except SystemExit as exc:  # argparse refusing the arguments, as a cold worker would
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # whatever it is, it must not return into the server's loop
            traceback.print_exc()
            code = 1
        finally:
            _flush_stdio()
            os._exit(code)


def _wake(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD's handler: the wakeup fd does the work (a Python handler is needed for it)."""


def _tell(run: socket.socket, line: str) -> None:
    with contextlib.suppress(OSError):  # the launcher is gone: nobody to tell
        run.sendall(f"{line}\n".encode())


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Preload, say ready (or why not), and serve; see the module doc."""
    parser = argparse.ArgumentParser(
        prog="python -m etlkit.scheduling.forkserver", description="Fork warm run workers."
    )
    parser.add_argument("--fd", type=int, required=True, help="the control socket's descriptor")
    parser.add_argument("--pipelines", help="the pipelines folder to import once")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.fd)
    if os.fork() > 0:  # the launcher reaps this parent now; nobody has to wait for the server
        os._exit(0)
    why = preload(Path(args.pipelines) if args.pipelines else None)
    if why is not None:
        _tell(control, f"cold {why}")
        return 0
    gc.freeze()  # the imported objects are never collected: their pages stay shared with children
    _tell(control, f"ready {os.getpid()}")
    Server(control).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
