"""An S3 server for tests: moto's, in this process, on 127.0.0.1 (never 0.0.0.0).

    server = S3Server()
    endpoint = server.start()          # http://127.0.0.1:<free port>
    server.create_bucket("lake")
    server.reset()                     # POST /moto-api/reset: every bucket and object gone
    server.stop()

Credentials reach etlkit either as explicit storage options (`storage_options(endpoint)`, or a
connection built by `connection(endpoint)`) or as the standard AWS environment variables
(`aws_env(endpoint)`), which the fixtures set with monkeypatch. moto accepts any credentials.
Keep data to a few MB: moto holds objects in memory and moves about 20 MB/s.
"""

from __future__ import annotations

import os
import urllib.request
from typing import Any, Final

from moto.server import ThreadedMotoServer

from etlkit.settings.connections import Connection, SecretStr

KEY: Final = "testing"
SECRET: Final = "testing-secret/with+odd:chars@"  # exercises URL-encoding and masking
REGION: Final = "us-east-1"


class S3Server:
    """moto's S3 server on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> str:
        """Start the server; return its endpoint URL."""
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget every bucket and object."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def create_bucket(self, name: str) -> None:
        # no region_name in client_kwargs: with one, s3fs sends a LocationConstraint moto
        # rejects for us-east-1 (ENVIRONMENT.md)
        filesystem(self.endpoint).mkdir(name)


def filesystem(endpoint: str) -> Any:
    """An s3fs filesystem on the server with nothing listed in its cache.

    s3fs reuses instances with the same arguments (a new one costs ~0.4 s of botocore set-up),
    so this is usually the one the connectors use for the `lake` connection.
    """
    import s3fs

    fs = s3fs.S3FileSystem(**storage_options(endpoint))
    fs.invalidate_cache()
    return fs


def storage_options(endpoint: str) -> dict[str, Any]:
    """s3fs storage options for the server."""
    return {"key": KEY, "secret": SECRET, "endpoint_url": endpoint}


def aws_env(endpoint: str) -> dict[str, str]:
    """The standard AWS variables pointing s3fs, botocore and polars at the server.

    `AWS_ENDPOINT_URL` is honoured by botocore (so s3fs) and by polars; `AWS_ALLOW_HTTP` lets
    polars talk plain http; the config files are /dev/null so nothing under ~/.aws is read.
    """
    return {
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


#: AWS variables the fixtures remove, so the developer's own settings never leak in.
AWS_UNSET: Final = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL_S3",
)


def connection(endpoint: str, name: str = "lake") -> Connection:
    """An s3 connection to the server, as `load_connections` would build it."""
    return Connection(
        name=name,
        kind="s3",
        login=KEY,
        password=SecretStr(SECRET),
        extra={"endpoint_url": endpoint},
        source="tests/s3_server.py",
    )
