"""Fixtures for connector tests: a real PostgreSQL server, and a fresh schema per test.

`postgres_server` starts one server for the session (see `tests/postgres_server.py`);
`postgres_dsn` gives each test a DSN whose `search_path` is a new, empty schema, dropped after
the test, so tests share the server but never each other's tables. `postgres_db` is an open
autocommit connection with that search_path, shared by the session (connecting costs ~0.1 s).

Without PostgreSQL's binaries (or the ADBC driver) the tests that use these fixtures are skipped
on a developer machine, and fail when `CI=true`: in CI every test runs, real servers included.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.postgres_server import INSTALL_HINT, PostgresServer, find_bin_dir

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection

_SCHEMAS = itertools.count(1)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, so PostgreSQL tests must run, but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 for the whole session, stopped at its end."""
    if find_bin_dir() is None:
        _unavailable(INSTALL_HINT)
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        _unavailable('the ADBC driver is missing: pip install -e ".[test]"')
    with PostgresServer.start() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_admin(postgres_server: PostgresServer) -> Iterator[Connection]:
    """One autocommit connection as the test user, for the whole session."""
    import adbc_driver_postgresql.dbapi

    con: Connection = adbc_driver_postgresql.dbapi.connect(postgres_server.dsn, autocommit=True)
    try:
        yield con
    finally:
        con.close()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer, postgres_admin: Connection) -> Iterator[str]:
    """A DSN (with password) whose search_path is a fresh schema of its own."""
    schema = f"test_{next(_SCHEMAS)}"
    with postgres_admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres_server.dsn}?options=-csearch_path%3D{schema}"
    finally:
        with postgres_admin.cursor() as cur:
            cur.execute("RESET search_path")
            cur.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def postgres_db(postgres_dsn: str, postgres_admin: Connection) -> Connection:
    """The session's connection, its search_path the test's schema (as `postgres_dsn`'s)."""
    schema = postgres_dsn.rsplit("%3D", 1)[1]
    with postgres_admin.cursor() as cur:
        cur.execute(f"SET search_path TO {schema}")
    return postgres_admin
