"""Named connections and their secrets.

Pipelines name the systems they talk to (`CsvSource(..., conn="lake")`,
`PostgresSource(conn="hospital_db", ...)`) and never hold credentials. A connection is defined
in `etlkit.toml`, in the environment, or both:

```toml
[connections.hospital_db]
uri = "postgresql://etl@db.internal:5432/hospital?pool_slots=4"
password_env = "HOSPITAL_DB_PASSWORD"    # `password = "..."` works too, with a warning

[connections.lake]                       # S3 or any S3-compatible store (MinIO, moto, ...)
kind = "s3"
login = "AKIAEXAMPLE"                    # the access key id; the secret key is the password
extra = { endpoint_url = "http://127.0.0.1:9000", region = "eu-west-1" }
```

```sh
ETLKIT_CONN_HOSPITAL_DB=postgresql://etl:p%40ss@db.internal:5432/hospital  # a whole URI
ETLKIT_CONN_LAKE__PASSWORD=wJalrXUtnFEMI/K7MDENG                            # one field
ETLKIT_CONN_LAKE__EXTRA__ENDPOINT_URL=http://127.0.0.1:9000                 # one extra key
```

The environment beats the file field by field (and `extra` key by key); within the environment
a field variable beats the URI variable. Fields are `kind` (the URI scheme: postgresql, s3,
http, https, duckdb, file, ...), `host`, `port`, `login`, `password`, `database` (the URI's
path) and `extra` (its query string). Names are case-insensitive, normalised to lower case, and
made of letters, digits and single underscores. A password inside a URI is URL-encoded (`@` as
`%40`, `:` as `%3A`, `/` as `%2F`); field variables take it as is.

Passwords are `SecretStr`: `repr`, `str` and f-strings show `***`. `mask` and the logging
filter of `install_log_masking` replace every known secret (raw and URL-encoded) with `***`.

`load_connections` runs once, at the edge (the CLI, the scheduler, each run's process), which
hands the result to `activate`; nodes then call `resolve(name)`. Importing this module reads
nothing and registers nothing.
"""

from __future__ import annotations

import base64
import difflib
import hmac
import importlib
import logging
import os
import re
import socket
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from etlkit.errors import ConfigError
from etlkit.errors import ConnectionNotFoundError as ConnectionNotFoundError
from etlkit.settings.config import read_toml

logger = logging.getLogger(__name__)

MASK: Final = "***"
_ENV_PREFIX: Final = "ETLKIT_CONN_"
_NAME: Final = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_KIND: Final = re.compile(r"[a-z][a-z0-9+.-]*")
_KIND_ALIASES: Final[dict[str, str]] = {"postgres": "postgresql", "s3a": "s3"}
_FIELDS: Final = ("kind", "host", "port", "login", "password", "database")
_TOML_KEYS: Final = (*_FIELDS, "uri", "password_env", "extra")
_PATH_KINDS: Final = frozenset({"file", "duckdb", "sqlite"})
# extra keys whose values are secrets: masked in masked_uri, mask() and logs
_SECRET_EXTRA: Final = re.compile(r"secret|token|passw|credential|private|api_?key", re.IGNORECASE)
_URI_SHAPE: Final = "<kind>://[<login>[:<password>]@]<host>[:<port>][/<database>][?<key>=<value>]"


class SecretStr:
    """A secret string: `repr`, `str` and formatting show `***`; `get_secret_value()` the text.

    Equality is by value. It pickles with its value (runs happen in child processes), so never
    pickle one anywhere a person could read it.

        >>> password = SecretStr("hunter2")
        >>> f"password={password}"
        'password=***'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The secret text itself; hand it to drivers only, never to logs."""
        return self._value

    def __repr__(self) -> str:
        return repr(MASK)

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return format(MASK, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretStr):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretStr, (self._value,))


def _not_found(name: str, known: Iterable[str], *, loaded: bool = True) -> ConnectionNotFoundError:
    """The error for a connection `name` that is not among `known` (or none are `loaded`)."""
    names = sorted(known)
    key = name.strip().upper()
    define = (
        f"Define it with {_ENV_PREFIX}{key}={_URI_SHAPE} (URL-encode the password) or a "
        f"[connections.{name.strip().lower()}] table in etlkit.toml."
    )
    if not loaded:
        message = (
            f"Connection '{name}' cannot be resolved: no connections are loaded in this "
            "process, or not in this thread (connections belong to the thread that activated "
            "them and to the runs it starts). The etlkit CLI and scheduler load them; in your "
            "own code call etlkit.settings.connections.activate("
            "etlkit.settings.connections.load_connections(Path('.'))) "
            f"first, in the thread that starts the run. {define}"
        )
    else:
        close = difflib.get_close_matches(name.strip().lower(), names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        listed = ", ".join(names) if names else "none"
        message = f"Connection '{name}' is not defined.{hint} Known: {listed}. {define}"
    return ConnectionNotFoundError(message, name=name, known=names)


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
        return None if raw is None else _pool_slots(raw, self.name, self.source)

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


# -- loading ---------------------------------------------------------------------------------


@dataclass
class _Draft:
    """A connection being assembled from layers; later `put`s win."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    password_env: tuple[str, str] | None = None  # (variable, where it was named)

    def put(self, values: Mapping[str, Any], extra: Mapping[str, str], source: str) -> None:
        self.values.update(values)
        self.extra.update(extra)
        if "password" in values:
            self.password_env = None
        if source not in self.sources:
            self.sources.append(source)


def load_connections(
    project_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> dict[str, Connection]:
    """Read every connection defined in `etlkit.toml` and the environment, by name.

    Args:
        project_dir: holds `etlkit.toml` by default; relative file/duckdb paths resolve here.
        env: environment variables; `None` reads `os.environ`.
        config_file: TOML file to read; `None` reads `<project_dir>/etlkit.toml` if it exists.

    A password written in the TOML file is accepted with a WARNING (secrets belong in the
    environment); `password_env = "VAR"` reads it from the environment instead. A missing
    `VAR` does not fail here: the connection's `problem` says so, and `resolve` raises it.

    Raises:
        ConfigError: an unknown field (with a did-you-mean), a malformed URI, port or
            pool_slots, a bad name, a connection without a kind, or an unreadable file. The
            message names the connection and where it was defined; it never shows a password.
    """
    project = Path(project_dir).resolve()
    environ = os.environ if env is None else env
    drafts: dict[str, _Draft] = {}

    def draft(name: str) -> _Draft:
        return drafts.setdefault(name, _Draft(name))

    if config_file is None and (project / "etlkit.toml").is_file():
        config_file = project / "etlkit.toml"
    if config_file is not None:
        path = config_file.resolve()
        source = f"{path.name} ({path})"
        for raw_name, spec in _read_table(path, source).items():
            name = _check_name(raw_name, f"[connections.{raw_name}] in {source}")
            _apply_toml(draft(name), spec, source)

    uris: list[tuple[str, str, str]] = []
    fields: list[tuple[str, str, str, str]] = []
    for var, value in sorted(environ.items()):
        upper = var.upper()
        if not upper.startswith(_ENV_PREFIX):
            continue
        head, sep, tail = upper[len(_ENV_PREFIX) :].partition("__")
        name = _check_name(head.lower(), f"environment variable {var}")
        if sep:
            fields.append((name, tail, value, var))
        else:
            uris.append((name, value, var))
    for name, value, var in uris:  # a URI sets the fields it has; the others stay
        parsed, extra = _parse_uri(value, f"Connection '{name}' (env {var})")
        given = {key: value for key, value in parsed.items() if value is not None}
        draft(name).put(given, extra, f"env {var}")
    for name, tail, value, var in fields:
        _apply_env_field(draft(name), tail, value, var)

    return {name: _finish(d, project, environ) for name, d in sorted(drafts.items())}


def _read_table(path: Path, source: str) -> dict[str, Any]:
    data = read_toml(path)
    table = data.get("connections", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"'connections' in {source} must be a table of connections "
            '([connections.<name>] with uri = "..." or kind/host/port/...).'
        )
    return table


def _check_name(name: str, where: str) -> str:
    normal = name.strip().lower()
    if not _NAME.fullmatch(normal):
        raise ConfigError(
            f"Connection name {name!r} ({where}) is not valid: use letters, digits and single "
            "underscores, starting with a letter (it must also work as ETLKIT_CONN_<NAME>)."
        )
    return normal


def _apply_toml(draft: _Draft, spec: object, source: str) -> None:
    where = f"Connection '{draft.name}' in {source}"
    if isinstance(spec, str):  # `hospital_db = "postgresql://..."` under [connections]
        spec = {"uri": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table ([connections.{draft.name}]) or a URI string.")
    for key in spec:
        if key not in _TOML_KEYS:
            close = difflib.get_close_matches(key, _TOML_KEYS, n=1)
            hint = f"Did you mean '{close[0]}'?" if close else f"Known: {', '.join(_TOML_KEYS)}."
            raise ConfigError(f"{where}: unknown field '{key}'. {hint}")
    values: dict[str, Any] = {}
    extra: dict[str, str] = {}
    if "uri" in spec:
        values, extra = _parse_uri(_toml_str(spec["uri"], "uri", where), where)
    for key in _FIELDS:
        if key in spec:
            text = _toml_str(spec[key], key, where, numbers=key == "port")
            values[key] = _field_value(key, text, where)
    raw_extra = spec.get("extra", {})
    if not isinstance(raw_extra, dict):
        raise ConfigError(f"{where}: 'extra' must be a table (extra = {{ key = \"value\" }}).")
    for key, value in raw_extra.items():
        extra[key] = _toml_str(value, f"extra.{key}", where, numbers=True)
    if values.get("password") is not None:
        logger.warning(
            "connection %s has its password in %s; secrets belong in the environment: set "
            '%s%s__PASSWORD, or password_env = "VAR" in the file',
            draft.name,
            source,
            _ENV_PREFIX,
            draft.name.upper(),
        )
    draft.put(values, extra, source)
    if "password_env" in spec:
        if "password" in spec:
            raise ConfigError(f"{where}: give either 'password' or 'password_env', not both.")
        draft.password_env = (_toml_str(spec["password_env"], "password_env", where), source)


def _toml_str(value: object, key: str, where: str, *, numbers: bool = False) -> str:
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, bool):
        return "true" if value else "false"
    if numbers and isinstance(value, int | float):
        return str(value)
    kind = "a string or a number" if numbers else "a string"
    raise ConfigError(f"{where}: '{key}' must be {kind}, not {type(value).__name__}.")


def _apply_env_field(draft: _Draft, tail: str, value: str, var: str) -> None:
    where = f"Connection '{draft.name}' (env {var})"
    if tail.startswith("EXTRA__") and len(tail) > len("EXTRA__"):
        draft.put({}, {tail[len("EXTRA__") :].lower(): value}, f"env {var}")
        return
    key = tail.lower()
    if key not in _FIELDS:
        names = [f.upper() for f in _FIELDS] + ["EXTRA__<KEY>"]
        close = difflib.get_close_matches(tail, names, n=1)
        hint = f"Did you mean __{close[0]}?" if close else f"Known: __{', __'.join(names)}."
        raise ConfigError(f"{where}: unknown field '{tail}'. {hint}")
    draft.put({key: _field_value(key, value, where)}, {}, f"env {var}")


def _field_value(key: str, text: str, where: str) -> Any:
    """One field's value from text; an empty text unsets it."""
    if text == "":
        return None
    if key == "port":
        try:
            port = int(text)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ConfigError(f"{where}: port {text!r} is not a number between 0 and 65535.")
        return port
    if key == "kind":
        return _kind(text, where)
    return text


def _kind(text: str, where: str) -> str:
    kind = text.strip().lower()
    if not _KIND.fullmatch(kind):
        raise ConfigError(f"{where}: kind {text!r} is not a URI scheme (postgresql, s3, ...).")
    return _KIND_ALIASES.get(kind, kind)


def _parse_uri(text: str, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A URI's fields and query parameters. Messages never echo the URI (it holds secrets)."""
    parts = urlsplit(text.strip())
    if not parts.scheme or "://" not in text:
        raise ConfigError(f"{where}: the value is not a URI of the form {_URI_SHAPE}.")
    if parts.fragment:
        raise ConfigError(
            f"{where}: the URI has a '#' fragment; URL-encode '#' in the password as %23 "
            "('@' as %40, ':' as %3A, '/' as %2F)."
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(
            f"{where}: the URI's port is not a number between 0 and 65535 (if the password "
            "holds ':', '/' or '@', URL-encode them as %3A, %2F, %40)."
        ) from exc
    values: dict[str, Any] = {
        "kind": _kind(parts.scheme, where),
        "host": parts.hostname or None,
        "port": port,
        "login": unquote(parts.username) if parts.username is not None else None,
        "password": unquote(parts.password) if parts.password is not None else None,
        "database": unquote(parts.path[1:] if parts.path.startswith("/") else parts.path) or None,
    }
    return values, dict(parse_qsl(parts.query, keep_blank_values=True))


def _pool_slots(raw: str, name: str, source: str) -> int:
    try:
        slots = int(raw)
    except ValueError:
        slots = 0
    if slots < 1:
        raise ConfigError(
            f"Connection '{name}' ({source}): pool_slots {raw!r} must be a whole number >= 1."
        )
    return slots


def _finish(draft: _Draft, project: Path, environ: Mapping[str, str]) -> Connection:
    source = ", ".join(draft.sources)
    values = draft.values
    kind = values.get("kind")
    if not kind:
        key = draft.name.upper()
        raise ConfigError(
            f"Connection '{draft.name}' ({source}) has no kind: set {_ENV_PREFIX}{key}__KIND="
            f"postgresql (or s3, http, ...), or define it by URI: {_ENV_PREFIX}{key}={_URI_SHAPE}."
        )
    problem = None
    password = values.get("password")
    if draft.password_env is not None:
        var, where = draft.password_env
        password = environ.get(var)
        if password is None:
            problem = (
                f"Connection '{draft.name}' takes its password from the environment variable "
                f"{var} (password_env in {where}), which is not set: export {var}=..., or set "
                f"{_ENV_PREFIX}{draft.name.upper()}__PASSWORD."
            )
    database = values.get("database")
    if kind in _PATH_KINDS and database and "://" not in database:
        database = str(project / database)  # an absolute path stays as it is
    if "pool_slots" in draft.extra:
        _pool_slots(draft.extra["pool_slots"], draft.name, source)
    return Connection(
        name=draft.name,
        kind=kind,
        host=values.get("host"),
        port=values.get("port"),
        login=values.get("login"),
        password=SecretStr(password) if password is not None else None,
        database=database,
        extra=dict(draft.extra),
        source=source,
        problem=problem,
    )


# -- the connections of the current context ---------------------------------------------------

#: The connections `resolve(name)` finds: one value per context (thread, run), not per process.
_active: ContextVar[Mapping[str, Connection] | None] = ContextVar(
    "etlkit_connections", default=None
)


def activate(connections: Mapping[str, Connection] | None) -> Mapping[str, Connection] | None:
    """Make `connections` the ones `resolve(name)` finds in this context; return the previous.

    Called once at the edge (the CLI, the scheduler, a run's child process) with the result of
    `load_connections`. The value belongs to the calling thread's context: a run started from
    it carries it to the run's node threads, and another thread (another run) activates its
    own. `activate(None)` forgets them. Nothing calls it at import.
    """
    previous = _active.get()
    _active.set(None if connections is None else dict(connections))
    return previous


def active_connections() -> Mapping[str, Connection]:
    """The connections `activate` made current in this context (empty when none were)."""
    return dict(_active.get() or {})


def resolve(name: str, *, connections: Mapping[str, Connection] | None = None) -> Connection:
    """The connection called `name` (any case), from `connections` or the activated ones.

    Raises:
        ConnectionNotFoundError: no such connection (with a did-you-mean and how to define
            one), or none are activated in this process.
        ConfigError: the connection is defined but unusable (its `problem`).
    """
    known = _active.get() if connections is None else connections
    if known is None:
        raise _not_found(name, [], loaded=False)
    conn = known.get(name.strip().lower())
    if conn is None:
        raise _not_found(name, known)
    if conn.problem:
        raise ConfigError(conn.problem)
    return conn


# -- masking ---------------------------------------------------------------------------------

#: Connections by name (as `load_connections` returns them) or just the connections.
Connections: TypeAlias = Mapping[str, Connection] | Iterable[Connection]


def _connections(connections: Connections) -> list[Connection]:
    if isinstance(connections, Mapping):
        return list(connections.values())
    return list(connections)


def _secret_forms(connections: Connections) -> list[str]:
    """Every secret, raw and URL-encoded, longest first (so no secret is half-masked)."""
    forms: set[str] = set()
    for conn in _connections(connections):
        for secret in conn.secrets():
            forms.update({secret, quote(secret, safe=""), quote(secret), quote_plus(secret)})
    return sorted(forms, key=lambda form: (-len(form), form))


def _mask_with(text: str, forms: Iterable[str]) -> str:
    for form in forms:
        text = text.replace(form, MASK)
    return text


def mask(text: str, connections: Connections) -> str:
    """`text` with every secret of `connections` (raw and URL-encoded) replaced by `***`."""
    return _mask_with(text, _secret_forms(connections))


class SecretMaskingFilter(logging.Filter):
    """Masks the connections' secrets in log records: message, arguments and traceback.

    A record that holds a secret has its message formatted and masked (its `args` emptied);
    other records pass unchanged.
    """

    def __init__(self, connections: Connections) -> None:
        super().__init__()
        self._forms = _secret_forms(connections)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._forms:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format
            message = f"{record.msg} {record.args}"
        masked = _mask_with(message, self._forms)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            masked = _mask_with(text, self._forms)
            if masked != text:
                record.exc_text = masked  # formatters use it instead of formatting exc_info
        if record.stack_info:
            record.stack_info = _mask_with(record.stack_info, self._forms)
        return True


def install_log_masking(connections: Connections) -> logging.Filter:
    """A logging filter masking the connections' secrets; add it to every handler.

    It attaches itself nowhere (the library adds no handlers): the CLI does
    `handler.addFilter(install_log_masking(connections))`.
    """
    return SecretMaskingFilter(connections)


def list_rows(connections: Connections) -> list[tuple[str, str, str, str]]:
    """`(name, kind, masked uri, source)` per connection, sorted by name (`connections list`).

    A connection with a problem has it appended to its source.
    """
    rows = []
    for conn in sorted(_connections(connections), key=lambda c: c.name):
        source = f"{conn.source} (unusable: {conn.problem})" if conn.problem else conn.source
        rows.append((conn.name, conn.kind, conn.masked_uri, source))
    return rows


# -- testing a connection --------------------------------------------------------------------

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
        elif conn.kind in _PATH_KINDS:
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
