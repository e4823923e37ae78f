"""A throwaway PostgreSQL server for tests, started from Debian's binaries.

    with PostgresServer.start() as server:
        server.dsn  # postgresql://etlkit:<password>@127.0.0.1:<port>/etlkit

`start` runs `initdb` into a fresh directory `/tmp/etlkit-pg-*` (owned by the `postgres` user
and run as it when we are root, since `initdb` and `postgres` refuse to run as root), starts the
server with `pg_ctl` on 127.0.0.1 and a free port with fsync off and the Unix socket in that same
short directory, waits (bounded) until `pg_isready` says it accepts TCP connections, then creates
a password-authenticated (scram-sha-256) user and database. Leaving the `with` block stops the
server (`pg_ctl stop -m fast`) and deletes the directory. A server whose test session was killed
before it could stop it is stopped and deleted by the next `start`.

The binaries are looked up under `/usr/lib/postgresql/<version>/bin` (Debian, not on PATH), then
on PATH; `find_bin_dir()` returns None when there are none (`apt-get install -y postgresql`).

This is a helper module, not a test module: it may poll with `time.sleep`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

INSTALL_HINT: Final = (
    "PostgreSQL's server binaries were not found under /usr/lib/postgresql/*/bin nor on PATH. "
    "Install them with: apt-get update && apt-get install -y postgresql"
)
USER: Final = "etlkit"
DATABASE: Final = "etlkit"
#: Server directories are /tmp/etlkit-pg-*, holding the starting process's id in `owner.pid`.
_PREFIX: Final = "etlkit-pg-"
_OWNER: Final = "owner.pid"
#: How long to wait for the server to accept connections.
READY_TIMEOUT_S: Final = 30.0


class PostgresServerError(RuntimeError):
    """The test server could not be set up; the message holds the server's log."""


@dataclass(frozen=True)
class PostgresServer:
    """A running server: where it listens and how to log in."""

    bin_dir: Path
    data_dir: Path
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def dsn(self) -> str:
        """`postgresql://user:password@host:port/database`."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def dsn_for(self, *, password: str | None = None, port: int | None = None) -> str:
        """The DSN with another password or port (for authentication and connection errors)."""
        return (
            f"postgresql://{self.user}:{self.password if password is None else password}"
            f"@{self.host}:{self.port if port is None else port}/{self.database}"
        )

    def psql(self, sql: str) -> str:
        """Run `sql` with psql as the test user; its output (tuples only, unaligned)."""
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
             "-d", self.dsn, "-c", sql],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise PostgresServerError(f"psql failed on {sql!r}: {result.stderr}")
        return result.stdout.strip()

    @classmethod
    @contextmanager
    def start(cls, bin_dir: Path | None = None) -> Iterator[PostgresServer]:
        """Create, start and (on exit) stop and delete a server in a fresh directory under /tmp.

        The directory is a short one of its own (the socket path is limited to ~100 bytes, and
        pytest's tmp dirs are private to root, where the `postgres` user cannot enter).

        Raises:
            PostgresServerError: the binaries are missing, initdb fails, or the server does
                not accept connections within READY_TIMEOUT_S (the message holds its log).
        """
        bin_dir = bin_dir or find_bin_dir()
        if bin_dir is None:
            raise PostgresServerError(INSTALL_HINT)
        as_user = _run_as()
        _reap_orphans(bin_dir, as_user)
        base = Path(tempfile.mkdtemp(prefix=_PREFIX, dir="/tmp"))
        try:
            (base / _OWNER).write_text(str(os.getpid()))
            if as_user:
                os.chown(base, pwd.getpwnam(as_user).pw_uid, -1)
            server = cls(
                bin_dir=bin_dir,
                data_dir=base / "data",
                host="127.0.0.1",
                port=_free_port(),
                user=USER,
                password=secrets.token_hex(12),
                database=DATABASE,
            )
            _check(
                [str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", "postgres",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                 "--locale=C", "--no-sync"],
                as_user,
                "initdb",
            )  # fmt: skip
            yield from _run_server(server, base, as_user)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def _run_server(
    server: PostgresServer, base: Path, as_user: str | None
) -> Iterator[PostgresServer]:
    """Start the initialised server, yield it once it is ready, stop it afterwards."""
    log = base / "server.log"
    pg_ctl = str(server.bin_dir / "pg_ctl")
    _check(
        [pg_ctl, "-D", str(server.data_dir), "-l", str(log), "-s", "-w",
         "-t", str(int(READY_TIMEOUT_S)), "start", "-o",
         f"-c listen_addresses={server.host} -p {server.port} -c fsync=off "
         f"-c synchronous_commit=off -c full_page_writes=off -k {base} -c max_connections=40"],
        as_user,
        "starting postgres",
        log,
    )  # fmt: skip
    try:
        _wait_ready(server, base, log)
        _superuser_sql(
            server,
            base,
            as_user,
            f"CREATE ROLE {USER} LOGIN PASSWORD '{server.password}'",
            f"CREATE DATABASE {DATABASE} OWNER {USER}",
        )
        yield server
    finally:
        subprocess.run(
            [*_prefix(as_user), pg_ctl, "-D", str(server.data_dir), "-s", "-m", "fast", "-w",
             "stop"],
            capture_output=True,
            check=False,
        )  # fmt: skip


def _reap_orphans(bin_dir: Path, as_user: str | None) -> None:
    """Stop and delete the servers of test sessions that died without stopping them.

    `pg_ctl` detaches the server, so a test run killed by a timeout leaves it running. Each
    server directory names the process that started it; one whose process is gone is reaped.
    """
    for base in Path("/tmp").glob(f"{_PREFIX}*"):
        try:
            owner = int((base / _OWNER).read_text())
        except (OSError, ValueError):
            continue  # being set up right now, or not ours
        if _alive(owner):
            continue
        subprocess.run(
            [*_prefix(as_user), str(bin_dir / "pg_ctl"), "-D", str(base / "data"), "-s",
             "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # "pid (name) state ...": a killed process stays a zombie until its parent reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def find_bin_dir() -> Path | None:
    """Debian's newest `/usr/lib/postgresql/<version>/bin`, else PATH's, else None."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _run_as() -> str | None:
    """`postgres` when running as root (initdb and postgres refuse root), else None."""
    if os.geteuid() != 0:
        return None
    with suppress(KeyError):
        pwd.getpwnam("postgres")
        return "postgres"
    raise PostgresServerError(
        "Running as root, but there is no 'postgres' user to run the server as; "
        "install PostgreSQL with: apt-get update && apt-get install -y postgresql"
    )


def _prefix(as_user: str | None) -> list[str]:
    return ["runuser", "-u", as_user, "--"] if as_user else []


def _check(command: list[str], as_user: str | None, what: str, log: Path | None = None) -> None:
    result = subprocess.run(
        [*_prefix(as_user), *command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        logged = log.read_text() if log is not None and log.is_file() else ""
        raise PostgresServerError(
            f"{what} failed ({result.returncode}): {result.stdout}{result.stderr}{logged}"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(server: PostgresServer, socket_dir: Path, log: Path) -> None:
    """Poll pg_isready until the server accepts TCP connections, at most READY_TIMEOUT_S."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    command = [
        str(server.bin_dir / "pg_isready"), "-q", "-h", server.host, "-p", str(server.port),
        "-t", "1",
    ]  # fmt: skip
    while True:
        if subprocess.run(command, capture_output=True, check=False).returncode == 0:
            return
        if time.monotonic() > deadline:
            logged = log.read_text() if log.is_file() else "(no log)"
            raise PostgresServerError(
                f"PostgreSQL on {server.host}:{server.port} did not accept connections within "
                f"{READY_TIMEOUT_S:.0f}s (socket dir {socket_dir}). Server log:\n{logged}"
            )
        time.sleep(0.05)


def _superuser_sql(
    server: PostgresServer, socket_dir: Path, as_user: str | None, *statements: str
) -> None:
    """Run statements as the `postgres` superuser over the Unix socket (trust auth)."""
    for statement in statements:
        _check(
            [str(server.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", str(socket_dir), "-p", str(server.port), "-U", "postgres",
             "-d", "postgres", "-c", statement],
            as_user,
            f"psql {statement.split(' PASSWORD')[0]!r}",
        )  # fmt: skip
