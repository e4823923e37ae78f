"""`Command`: a task node that runs an external program, like a shell step of a scheduler.

    notify = Command(["python", "send_report.py", "{ds}"], after=[report], timeout=600)

Each argument is a template rendered with the run's context. The program's stdout and stderr go to
the run's log line by line (logger `etlkit.model.commands`, INFO, prefixed with the stream's name),
an exit code outside `ok_codes` fails the node with the end of its stderr, and a timeout kills the
program's whole process group (it runs in a session of its own). Which template fields an
argument may hold (shell-quoted in a script, refused in an interpreter's code) is decided in
`etlkit.model.command_lines`.

The environment is explicit: the child gets PATH, HOME and LANG, the command's `env`, and
`ETLKIT_DS`, `ETLKIT_RUN_ID` and `ETLKIT_PIPELINE`, not the rest of etlkit's environment (unless
`inherit_env=True`). A connection's password is passed only when asked for with `secrets`, and
its value is masked (`***`) in everything etlkit logs or raises, the program's output included.

Cancellation: when the run is cancelled (another node failed) the program's process group is
terminated: `ctx.cancelled()` is polled (every 0.1 s) while the program runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final
from urllib.parse import quote

from etlkit.errors import (
    CommandError as CommandError,
)
from etlkit.errors import (
    CommandTimeoutError as CommandTimeoutError,
)
from etlkit.errors import (
    ConfigError,
    PipelineDefinitionError,
    RunCancelledError,
)
from etlkit.model.command_lines import param_code_fields, quoted_fields, script_index
from etlkit.model.nodes import Context, Node, Task

logger = logging.getLogger(__name__)

#: Variables of etlkit's own environment that every command gets (unless inherit_env).
PASSED_ENV: Final = ("PATH", "HOME", "LANG")
#: Lines of stderr quoted in a CommandError.
STDERR_TAIL_LINES: Final = 20
#: Longer output lines are cut in the log.
MAX_LINE_CHARS: Final = 8192
_POLL_S: Final = 0.1  # how often the timeout and cancellation are checked
_KILL_GRACE_S: Final = 5.0  # between SIGTERM and SIGKILL
_ORPHAN_GRACE_S: Final = 2.0  # the program exited, a process it started still holds its output
_MASK: Final = "***"
_RUN_ENV: Final = ("ETLKIT_DS", "ETLKIT_RUN_ID", "ETLKIT_PIPELINE")


class Command(Task):
    """Runs an external program after its `after` nodes, failing the node if the program fails.

        notify = Command(["python", "send_report.py", "{ds}"], after=[report])
        export = Command(
            ["pg_dump", "--host", "db", "--file", "dumps/{ds}.sql", "hospital"],
            secrets={"PGPASSWORD": "hospital_db"},
            timeout=3600,
        )

    Args:
        args: the program and its arguments, each a template (`{ds}`, `{run_id}`, params;
            literal braces, as in `python -c` code, are written `{{` and `}}`); a string is
            split like a shell would (`shlex.split`), unless `shell` is set.
        after: nodes that must finish first.
        env: extra environment variables; values are templates.
        inherit_env: pass etlkit's whole environment, not only PATH, HOME and LANG.
        secrets: environment variable -> connection name; the connection's password is passed
            in that variable, and masked in logs and errors.
        cwd: the working directory (a template); None means etlkit's.
        timeout: seconds the program may run before its process group is killed.
        shell: run `args`, one string, with `/bin/sh -c`. Every template field's value is
            shell-quoted for you, whatever its form (`{ds}`, `{params[label]}`, `{x!r}`):
            write `echo {ds}`, not `echo '{ds}'` (a field inside quotes is refused). The same
            holds for the script of a shell in an args list (`["sh", "-c", "echo {ds}"]`).
            In an interpreter's code (`python -c`, `perl -e`, `ruby -e`, `node -e`) a param is
            refused, as its value would become code: pass it as an argument instead.
        ok_codes: exit codes that count as success.

    Raises (from `run`):
        CommandError: the program did not start or exited with a code outside `ok_codes`.
        CommandTimeoutError: the program ran longer than `timeout`.
        RunCancelledError: the run was cancelled while the program ran.
        ConfigError: a template names an unknown field, or a secret's connection has no password.
    """

    def __init__(
        self,
        args: Sequence[str] | str,
        *,
        after: Sequence[Node | str] = (),
        env: Mapping[str, str] | None = None,
        inherit_env: bool = False,
        secrets: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        shell: bool = False,
        ok_codes: Sequence[int] = (0,),
    ) -> None:
        super().__init__(after=after)
        problems = []
        if shell and not isinstance(args, str):
            problems.append("with shell=True, args is one command string")
        if isinstance(args, str):
            try:
                argv = [args] if shell else shlex.split(args)
            except ValueError as exc:
                argv = [args]
                problems.append(f"command {args!r} cannot be split into arguments: {exc}")
        else:
            argv = list(args)
        if not argv or not all(isinstance(arg, str) for arg in argv) or not argv[0].strip():
            problems.append(f"args must name a program and be strings, got {args!r}")
        self.env = dict(env or {})
        self.secrets = dict(secrets or {})
        for name in [*self.env, *self.secrets]:
            if not name or "=" in name or "\0" in name:
                problems.append(f"{name!r} is not a valid environment variable name")
        clash = sorted(set(self.env) & set(self.secrets))
        if clash:
            problems.append(f"{', '.join(clash)} set both in env and in secrets")
        if timeout is not None and timeout <= 0:
            problems.append(f"timeout must be > 0, not {timeout}")
        if not ok_codes:
            problems.append("ok_codes must name at least one exit code")
        script = script_index(argv, shell=shell) if not problems else None
        if script is not None:
            problems.extend(quoted_fields(argv[script]))
        elif not problems:
            problems.extend(param_code_fields(argv))
        if problems:
            raise PipelineDefinitionError(type(self).__name__, problems)
        self.args = argv
        self.inherit_env = inherit_env
        self.cwd = cwd
        self.timeout = timeout
        self.shell = shell
        self.ok_codes = tuple(ok_codes)

    def command_line(self, ctx: Context) -> list[str]:
        """The rendered arguments; a shell script's (see `shell`) with shell-quoted values.

        Raises:
            ConfigError: a template names a field the context does not have.
        """
        script = script_index(self.args, shell=self.shell)
        return [
            ctx.render(arg, quote=shlex.quote if i == script else None)
            for i, arg in enumerate(self.args)
        ]

    def run(self, ctx: Context) -> None:
        """Run the program to its end; see the class for what fails it."""
        secret_env = {name: _password(conn, name) for name, conn in self.secrets.items()}
        mask = _masker(secret_env.values())
        argv = self.command_line(ctx)
        failure = _Failure(mask(argv[0] if self.shell else shlex.join(argv)), ctx)
        cwd = ctx.render(self.cwd) if self.cwd is not None else None
        if cwd is not None and not Path(cwd).is_dir():
            raise failure(
                CommandError,
                f"Command `{failure.shown}` of {failure.where} cannot start: its cwd {cwd} is "
                "not a directory.",
                None,
            )
        env = self._environment(ctx, secret_env)
        given = sorted({*self.env, *_RUN_ENV, *secret_env})
        inherited = "etlkit's environment" if self.inherit_env else ", ".join(PASSED_ENV)
        logger.info("command: %s (env: %s + %s)", failure.shown, inherited, ", ".join(given))
        started = time.monotonic()
        proc = self._start(argv, cwd, env, mask, failure)
        outcome, tail = _follow(proc, mask, self.timeout, ctx.cancelled)
        secs = time.monotonic() - started
        logger.info(
            "command exited with code %d after %.1fs: %s", proc.returncode, secs, failure.shown
        )
        self._judge(outcome, proc.returncode, tail, failure)

    def _start(
        self,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str],
        mask: Callable[[str], str],
        failure: _Failure,
    ) -> subprocess.Popen[str]:
        """The started program, its output piped, in a session (process group) of its own."""
        try:
            return subprocess.Popen(
                argv[0] if self.shell else argv,
                shell=self.shell,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: a timeout kills all of it
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as exc:
            hint = ""
            if isinstance(exc, FileNotFoundError):
                hint = f" Is it installed and on the PATH given to it ({env.get('PATH', '')})?"
            raise failure(
                CommandError,
                f"Command `{failure.shown}` of {failure.where} could not start: "
                f"{mask(str(exc))}.{hint}",
                None,
            ) from exc

    def _judge(self, outcome: str, code: int, tail: list[str], failure: _Failure) -> None:
        """Raise unless the program exited by itself with one of the ok codes."""
        shown, where, run_id = failure.shown, failure.where, failure.ctx.run_id
        quoted = "".join(f"\n    {line}" for line in tail)
        stderr = f" Last {len(tail)} lines of stderr:{quoted}" if tail else " Its stderr was empty."
        logs = f" Its whole output is in the run's log (`etlkit logs {run_id}`)."
        if outcome == "cancelled":
            raise RunCancelledError(f"Command `{shown}` of {where} was terminated: run cancelled.")
        if outcome == "timeout":
            raise failure(
                CommandTimeoutError,
                f"Command `{shown}` of {where} timed out after {self.timeout:g} s; its process "
                f"group was killed.{stderr}{logs}",
                code,
                tail,
            )
        if code not in self.ok_codes:
            how = f"exited with code {code}"
            if code < 0:
                how = f"was killed by signal {_signal_name(-code)}"
            codes = ", ".join(map(str, self.ok_codes))
            message = f"Command `{shown}` of {where} {how} (ok: {codes}).{stderr}{logs}"
            raise failure(CommandError, message, code, tail)

    def _environment(self, ctx: Context, secret_env: Mapping[str, str]) -> dict[str, str]:
        if self.inherit_env:
            env = dict(os.environ)
        else:
            env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        env.update({name: ctx.render(value) for name, value in self.env.items()})
        env.update(zip(_RUN_ENV, (ctx.ds, ctx.run_id, ctx.pipeline), strict=True))
        env.update(secret_env)
        return env


@dataclass(frozen=True)
class _Failure:
    """Builds a command's errors with its context: the command line shown (masked) and where
    it ran."""

    shown: str
    ctx: Context

    @property
    def where(self) -> str:
        return f"node '{self.ctx.node}' in pipeline '{self.ctx.pipeline}' (run {self.ctx.run_id})"

    def __call__(
        self, kind: type[CommandError], message: str, code: int | None, tail: Sequence[str] = ()
    ) -> CommandError:
        return kind(
            message,
            command=self.shown,
            returncode=code,
            stderr_tail=tail,
            pipeline=self.ctx.pipeline,
            node=self.ctx.node,
            run_id=self.ctx.run_id,
        )


def _password(connection: str, variable: str) -> str:
    """The password of a named connection, for the environment variable `variable`."""
    from etlkit.settings.connections import resolve

    password = resolve(connection).password
    if password is None or not password.get_secret_value():
        raise ConfigError(
            f"Connection '{connection}' has no password to pass in {variable}: give it one "
            "(see `etlkit.settings.connections`) or drop it from the command's secrets."
        )
    return password.get_secret_value()


def _masker(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function replacing every secret (as is, or URL-quoted) in a text with `***`."""
    values = {variant for secret in secrets if secret for variant in (secret, quote(secret, ""))}
    ordered = sorted(values, key=len, reverse=True)  # a secret containing another goes first

    def mask(text: str) -> str:
        for value in ordered:
            text = text.replace(value, _MASK)
        return text

    return mask


def _follow(
    proc: subprocess.Popen[str],
    mask: Callable[[str], str],
    timeout: float | None,
    cancelled: Callable[[], bool],
) -> tuple[str, list[str]]:
    """Log the program's output from this (the node's) thread until it ends.

    Returns "exited", "timeout" or "cancelled", and the last lines of stderr (masked).
    """
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(stream, name, lines), daemon=True)
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))
        if stream is not None
    ]
    for reader in readers:
        reader.start()
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    open_streams = len(readers)
    deadline = None if timeout is None else time.monotonic() + timeout
    stopper = _Stopper(proc, deadline, cancelled)
    try:
        while open_streams or proc.poll() is None:
            try:
                stream, line = lines.get(timeout=_POLL_S)
            except queue.Empty:
                pass
            else:
                if line is None:
                    open_streams -= 1
                else:
                    line = mask(line)
                    if stream == "stderr":
                        tail.append(line)
                    logger.info("%s: %s", stream, _clip(line))
            if not stopper.poll(time.monotonic()):
                break
    finally:
        if proc.poll() is None:  # interrupted (KeyboardInterrupt): leave nothing behind
            _signal_group(proc, signal.SIGKILL)
        proc.wait()
        if not open_streams:
            for reader in readers:
                reader.join()
    outcome = stopper.outcome
    return ("exited" if outcome == "orphans" else outcome), list(tail)


@dataclass
class _Stopper:
    """When to stop a running command, decided at each poll: SIGTERM to its process group on a
    timeout, a cancellation, or processes it started holding its output open after it exited;
    SIGKILL a grace period later; and give up following output that still stays open.

    `outcome` is "exited", "timeout", "cancelled" or "orphans".
    """

    proc: subprocess.Popen[str]
    deadline: float | None
    cancelled: Callable[[], bool]
    outcome: str = "exited"
    exited_at: float | None = None
    terminated_at: float | None = None  # SIGTERM sent to the group
    killed_at: float | None = None  # SIGKILL sent to the group

    def poll(self, now: float) -> bool:
        """Send the signal due at `now`; False once the output is no longer worth following."""
        proc = self.proc
        if self.terminated_at is None:
            if self.deadline is not None and now >= self.deadline:
                self.outcome = "timeout"
            elif self.cancelled():
                self.outcome = "cancelled"
            elif proc.poll() is not None:
                self.exited_at = self.exited_at or now
                if now - self.exited_at >= _ORPHAN_GRACE_S:
                    logger.warning(
                        "command exited but processes it started still hold its output "
                        "open: terminating its process group"
                    )
                    self.outcome = "orphans"
            if self.outcome != "exited":
                _signal_group(proc, signal.SIGTERM)
                self.terminated_at = now
        elif self.killed_at is None:
            if now - self.terminated_at >= _KILL_GRACE_S:
                _signal_group(proc, signal.SIGKILL)
                self.killed_at = now
        elif now - self.killed_at >= _KILL_GRACE_S and proc.poll() is not None:
            logger.warning(
                "processes outside the command's process group (started with a session of "
                "their own) still hold its output open: no longer following it"
            )
            return False
        return True


def _pump(stream: IO[str], name: str, lines: queue.Queue[tuple[str, str | None]]) -> None:
    """Put each line of `stream` on `lines`, then `(name, None)` at its end."""
    try:
        for line in stream:
            lines.put((name, line.rstrip("\n")))
    finally:
        stream.close()
        lines.put((name, None))


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(proc.pid, sig)  # the group id is the leader's pid (start_new_session)


def _clip(line: str) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    return f"{line[:MAX_LINE_CHARS]}... ({len(line) - MAX_LINE_CHARS} more characters)"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
