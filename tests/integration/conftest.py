"""Fixtures for end-to-end tests: an S3 server (moto, on 127.0.0.1) and named connections."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from etlkit.settings import connections
from tests.s3_server import AWS_UNSET, S3Server, aws_env, connection


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the session (it starts in well under a second)."""
    import s3fs

    quiet = logging.getLogger("werkzeug")  # moto's server logs every request
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    server = S3Server()
    server.start()
    yield server
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()
    quiet.setLevel(level)


@pytest.fixture
def s3_endpoint(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's endpoint, emptied, with the AWS variables pointing at it for this test.

    s3fs caches filesystem instances per arguments and thread. The endpoint and credentials
    are the same all session, so the instances are kept (a new one costs ~0.4 s of botocore
    set-up), but their directory listings are dropped: no test sees another's objects.
    """
    import s3fs

    s3_server.reset()
    for name in AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_env(s3_server.endpoint).items():
        monkeypatch.setenv(name, value)
    for fs in list(s3fs.S3FileSystem._cache.values()):  # fsspec's instance cache
        fs.invalidate_cache()
    return s3_server.endpoint


@pytest.fixture
def s3_bucket(s3_server: S3Server, s3_endpoint: str) -> str:
    """An empty bucket on the server; its name."""
    s3_server.create_bucket("etlkit-test")
    return "etlkit-test"


@pytest.fixture
def lake(s3_endpoint: str) -> Iterator[connections.Connection]:
    """The connection `lake` to the server, activated for this test (the previous restored)."""
    conn = connection(s3_endpoint)
    previous = connections.activate({conn.name: conn})
    yield conn
    connections.activate(previous)
