"""The connection model: `Connection`, what a named connection holds and how drivers use it.

A connection's URI (real and masked), its secrets, its pool slots and the fsspec storage options
(s3, http(s), file) derive from its fields here. Loading (`loading`), the active connections
(`resolution`), masking and probes build on this module.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from etlkit.errors import ConfigError
from etlkit.settings.connections.secrets import MASK, SecretStr

#: Connections defined in the environment are variables with this prefix.
ENV_PREFIX: Final = "ETLKIT_CONN_"
#: Kinds whose `database` is a file path, made absolute against the project directory.
PATH_KINDS: Final = frozenset({"file", "duckdb", "sqlite"})
# extra keys whose values are secrets: masked in masked_uri, mask() and logs
_SECRET_EXTRA: Final = re.compile(r"secret|token|passw|credential|private|api_?key", re.IGNORECASE)
#: The URI a connection is written as, for messages.
URI_SHAPE: Final = "<kind>://[<login>[:<password>]@]<host>[:<port>][/<database>][?<key>=<value>]"


@dataclass(frozen=True)
class Connection:
    """A named connection: where a system is and how to log in, as a driver needs it.

    Attributes:
        name: lower-case name pipelines use (`hospital_db`).
        kind: the URI scheme: postgresql, s3, http, https, duckdb, file, ...
        host: host name (for s3: an optional bucket, used by `test_connection`).
        port: TCP port, if given.
        login: user name (for s3: the access key id).
        password: the secret (for s3: the secret access key).
        database: the URI's path without its first `/` (a database name, a bucket prefix, or a
            file path for file/duckdb/sqlite, made absolute against the project directory).
        extra: query-string parameters: `endpoint_url`, `region`, `pool_slots`, `sslmode`, ...
        source: where the definition came from, e.g. `env ETLKIT_CONN_HOSPITAL_DB`.
        problem: why the connection cannot be used yet (a `password_env` variable that is not
            set); `resolve` raises it as a `ConfigError`.

    Example:
        >>> lake = Connection("lake", "s3", login="AKIAEXAMPLE", password=SecretStr("s3cr3t"),
        ...                   extra={"endpoint_url": "http://127.0.0.1:9000"})
        >>> lake.masked_uri
        's3://AKIAEXAMPLE:***@?endpoint_url=http://127.0.0.1:9000'
    """

    name: str
    kind: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: SecretStr | None = None
    database: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)
    source: str = "code"
    problem: str | None = None

    def __repr__(self) -> str:  # the masked URI: extras may hold tokens too
        return (
            f"Connection(name={self.name!r}, kind={self.kind!r}, uri={self.masked_uri!r}, "
            f"source={self.source!r})"
        )

    @property
    def uri(self) -> str:
        """The connection as a URI, with the real (URL-encoded) password: for drivers only."""
        password = self.password.get_secret_value() if self.password is not None else None
        return self._build(None if password is None else quote(password, safe=""), mask=False)

    @property
    def masked_uri(self) -> str:
        """The connection as a URI with the password and secret extras replaced by `***`."""
        return self._build(None if self.password is None else MASK, mask=True)

    def _build(self, password: str | None, *, mask: bool) -> str:
        netloc = ""
        if self.login is not None or password is not None:
            netloc = quote(self.login or "", safe="")
            netloc += f":{password}@" if password is not None else "@"
        host = self.host or ""
        netloc += f"[{host}]" if ":" in host else host
        if self.port is not None:
            netloc += f":{self.port}"
        path = "/" + quote(self.database, safe="/") if self.database is not None else ""
        pairs = [
            f"{quote(key, safe='')}="
            + (MASK if mask and _SECRET_EXTRA.search(key) else quote(value, safe=":/"))
            for key, value in self.extra.items()
        ]
        query = "?" + "&".join(pairs) if pairs else ""
        return f"{self.kind}://{netloc}{path}{query}"

    def secrets(self) -> list[str]:
        """Every secret value of the connection: the password and secret-looking extras."""
        found = [self.password.get_secret_value()] if self.password else []
        found += [value for key, value in self.extra.items() if _SECRET_EXTRA.search(key)]
        return [value for value in found if value]

    @property
    def pool_slots(self) -> int | None:
        """The per-connection concurrency limit from extra `pool_slots`, if set."""
        raw = self.extra.get("pool_slots")
        return None if raw is None else check_pool_slots(raw, self.name, self.source)

    def storage_options(self) -> dict[str, Any]:
        """fsspec storage options for files reached through this connection.

        s3: `key`, `secret`, `token` (extra `session_token`), `endpoint_url`, `anon`, `profile`,
        `client_kwargs={"region_name": ...}` (extra `region`) and
        `config_kwargs={"s3": {"addressing_style": ...}}`, as s3fs takes them. http(s): an
        `Authorization` header carrying extra `token` or else the password: `Basic` with the
        login, `Bearer` without, extra `auth` (bearer, basic) choosing; extra `header` (say
        `X-Api-Key`) carries the bare token instead (as `connectors.http` does). file: none.

        Raises:
            ConfigError: the connection is of a kind files cannot be read through.
        """
        if self.kind == "s3":
            return self._s3_options()
        if self.kind in ("http", "https"):
            headers = self._http_headers()
            return {"headers": headers} if headers else {}
        if self.kind == "file":
            return {}
        raise ConfigError(
            f"Connection '{self.name}' ({self.source}) is a {self.kind} connection; files are "
            "read and written through s3, http(s) or file connections."
        )

    def _s3_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.login:
            options["key"] = self.login
        if self.password:
            options["secret"] = self.password.get_secret_value()
        token = self.extra.get("session_token") or self.extra.get("token")
        if token:
            options["token"] = token
        for key in ("endpoint_url", "profile"):
            if self.extra.get(key):
                options[key] = self.extra[key]
        if self.extra.get("anon", "").lower() in ("true", "1", "yes"):
            options["anon"] = True
        region = self.extra.get("region") or self.extra.get("region_name")
        if region:
            options["client_kwargs"] = {"region_name": region}
        if self.extra.get("addressing_style"):
            options["config_kwargs"] = {"s3": {"addressing_style": self.extra["addressing_style"]}}
        return options

    def _http_headers(self) -> dict[str, str]:
        """The credential header, chosen as `connectors.http` chooses it (extras `token`,
        `auth` and `header`): an API key in its own header (`X-Api-Key`) goes bare."""
        token = (
            self.extra.get("token") or (self.password.get_secret_value() if self.password else "")
        ).strip()
        if not token:
            return {}
        scheme = self.extra.get("auth", "").strip().lower() or None
        header = self.extra.get("header", "").strip() or "Authorization"
        if scheme is None and header.lower() != "authorization":
            return {header: token}
        if self.login and scheme != "bearer":
            pair = base64.b64encode(f"{self.login}:{token}".encode()).decode("ascii")
            return {header: f"Basic {pair}"}
        return {header: f"Bearer {token}"}


def check_pool_slots(raw: str, name: str, source: str) -> int:
    """`pool_slots` of connection `name` as a whole number >= 1, else a `ConfigError`."""
    try:
        slots = int(raw)
    except ValueError:
        slots = 0
    if slots < 1:
        raise ConfigError(
            f"Connection '{name}' ({source}): pool_slots {raw!r} must be a whole number >= 1."
        )
    return slots
