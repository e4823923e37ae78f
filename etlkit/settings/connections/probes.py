"""Probes behind `etlkit connections test NAME`: can the system a connection names be reached?

One probe per kind (postgresql, s3, http(s), a path, a TCP port); drivers load only when their
kind is tested, and every message is masked.
"""

from __future__ import annotations

import importlib
import socket
from pathlib import Path
from typing import Any, Final

from etlkit.errors import ConfigError
from etlkit.settings.connections.masking import mask
from etlkit.settings.connections.model import PATH_KINDS, Connection

_DEFAULT_PORTS: Final[dict[str, int]] = {"postgresql": 5432, "mysql": 3306, "redis": 6379}


# not a pytest test despite its name: it backs `etlkit connections test NAME`
def test_connection(
    conn: Connection,
    *,
    timeout: float = 5.0,  # noqa: PT028
) -> tuple[bool, str]:
    """Try to reach the connection; `(ok, message)`, the message free of secrets.

    postgresql: connect with ADBC or psycopg if installed, else open a TCP connection to
    host:port. s3: list the bucket (the host, with the database as prefix) or the buckets.
    http(s): a HEAD request (GET if HEAD is refused) to the URL. file/duckdb/sqlite: the path
    exists. Any other kind with a host: a TCP connection.
    """
    if conn.problem:
        return False, conn.problem
    try:
        if conn.kind == "postgresql":
            ok, message = _test_postgresql(conn, timeout)
        elif conn.kind == "s3":
            ok, message = _test_s3(conn, timeout)
        elif conn.kind in ("http", "https"):
            ok, message = _test_http(conn, timeout)
        elif conn.kind in PATH_KINDS:
            path = Path(conn.database or "")
            ok = bool(conn.database) and path.exists()
            message = f"{path} exists" if ok else f"{conn.database or '(no path)'} does not exist"
        elif conn.host:
            ok, message = _test_tcp(conn.host, conn.port or _DEFAULT_PORTS.get(conn.kind), timeout)
        else:
            ok, message = False, f"cannot test a {conn.kind} connection without a host"
    except ConfigError as exc:
        ok, message = False, str(exc)
    return ok, mask(message, [conn])


def _test_tcp(host: str, port: int | None, timeout: float) -> tuple[bool, str]:
    if port is None:
        return False, f"no port to connect to on {host}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"TCP connection to {host}:{port} opened"
    except OSError as exc:
        return False, f"cannot open a TCP connection to {host}:{port}: {exc}"


def _test_postgresql(conn: Connection, timeout: float) -> tuple[bool, str]:
    where = f"{conn.host or 'localhost'}:{conn.port or 5432}/{conn.database or ''}"
    # optional drivers, imported by name: mypy checks this module with or without them
    psycopg = _optional("psycopg")
    if psycopg is not None:
        try:
            with psycopg.connect(conn.uri, connect_timeout=max(1, round(timeout))):
                return True, f"connected to {where} with psycopg"
        except psycopg.Error as exc:
            return False, f"cannot connect to {where} with psycopg: {exc}"
    adbc = _optional("adbc_driver_postgresql.dbapi")
    if adbc is not None:
        manager = importlib.import_module("adbc_driver_manager")
        try:
            with adbc.connect(conn.uri):
                return True, f"connected to {where} with ADBC"
        except manager.Error as exc:
            return False, f"cannot connect to {where} with ADBC: {exc}"
    ok, message = _test_tcp(conn.host or "localhost", conn.port or 5432, timeout)
    return ok, message + " (no PostgreSQL driver installed: TCP only)"


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _test_s3(conn: Connection, timeout: float) -> tuple[bool, str]:
    import s3fs

    botocore = importlib.import_module("botocore.exceptions")

    options = conn.storage_options()
    options["config_kwargs"] = {
        **options.get("config_kwargs", {}),
        "connect_timeout": timeout,
        "read_timeout": timeout,
        "retries": {"max_attempts": 1},
    }
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    where = "/".join(p for p in (conn.host, conn.database) if p)
    endpoint = conn.extra.get("endpoint_url", "the default AWS endpoint")
    try:
        found = fs.ls(where or "", refresh=True)
    except (OSError, botocore.BotoCoreError, botocore.ClientError) as exc:
        return False, f"cannot list s3://{where} at {endpoint}: {exc}"
    what = f"s3://{where}" if where else "the buckets"
    return True, f"listed {what} at {endpoint}: {len(found)} entries"


def _test_http(conn: Connection, timeout: float) -> tuple[bool, str]:
    import ssl

    import httpx  # loads when an http connection is tested, not with every command

    url = Connection(
        conn.name, conn.kind, conn.host, conn.port, database=conn.database, extra={}
    ).uri
    url = url if conn.database is not None else url + "/"
    headers = conn.storage_options().get("headers", {})
    origin = httpx.URL(url)

    def scope(request: httpx.Request) -> None:
        # the credential header goes to the connection's origin only, not where it redirects
        there = request.url
        if (there.scheme, there.host, there.port) != (origin.scheme, origin.host, origin.port):
            for name in headers:
                request.headers.pop(name, None)

    with httpx.Client(
        headers=headers,
        timeout=timeout,
        follow_redirects=True,
        verify=ssl.create_default_context(),  # the system's store, as `connectors.http` uses
        event_hooks={"request": [scope]},
    ) as client:
        for method in ("HEAD", "GET"):
            try:
                with client.stream(method, url) as response:  # the status, not the body
                    status, reason = response.status_code, response.reason_phrase
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                return False, f"{method} {url} failed: {exc}"
            if method == "HEAD" and status in (405, 501):
                continue
            if status >= 400:
                return False, f"{method} {url}: HTTP {status} {reason}"
            return True, f"{method} {url}: HTTP {status}"
    return False, f"{url}: neither HEAD nor GET succeeded"
