"""Where and how to connect: DSNs (checked and masked), named connections, the ADBC driver,
and its errors turned into messages (`PostgresTransientError` when a retry may pass)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from etlkit.connector import resolve
from etlkit.errors import ConfigError, ConnectorError, MissingDependencyError, TransientError

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection, Cursor

INSTALL: Final = 'pip install "etlkit-framework[postgres]"'
#: Connection parameters added to a DSN that does not set them.
_DSN_DEFAULTS: Final = {"connect_timeout": "10", "application_name": "etlkit"}
#: Query parameters libpq takes in a URI: a named connection's other extras are etlkit's own.
_LIBPQ_PARAMETERS: Final = frozenset(
    (
        *("host", "hostaddr", "port", "dbname", "user", "password", "passfile", "service"),
        *("connect_timeout", "client_encoding", "options", "application_name", "replication"),
        *("fallback_application_name", "target_session_attrs", "load_balance_hosts"),
        *("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"),
        *("tcp_user_timeout", "channel_binding", "require_auth", "requirepeer"),
        *("sslmode", "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword"),
        *("sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni"),
        *("ssl_min_protocol_version", "ssl_max_protocol_version"),
        *("gssencmode", "krbsrvname", "gsslib", "gssdelegation"),
    )
)
#: SQLSTATEs worth a retry: connection exceptions (class 08), shutdown, too many connections,
#: serialization failures, deadlocks, lock timeouts.
_TRANSIENT_STATES: Final = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03")
_TRANSIENT_TEXT: Final = (
    "connection refused",
    "timeout expired",
    "timed out",
    "could not translate host name",
    "the database system is starting up",
    "the database system is shutting down",
    "too many connections",
    "server closed the connection",
    "connection reset",
    "no route to host",
    "network is unreachable",
)


class PostgresTransientError(ConnectorError, TransientError):
    """PostgreSQL could not be reached or asked for a retry (connection refused, timeout,
    too many connections, deadlock, serialization failure); retrying later may succeed."""


class Dsn:
    """A connection URI whose `repr` and `str` hide the password (`postgresql://u:***@h/db`)."""

    __slots__ = ("_uri",)

    def __init__(self, uri: str) -> None:
        self._uri = uri

    def reveal(self) -> str:
        """The URI with its password, for the driver only."""
        return self._uri

    @property
    def masked(self) -> str:
        """`scheme://user:***@host:port/database`, without the query string."""
        parts = urlsplit(self._uri)
        return f"{parts.scheme}://{_masked_netloc(self._uri)}{parts.path}"

    def location(self, table: str) -> str:
        """The masked URI of `table` in this database."""
        return f"{self.masked.rstrip('/')}/{table}"

    def scrub(self, text: str) -> str:
        """`text` with this URI and its password replaced by their masked forms.

        A password shorter than 4 characters is replaced only where it follows `user:`, as
        replacing every occurrence of one or two letters would garble the message.
        """
        text = text.replace(self._uri, self.masked)
        password = urlsplit(self._uri).password
        for secret in {password, unquote(password)} if password else set():
            if len(secret) >= 4:
                text = text.replace(secret, "***")
            else:
                text = text.replace(f":{secret}@", ":***@")
        return text

    def __repr__(self) -> str:
        return repr(self.masked)

    def __str__(self) -> str:
        return self.masked


def _masked_netloc(uri: str) -> str:
    netloc = urlsplit(uri).netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return netloc
    user = userinfo.partition(":")[0]
    return f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"


def mask_dsn(text: str) -> str:
    """`text` with the password of every `postgresql://user:password@` URI in it masked.

    Also masks `password=...` in a query string or in libpq's `key=value` form.
    """
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(password\s*=\s*)[^&\s]+", r"\1***", text, flags=re.IGNORECASE)


def _check_dsn(dsn: str, owner: str) -> Dsn:
    """`dsn` wrapped, after checking it is a `postgresql://` URI (the message masks it)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres") or not (parts.netloc or parts.query):
        raise ConfigError(
            f"{owner}: dsn {mask_dsn(dsn)!r} is not a PostgreSQL URI; write "
            "'postgresql://user:password@host:port/database', or name a connection "
            "with conn='...'."
        )
    return Dsn(dsn)


def _with_defaults(uri: str) -> str:
    """`uri` with a connect timeout and an application name unless it sets them."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {key for key, _ in query}
    query += [(key, value) for key, value in _DSN_DEFAULTS.items() if key not in given]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))  # libpq: no '+'


def resolve_conn(name: str, owner: str) -> Dsn:
    """The URI of the named connection (`etlkit.connector.resolve`), read when the node runs.

    Raises:
        ConnectorError: the name resolves to no URI.
        ConfigError: no connection has that name, or it is unusable (from `resolve`).
    """
    uri: object = resolve(name).uri
    for reveal in ("get_secret_value", "reveal"):
        if callable(getattr(uri, reveal, None)):
            uri = getattr(uri, reveal)()
            break
    if not isinstance(uri, str):
        raise ConnectorError(
            f"{owner}: connection {name!r} resolved to a {type(uri).__name__}, not a URI string."
        )
    return _check_dsn(_libpq_only(uri), f"{owner} (connection {name!r})")


def _libpq_only(uri: str) -> str:
    """`uri` without the query parameters libpq does not know (etlkit's, such as pool_slots)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(key, value) for key, value in query if key in _LIBPQ_PARAMETERS]
    return urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))


def _driver() -> Any:
    """The ADBC PostgreSQL DB-API module.

    Raises:
        MissingDependencyError: the driver is not installed.
    """
    try:
        import adbc_driver_postgresql.dbapi
    except ImportError as exc:
        raise MissingDependencyError(
            "PostgreSQL connectors need the ADBC PostgreSQL driver (adbc-driver-postgresql), "
            f"which is not installed ({exc}). Install it with: {INSTALL}"
        ) from exc
    return adbc_driver_postgresql.dbapi


def driver_errors() -> tuple[type[Exception], ...]:
    """What ADBC raises: its DB-API errors, and OSError from a record batch reader."""
    import adbc_driver_manager

    return (adbc_driver_manager.Error, OSError)


def _is_transient(exc: BaseException) -> bool:
    state = str(getattr(exc, "sqlstate", None) or "")
    text = str(exc).lower()
    return state.startswith(_TRANSIENT_STATES) or any(t in text for t in _TRANSIENT_TEXT)


def reason(exc: BaseException, dsn: Dsn) -> str:
    """The driver's message, on one line, the password scrubbed."""
    text = str(exc)
    for prefix in ("IO: ", "[libpq] ", "Failed to connect: "):
        text = text.replace(prefix, "")
    return dsn.scrub(" ".join(text.split()))


def failure(exc: BaseException, message: str) -> ConnectorError:
    """`message` as a PostgresTransientError when `exc` is worth a retry, else ConnectorError."""
    return PostgresTransientError(message) if _is_transient(exc) else ConnectorError(message)


def connect(dsn: Dsn, owner: str) -> Connection:
    """A connection with autocommit off: everything until `commit` is one transaction.

    Raises:
        PostgresTransientError: connection refused, timed out, too many connections, ...
        ConnectorError: authentication failed, the database does not exist, ...
        MissingDependencyError: the driver is not installed.
    """
    dbapi = _driver()
    try:
        con: Connection = dbapi.connect(_with_defaults(dsn.reveal()))
    except driver_errors() as exc:
        transient = _is_transient(exc)
        hint = (
            "Is the server running and reachable? The node may be retried."
            if transient
            else "Check the host, database, user and password."
        )
        raise failure(
            exc,
            f"{owner}: cannot connect to PostgreSQL {dsn.masked}: {reason(exc, dsn)}. {hint}",
        ) from exc  # libpq never repeats the password in its messages
    return con


def close(con: Connection) -> None:
    with suppress(*driver_errors()):
        con.rollback()
    with suppress(*driver_errors()):
        con.close()


def fetch_rows(
    cur: Cursor, sql: str, parameters: Sequence[object] | None = None
) -> list[tuple[Any, ...]]:
    cur.execute(sql, parameters)
    return cur.fetchall()


def check_target(dsn: str | None, conn: str | None, owner: str) -> Dsn | None:
    """The checked DSN (None for a named connection, resolved when the node runs)."""
    if (dsn is None) == (conn is None):
        got = "both" if dsn is not None else "neither"
        raise ConfigError(
            f"{owner} takes exactly one of dsn= (a postgresql:// URI) or conn= (a named "
            f"connection); got {got}."
        )
    return _check_dsn(dsn, owner) if dsn is not None else None
