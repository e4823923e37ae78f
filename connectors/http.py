"""Paginated JSON APIs as sources.

`HttpJsonSource` GETs the pages of a JSON API one after the other, takes the records out of each
page, flattens nested objects into `_`-joined column names and casts the model's columns to its
Arrow types: one record batch per page.

    visits = HttpJsonSource(
        "https://crm.example.com/api/visits?day={ds}",
        schema=Visit,
        records_path="data.items",
        pagination=Cursor(cursor_path="meta.next_cursor"),
        conn="crm_api",
    )

Pagination is one of five small values: `PageNumber`, `Offset`, `Cursor`, `NextLink` and
`Single`. Throttling (429), server errors (5xx), dropped connections and timeouts are retried
with exponential backoff, honouring `Retry-After`; when the retries run out the error is an
`HttpRetriesExhaustedError`, a `TransientError`, so the scheduler may retry the node later.

Credentials come from a named connection (`conn=`), are sent only to the origin (scheme, host and
port) of `url` and are masked in every message and log line, as are URL passwords and query
parameters whose names look secret (`token`, `api_key`, `signature`, ...).

Only the standard library speaks HTTP (`urllib.request`): proxies come from the usual
`http_proxy`/`https_proxy`/`no_proxy` environment variables and certificates from the system's
default store.
"""

from __future__ import annotations

import base64
import difflib
import email.utils
import functools
import http.client
import json
import logging
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final
from urllib.parse import (
    parse_qsl,
    quote,
    quote_plus,
    urlencode,
    urljoin,
    urlsplit,
    urlunsplit,
)

import pyarrow as pa

from etlkit.errors import ConfigError, ConnectorError, TransientError
from etlkit.nodes import Context, Source
from etlkit.schema import arrow_schema, model_name

if TYPE_CHECKING:
    from email.message import Message
    from http.client import HTTPMessage

    from etlkit.nodes import Model

logger = logging.getLogger(__name__)

#: How many characters of a response body an error message quotes.
_EXCERPT: Final = 200
#: The shown text of a masked secret.
_MASK: Final = "***"
#: Query parameter names whose values are masked in messages (matched case-insensitively).
_SECRET_PARAM: Final = re.compile(
    r"token|secret|passw|pwd|api[-_]?key|apikey|access[-_]?key|signature|^sig$|^key$|auth"
    r"|session|credential",
    re.IGNORECASE,
)
#: Header names whose values are treated as secrets (masked if they ever show up in a message).
_SECRET_HEADER: Final = re.compile(r"auth|token|key|secret|cookie|session", re.IGNORECASE)
#: A valid HTTP header name (RFC 9110 token).
_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: One `<uri>; params` element of a `Link` header.
_LINK: Final = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_REL: Final = re.compile(r"""rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)
_CAST_ERRORS: Final = (pa.ArrowException, ValueError, TypeError, OverflowError)


# ---------------------------------------------------------------- pagination strategies


@dataclass(frozen=True)
class PageNumber:
    """Numbered pages: `?page=1`, `?page=2`, ... until a page holds no records.

    Args:
        param: the query parameter carrying the page number.
        start: the number of the first page.
        size_param: the query parameter carrying the page size, if the API takes one.
        size: the page size to ask for (give it together with `size_param`).
    """

    param: str = "page"
    start: int = 1
    size_param: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if (self.size_param is None) != (self.size is None):
            raise ConfigError(
                f"PageNumber takes size_param= and size= together; got size_param="
                f"{self.size_param!r}, size={self.size!r}."
            )
        if self.size is not None and self.size < 1:
            raise ConfigError(f"PageNumber: size must be at least 1, got {self.size}.")


@dataclass(frozen=True)
class Offset:
    """Offset and limit: `?offset=0&limit=100`, `?offset=100&limit=100`, ...

    The offset advances by the number of records received; reading stops at the first page
    holding fewer than `limit` records. An API that silently caps the limit below `limit` would
    end the read after its first page: ask for no more than the API's maximum page size.

    Args:
        param: the query parameter carrying the offset (the first is 0).
        limit_param: the query parameter carrying the page size.
        limit: the page size to ask for.
    """

    param: str = "offset"
    limit_param: str = "limit"
    limit: int = 100

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigError(f"Offset: limit must be at least 1, got {self.limit}.")


@dataclass(frozen=True)
class Cursor:
    """An opaque cursor from each page's body, sent back as a query parameter.

    Reading stops when the cursor is null, an empty string or missing.

    Args:
        cursor_path: the dotted path of the next cursor in the body (`meta.next_cursor`).
        param: the query parameter carrying the cursor on the next request.
    """

    cursor_path: str = "next_cursor"
    param: str = "cursor"


@dataclass(frozen=True)
class NextLink:
    """The URL of the next page, from the body or from the `Link: <...>; rel="next"` header.

    The link may be relative (resolved against the page's URL). It is requested as given:
    `params=` are not added to it. Reading stops when there is no link.

    Args:
        link_path: the dotted path of the link in the body (`links.next`); None reads the
            RFC 8288 `Link` header instead.
    """

    link_path: str | None = "next"


@dataclass(frozen=True)
class Single:
    """No pagination: one request, one page."""


Pagination = PageNumber | Offset | Cursor | NextLink | Single
_STRATEGIES: Final = (PageNumber, Offset, Cursor, NextLink, Single)


# ---------------------------------------------------------------- errors


class HttpError(ConnectorError):
    """A request failed: an error status, a dropped connection, a timeout.

    Attributes:
        url: the URL requested, secrets masked.
        status: the last HTTP status received, None when no response arrived.
    """

    def __init__(self, message: str, *, url: str, status: int | None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class HttpRetriesExhaustedError(HttpError, TransientError):
    """Throttling (429), server errors (5xx) or network failures outlasted the retries.

    A `TransientError`: running the node again later may succeed.
    """


# ---------------------------------------------------------------- connections and secrets


@dataclass(frozen=True)
class _Auth:
    """The credential header for one read and the strings to mask in messages."""

    header: str
    value: str
    secrets: tuple[str, ...]


def _resolve_auth(name: str, owner: str) -> _Auth:
    """The credential header of the connection called `name`.

    The token is extra `token` if set, else the password. Extra `auth` picks the scheme:
    `bearer` or `basic` (login:token); without it a connection with a login uses Basic and one
    without uses Bearer, as `Connection.storage_options` does for http(s) files. Extra `header`
    sends the bare token in that header instead (`X-Api-Key`), unless `auth` is set.

    Raises:
        ConnectorError: etlkit.connections cannot be imported, or the connection lacks what
            the chosen scheme needs.
        ConfigError: no connection has that name, or it is unusable (from `resolve`).
    """
    try:
        from etlkit.connections import resolve
    except ImportError as exc:
        raise ConnectorError(
            f"{owner}: conn={name!r} needs etlkit.connections, which cannot be imported "
            f"({type(exc).__name__}: {exc}). Upgrade etlkit, or pass the credential header "
            "through headers= instead."
        ) from exc
    connection = resolve(name)
    extra = connection.extra
    password = connection.password.get_secret_value() if connection.password else ""
    token = (extra.get("token") or password).strip()
    scheme = extra.get("auth", "").strip().lower() or None
    header = extra.get("header", "Authorization").strip()
    where = f"{owner}: connection '{connection.name}' ({connection.source})"
    if scheme not in (None, "bearer", "basic"):
        raise ConnectorError(
            f"{where} has extra auth={extra['auth']!r}; HttpJsonSource knows 'bearer' and 'basic'."
        )
    if not _HEADER_NAME.match(header):
        raise ConnectorError(f"{where} names an invalid header {header!r} in extra 'header'.")
    if not token:
        raise ConnectorError(
            f"{where} has neither a password nor an extra 'token'; HttpJsonSource sends it as "
            "the API token. Set one (from the environment or a secrets file)."
        )
    secrets = [*connection.secrets(), token]
    if scheme is None and header.lower() != "authorization":
        value = token
    elif scheme == "basic" or (scheme is None and connection.login):
        if not connection.login:
            raise ConnectorError(f"{where} asks for basic auth but has no login.")
        encoded = base64.b64encode(f"{connection.login}:{token}".encode()).decode("ascii")
        value = f"Basic {encoded}"
        secrets.append(encoded)
    else:
        value = f"Bearer {token}"
    if not _valid_header_value(value):
        raise ConnectorError(
            f"{where}: its secret holds characters no HTTP header may carry (line breaks, "
            "control or non-Latin-1 characters); check the secret."
        )
    return _Auth(header=header, value=value, secrets=tuple(secrets))


def _valid_header_value(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any((ord(char) < 32 and char != "\t") or char == "\x7f" for char in value)


def _mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (and its URL-quoted forms) replaced by `***`."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            for form in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
                text = text.replace(form, _MASK)
    return text


def _mask_url(url: str, secrets: Iterable[str]) -> str:
    """`url` fit for a message: its password, secret-looking parameters and secrets masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{_MASK}@{host}"
    pairs = []
    for pair in parts.query.split("&") if parts.query else []:
        key, sep, _ = pair.partition("=")
        pairs.append(f"{key}={_MASK}" if sep and _SECRET_PARAM.search(key) else pair)
    shown = urlunsplit(parts._replace(netloc=netloc, query="&".join(pairs)))
    return _mask(shown, secrets)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or default


# ---------------------------------------------------------------- HTTP


class _Request(urllib.request.Request):
    """A GET whose private headers go only to `origin`, even across redirects."""

    def __init__(
        self, url: str, *, public: Mapping[str, str], private: Mapping[str, str], origin: str
    ) -> None:
        super().__init__(url, headers=dict(public), method="GET")
        self.origin = origin
        self.private = dict(private)
        if _origin(url) == _origin(origin):
            for name, value in self.private.items():
                self.add_unredirected_header(name, value)


class _Redirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects, sending credentials and user headers only to the source's origin."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None or not isinstance(req, _Request):
            return new
        return _Request(
            new.full_url, public=dict(new.headers), private=req.private, origin=req.origin
        )


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    headers: Message
    body: bytes


def _excerpt(body: bytes, secrets: Iterable[str], limit: int = _EXCERPT) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    text = _mask(text, secrets)
    return repr(text[:limit] + "..." if len(text) > limit else text)


def _retry_after(headers: Message) -> float | None:
    """Seconds the server asks to wait (`Retry-After`: seconds or an HTTP date), None if unset."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0) if seconds == seconds else None  # NaN: ignored


# ---------------------------------------------------------------- records and columns


def _lookup(body: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted path (`data.items`; digits index lists) and whether it exists."""
    value = body
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _missing_part(body: Any, path: str) -> str:
    """Where a dotted path stops resolving, and what is there instead, for messages."""
    value = body
    walked: list[str] = []
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            at = ".".join(walked) or "the top level"
            if isinstance(value, dict):
                keys = sorted(str(k) for k in value)
                close = [k for k in keys if k.startswith(part)][:1] or difflib.get_close_matches(
                    part, keys, n=1
                )
                hint = f" Did you mean '{'.'.join([*walked, close[0]])}'?" if close else ""
                return f"there is no key {part!r} at {at}; keys there are {keys[:20]}.{hint}"
            return f"{at} is {_json_type(value)}, not an object."
        value = value[part]
        walked.append(part)
    return ""


def _json_type(value: Any) -> str:
    """What a JSON value is, with its article: `an object`, `a list`, `null`, ..."""
    if value is None:
        return "null"
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "a number")


def _prefixes(columns: Sequence[str]) -> frozenset[str]:
    """Every `a_`, `a_b_` a flattened column name could be built from (for `a_b_c`)."""
    found = set()
    for column in columns:
        parts = column.split("_")
        for end in range(1, len(parts)):
            found.add("_".join(parts[:end]) + "_")
    return frozenset(found)


def _flatten(
    record: Mapping[str, Any], wanted: frozenset[str] | None, prefixes: frozenset[str] | None
) -> dict[str, Any]:
    """Nested objects as `_`-joined keys: `{"a": {"b": 1}}` gives `a_b` (and `a` itself).

    On a clash the shallower key wins (`a_b` beats `a.b`). With `wanted`, only those keys are
    kept and only objects that can lead to one are walked.
    """
    flat: dict[str, Any] = {}
    level: list[tuple[str, Mapping[str, Any]]] = [("", record)]
    while level:
        deeper: list[tuple[str, Mapping[str, Any]]] = []
        for prefix, obj in level:
            for key, value in obj.items():
                name = prefix + str(key)
                if wanted is None or name in wanted:
                    flat.setdefault(name, value)
                if isinstance(value, dict) and (prefixes is None or name + "_" in prefixes):
                    deeper.append((name + "_", value))
        level = deeper
    return flat


def _to_array(values: list[Any], target: pa.DataType) -> pa.Array:
    """`values` as an array of `target`: inferred by Arrow, then cast safely (no truncation).

    Strings parse as numbers, booleans, dates and timestamps. Numbers are refused for dates and
    timestamps (seconds or milliseconds since the epoch would be guesswork).
    """
    try:
        inferred = pa.array(values)
    except _CAST_ERRORS:
        if _nested(target):
            return pa.array(values, type=target)
        raise
    if pa.types.is_temporal(target) and (
        pa.types.is_integer(inferred.type) or pa.types.is_floating(inferred.type)
    ):
        raise TypeError(
            "a number is ambiguous for a date or timestamp column (seconds? milliseconds?); "
            "declare the column as int or float and convert it in a Transform"
        )
    try:
        return inferred.cast(target)
    except _CAST_ERRORS:
        if _nested(target):
            return pa.array(values, type=target)
        raise


def _nested(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_struct(dtype)
        or pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
        or pa.types.is_map(dtype)
    )


def _column(
    values: list[Any], field: pa.Field, where: Callable[[int], str], secrets: Sequence[str]
) -> pa.Array:
    """One column of a page, value by value only when the whole column fails to convert.

    Raises:
        ConnectorError: a value does not convert; names the record, the column and the value.
    """
    try:
        return _to_array(values, field.type)
    except _CAST_ERRORS:
        pass
    parts = []
    for index, value in enumerate(values):
        try:
            parts.append(_to_array([value], field.type))
        except _CAST_ERRORS as exc:
            hint = ""
            if "zone offset" in str(exc):
                hint = (
                    " The value carries a time zone: declare the column as "
                    "pl.Datetime(time_zone='UTC') to keep the instant."
                )
            raise ConnectorError(
                f"{where(index)}, column '{field.name}': cannot convert "
                f"{_short(value, secrets)} to {field.type} ({_mask(str(exc), secrets)}).{hint} "
                "Fix the model, or convert the value in a Transform reading it as a string."
            ) from exc
    return pa.concat_arrays(parts) if parts else pa.array([], type=field.type)


def _short(value: Any, secrets: Iterable[str] = (), limit: int = 80) -> str:
    """A value from a response for a message: secrets masked, long ones cut."""
    text = _mask(repr(value), secrets)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- the source


@dataclass(frozen=True)
class _Page:
    number: int
    records: list[Any]
    label: str
    secrets: tuple[str, ...]


class HttpJsonSource(Source):
    """Reads the pages of a JSON API, one record batch per page.

    Each page is fetched with a GET. The records are the list at `records_path` (a dotted path
    such as `data.items`; None when the page is the list itself). Nested objects become
    `_`-joined columns (`{"patient": {"id": 1}}` gives `patient_id`), then the model's columns
    are taken, in its order, and cast to its Arrow types (every field nullable: missing keys
    are nulls, reported by validation). Strings convert to numbers, booleans, dates and
    timestamps (ISO 8601); a value that cannot convert fails the read.

        visits = HttpJsonSource(
            "https://crm.example.com/api/visits",
            schema=Visit,
            pagination=PageNumber(size_param="per_page", size=500),
            records_path="data",
            params={"day": "{ds}"},
            conn="crm_api",
        )

    `url` and the values of `params` are templates filled from the context (`{ds}`, params).
    Credentials come from the named connection `conn` (`etlkit.connections.resolve`); the token
    is its extra `token`, else its password. `Authorization: Bearer <token>` by default, or
    `Basic login:token` when the connection has a login (as for http(s) files); extra
    `auth = "bearer"` or `"basic"` forces either, and extra `header = "X-Api-Key"` sends the bare
    token in that header instead. Credentials and `headers` are sent only to the origin of
    `url` (a next link or redirect to another host gets neither).

    Each request is tried `retries + 1` times at most: a 429, a 5xx, a dropped connection or
    a timeout waits `backoff * 2**n` seconds (n = 0, 1, ...; no jitter), or what `Retry-After`
    asks, never more than `max_backoff`, then tries again.

    Args:
        url: the first page's URL (http or https).
        schema: the model to read: its columns and types.
        pagination: how to reach the next page.
        records_path: the dotted path of the records list in each page.
        conn: the name of a connection in `etlkit.connections` holding the credentials.
        headers: extra request headers.
        params: query parameters added to `url` (they replace ones of the same name).
        timeout: seconds to wait on connecting and on each read from the socket.
        retries: how often one request is retried.
        backoff: the first wait before a retry, in seconds.
        max_backoff: the longest wait before a retry, in seconds.
        max_pages: stop after this many pages (a warning is logged if more remain).
        chunk_rows: rows per batch, across pages (the last batch may be shorter); default one
            batch per page, pages larger than the context's `chunk_rows` being split.
        sleep: how to wait between attempts (tests pass a recorder).

    Raises:
        ConfigError: an invalid option (negative retries, a pagination class instead of an
            instance, a URL that is not http or https, an invalid header).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: Model,
        pagination: Pagination,
        records_path: str | None = None,
        conn: str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_pages: int | None = None,
        chunk_rows: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(schema=schema)
        owner = type(self).__name__
        if not isinstance(pagination, _STRATEGIES):
            shown = pagination.__name__ if isinstance(pagination, type) else repr(pagination)
            raise ConfigError(
                f"{owner}: pagination must be an instance of one of "
                f"{[s.__name__ for s in _STRATEGIES]}, such as PageNumber(); got {shown}."
            )
        if "{" not in url:
            _check_url(url, owner)
        problems = [
            f"{name} must be {bound}, got {value}"
            for name, value, ok, bound in (
                ("timeout", timeout, timeout > 0, "positive"),
                ("retries", retries, retries >= 0, "at least 0"),
                ("backoff", backoff, backoff >= 0, "at least 0"),
                ("max_backoff", max_backoff, max_backoff >= 0, "at least 0"),
                ("max_pages", max_pages, max_pages is None or max_pages >= 1, "at least 1"),
                ("chunk_rows", chunk_rows, chunk_rows is None or chunk_rows >= 1, "at least 1"),
            )
            if not ok
        ]
        for name, value in (headers or {}).items():
            if not _HEADER_NAME.match(name):
                problems.append(f"header name {name!r} is not a valid HTTP header name")
            elif not _valid_header_value(value):
                problems.append(
                    f"header {name!r} holds line breaks, control or non-Latin-1 characters"
                )
        if problems:
            raise ConfigError(f"{owner}: " + "; ".join(problems) + ".")
        self.url = url
        self.model: Model = schema
        self.pagination = pagination
        self.records_path = records_path
        self.conn = conn
        self.headers = dict(headers or {})
        self.params = dict(params or {})
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_pages = max_pages
        self.chunk_rows = chunk_rows
        self.sleep = sleep

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        """Yield the model's columns, one batch per page (or `chunk_rows` rows at a time).

        Raises:
            HttpError: a 4xx answer other than 429 (the message quotes the body's start).
            HttpRetriesExhaustedError: 429, 5xx or network failures outlasted the retries.
            ConnectorError: a page is not JSON, has no records where `records_path` says, a
                value does not convert to its column's type, or the pagination loops.
            ConfigError: the rendered URL is not http or https, or names an unknown field.
        """
        owner = f"{type(self).__name__} '{ctx.node or self.name or '(unnamed)'}'"
        target = pa.schema(f.with_nullable(True) for f in arrow_schema(self.model))
        batches = self._batches(ctx, owner, target)
        if self.chunk_rows is not None:
            yield from _rechunk(batches, self.chunk_rows)
            return
        for batch in batches:
            if batch.num_rows <= ctx.chunk_rows:
                yield batch
                continue
            for start in range(0, batch.num_rows, ctx.chunk_rows):
                yield batch.slice(start, ctx.chunk_rows)

    def _batches(self, ctx: Context, owner: str, target: pa.Schema) -> Iterator[pa.RecordBatch]:
        wanted = frozenset(target.names)
        prefixes = _prefixes(target.names)
        checked = False
        for page in self._pages(ctx, owner):
            if not page.records:
                continue
            flat = []
            for index, record in enumerate(page.records):
                if not isinstance(record, dict):
                    raise ConnectorError(
                        f"{page.label}, record {self._record_at(index)} is "
                        f"{_json_type(record)}, not an object: {_short(record, page.secrets)}."
                    )
                flat.append(_flatten(record, wanted, prefixes))
            if not checked:
                self._warn_missing(page, flat, target, owner)
                checked = True
            where = functools.partial(self._where, page.label)
            arrays = [
                _column([row.get(f.name) for row in flat], f, where, page.secrets) for f in target
            ]
            logger.debug("%s: page %d, %d records", owner, page.number, len(flat))
            yield pa.RecordBatch.from_arrays(arrays, schema=target)

    def _record_at(self, index: int) -> str:
        return f"{self.records_path}[{index}]" if self.records_path else f"[{index}]"

    def _where(self, label: str, index: int) -> str:
        return f"{label}, record {self._record_at(index)}"

    def _warn_missing(
        self, page: _Page, flat: list[dict[str, Any]], target: pa.Schema, owner: str
    ) -> None:
        """Log columns no record of the first page has: a typo in the model, most likely."""
        missing = [name for name in target.names if not any(name in row for row in flat)]
        if not missing:
            return
        available = sorted(_flatten(page.records[0], None, None))
        hints = [
            f"'{name}' -> '{close[0]}'"
            for name in missing
            if (close := difflib.get_close_matches(name, available, n=1))
        ]
        logger.warning(
            "%s: no record of the first page has %s, declared by %s (they will be null); "
            "its records have %s%s",
            owner,
            missing,
            model_name(self.model),
            available[:30],
            f"; did you mean {', '.join(hints)}?" if hints else "",
        )

    def _pages(self, ctx: Context, owner: str) -> Iterator[_Page]:
        """Fetch the pages in order, following the pagination until it says stop."""
        rendered = ctx.render(self.url)
        _check_url(rendered, owner)
        params = {name: ctx.render(value) for name, value in self.params.items()}
        base = _with_query(rendered, params)
        auth = _resolve_auth(self.conn, owner) if self.conn is not None else None
        secrets = list(auth.secrets) if auth is not None else []
        secrets += [v for k, v in self.headers.items() if _SECRET_HEADER.search(k)]
        client = _Client(self, base, auth, secrets, owner)

        strategy = self.pagination
        number, offset = 0, 0
        url = self._first(base)
        requested = {url}
        previous: list[Any] | None = None
        while True:
            number += 1
            shown = _mask_url(url, secrets)
            label = f"{owner}: page {number} (GET {shown})"
            response = client.get(url, label)
            body = _parse_json(response, label, secrets)
            records = self._records(body, label, secrets)
            if isinstance(strategy, PageNumber | Offset) and records and records == previous:
                raise ConnectorError(
                    f"{label} returned the same {len(records)} records as page {number - 1}: "
                    f"the API seems to ignore the '{strategy.param}' parameter. Check the "
                    "pagination."
                )
            previous = records
            yield _Page(number, records, label, tuple(secrets))

            offset += len(records)
            following = self._next(
                base, url, body, response.headers, records, number, offset, label, secrets
            )
            if following is None:
                logger.debug("%s: %d page(s), the last was %s", owner, number, shown)
                return
            if self.max_pages is not None and number >= self.max_pages:
                logger.warning(
                    "%s: stopped after max_pages=%d pages; the API has more", owner, number
                )
                return
            if following in requested:
                raise ConnectorError(
                    f"{label}: the pagination loops, the next page "
                    f"{_mask_url(following, secrets)} was already read. Check the "
                    "pagination settings (cursor_path, link_path)."
                )
            requested.add(following)
            url = following

    def _first(self, base: str) -> str:
        strategy = self.pagination
        if isinstance(strategy, PageNumber):
            first = {strategy.param: str(strategy.start)}
            if strategy.size_param is not None:
                first[strategy.size_param] = str(strategy.size)
            return _with_query(base, first)
        if isinstance(strategy, Offset):
            return _with_query(
                base, {strategy.param: "0", strategy.limit_param: str(strategy.limit)}
            )
        return base

    def _next(
        self,
        base: str,
        url: str,
        body: Any,
        headers: Message,
        records: list[Any],
        number: int,
        offset: int,
        label: str,
        secrets: Sequence[str],
    ) -> str | None:
        """The URL of the page after `url`, None when `url` was the last.

        Raises:
            ConnectorError: `cursor_path` or `link_path` holds an object or a list.
        """
        strategy = self.pagination
        if isinstance(strategy, PageNumber):
            if not records:
                return None
            following = {strategy.param: str(strategy.start + number)}
            if strategy.size_param is not None:
                following[strategy.size_param] = str(strategy.size)
            return _with_query(base, following)
        if isinstance(strategy, Offset):
            if len(records) < strategy.limit:
                return None
            return _with_query(
                base, {strategy.param: str(offset), strategy.limit_param: str(strategy.limit)}
            )
        if isinstance(strategy, NextLink) and strategy.link_path is None:
            link = _link_next(headers.get_all("Link") or [])
            return _link_url(url, link, label, secrets) if link and link.strip() else None
        if isinstance(strategy, Cursor | NextLink):
            path = strategy.cursor_path if isinstance(strategy, Cursor) else strategy.link_path
            assert path is not None
            what = "cursor_path" if isinstance(strategy, Cursor) else "link_path"
            found, value = _lookup(body, path)
            if not found and records and number == 1:
                logger.warning(
                    "%s has no %s '%s'; reading stops after it. If the API has more pages, "
                    "check %s: %s",
                    label,
                    what,
                    path,
                    what,
                    _missing_part(body, path),
                )
            if isinstance(value, dict | list):
                raise ConnectorError(
                    f"{label}: {what} '{path}' holds {_json_type(value)}, not a "
                    f"{'cursor' if what == 'cursor_path' else 'URL'}: "
                    f"{_short(value, secrets)}. Point {what} at the value itself."
                )
            if value is None or (isinstance(value, str) and not value.strip()):
                return None
            if isinstance(strategy, NextLink):
                return _link_url(url, str(value), label, secrets)
            text = json.dumps(value) if isinstance(value, bool) else str(value)
            return _with_query(base, {strategy.param: text})
        return None

    def _records(self, body: Any, label: str, secrets: Sequence[str]) -> list[Any]:
        if self.records_path is None:
            if isinstance(body, list):
                return body
            lists = (
                sorted(k for k, v in body.items() if isinstance(v, list))
                if isinstance(body, dict)
                else []
            )
            raise ConnectorError(
                f"{label} is {_json_type(body)}, not a list of records; "
                + (
                    f"set records_path to the key holding them (keys with lists: {lists})."
                    if lists
                    else "set records_path to the dotted path of the records."
                )
            )
        found, records = _lookup(body, self.records_path)
        if not found:
            raise ConnectorError(
                f"{label} has no records at records_path '{self.records_path}': "
                f"{_missing_part(body, self.records_path)}"
            )
        if records is None:
            return []
        if not isinstance(records, list):
            raise ConnectorError(
                f"{label}: records_path '{self.records_path}' holds {_json_type(records)}, "
                f"not a list: {_short(records, secrets)}."
            )
        return records


class _Client:
    """GETs with retries for one read: headers, credentials, backoff and error messages."""

    def __init__(
        self,
        source: HttpJsonSource,
        origin: str,
        auth: _Auth | None,
        secrets: Sequence[str],
        owner: str,
    ) -> None:
        self.source = source
        self.origin = origin
        self.secrets = tuple(secrets)
        self.owner = owner
        self.public = {
            "Accept": "application/json",
            "User-Agent": "etlkit",
        }
        self.private = dict(source.headers)
        if auth is not None:
            for name in [k for k in self.private if k.lower() == auth.header.lower()]:
                del self.private[name]
            self.private[auth.header] = auth.value
        self.opener = urllib.request.build_opener(_Redirect())
        self.conn = source.conn

    def get(self, url: str, label: str) -> _Response:
        """The response to a GET of `url`, a 2xx one, after retrying what may pass.

        Raises:
            HttpError: a 4xx other than 429, or a certificate that does not verify.
            HttpRetriesExhaustedError: 429, 5xx or transport failures on every attempt.
        """
        source = self.source
        shown = _mask_url(url, self.secrets)
        attempts = source.retries + 1
        for attempt in range(1, attempts + 1):
            failure: BaseException | None = None
            retry_after: float | None = None
            status: int | None = None
            try:
                response = self._once(url)
            except ssl.SSLCertVerificationError as exc:
                raise HttpError(
                    f"{label}: the server's certificate does not verify "
                    f"({_mask(str(exc), self.secrets)}).",
                    url=shown,
                    status=None,
                ) from exc
            except http.client.InvalidURL as exc:
                raise HttpError(
                    f"{label}: the URL is malformed (spaces or control characters?); "
                    "percent-encode the URL and its params.",
                    url=shown,
                    status=None,
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                failure = exc
                problem = _transport_problem(exc, source.timeout)
            else:
                status = response.status
                if 200 <= status < 300:
                    return response
                problem = f"HTTP {status} {response.reason}".rstrip()
                if status != 429 and not 500 <= status < 600:
                    raise HttpError(
                        f"{label} failed: {problem}{self._hint(status, url)}. The response "
                        f"starts with {_excerpt(response.body, self.secrets)}.",
                        url=shown,
                        status=status,
                    )
                retry_after = _retry_after(response.headers)
            if attempt == attempts:
                message = (
                    f"{label} failed {attempts} time(s), last with {problem}. The API is "
                    "unavailable or throttling: retry the node later, or raise retries= "
                    f"(now {source.retries}) or backoff= to wait longer."
                )
                error = HttpRetriesExhaustedError(
                    _mask(message, self.secrets), url=shown, status=status
                )
                if failure is not None:
                    raise error from failure
                raise error
            delay = source.backoff * 2 ** (attempt - 1) if retry_after is None else retry_after
            delay = min(delay, source.max_backoff)
            logger.warning(
                "%s: GET %s: %s; retry %d of %d in %.1fs",
                self.owner,
                shown,
                _mask(problem, self.secrets),
                attempt,
                source.retries,
                delay,
            )
            source.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _once(self, url: str) -> _Response:
        """One GET; any status is returned, transport failures raise."""
        request = _Request(url, public=self.public, private=self.private, origin=self.origin)
        try:
            opened = self.opener.open(request, timeout=self.source.timeout)
        except urllib.error.HTTPError as exc:
            opened = exc  # an error status: the exception is the response
        with opened:
            status = int(opened.getcode())
            reason = str(opened.reason or http.client.responses.get(status, ""))
            headers: Message = opened.headers
            body = opened.read()
        return _Response(status=status, reason=reason, headers=headers, body=body)

    def _hint(self, status: int, url: str) -> str:
        if status in (401, 403):
            if self.conn is None:
                return "; the API wants credentials: pass conn= with a named connection"
            if _origin(url) != _origin(self.origin):
                return (
                    f"; credentials of connection '{self.conn}' are only sent to the "
                    "origin of the source's url"
                )
            return f"; check the credentials of connection '{self.conn}'"
        if status == 404:
            return "; check the URL and its parameters"
        return ""


def _transport_problem(exc: BaseException, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"no answer within timeout={timeout}s"
    if isinstance(exc, http.client.IncompleteRead):
        return f"the connection broke after {len(exc.partial)} bytes of the body"
    text = str(reason) or type(reason).__name__
    return f"{type(reason).__name__}: {text}" if text != type(reason).__name__ else text


def _parse_json(response: _Response, label: str, secrets: Sequence[str]) -> Any:
    """The page's body as JSON.

    Raises:
        ConnectorError: the body is not JSON; names the position and quotes the start.
    """
    try:
        return json.loads(response.body)
    except json.JSONDecodeError as exc:
        kind = response.headers.get("Content-Type", "no Content-Type")
        raise ConnectorError(
            f"{label} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} "
            f"(character {exc.pos}); the response ({kind}, {len(response.body)} bytes) "
            f"starts with {_excerpt(response.body, secrets)}."
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConnectorError(
            f"{label} is not valid JSON: the body is not UTF-8 (byte {exc.start}); the "
            f"response starts with {_excerpt(response.body, secrets)}."
        ) from exc


def _link_next(values: Sequence[str]) -> str | None:
    """The `rel="next"` target of RFC 8288 `Link` header values, None if there is none."""
    for value in values:
        for match in _LINK.finditer(value):
            for rel in _REL.finditer(match.group(2)):
                relations = (rel.group(1) or rel.group(2) or "").lower().split()
                if "next" in relations:
                    return match.group(1)
    return None


def _link_url(url: str, link: str, label: str, secrets: Sequence[str]) -> str:
    """A next link, made absolute against the page's URL.

    Raises:
        ConnectorError: the link is not an http or https URL.
    """
    absolute = urljoin(url, link.strip())
    parts = urlsplit(absolute)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ConnectorError(
            f"{label}: the next link {_short(link, secrets)} is not an http or https URL; "
            "check link_path."
        )
    return absolute


def _with_query(url: str, updates: Mapping[str, str]) -> str:
    """`url` with `updates` as query parameters (replacing ones of the same name)."""
    if not updates:
        return url
    parts = urlsplit(url)
    pairs = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in updates
    ]
    pairs.extend(updates.items())
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def _check_url(url: str, owner: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{owner}: url {_mask_url(url, ())!r} is not an http or https URL; write it "
            "in full, such as 'https://api.example.com/v1/items'."
        )


def _rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The same rows in batches of exactly `rows` (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count < rows:
            continue
        merged = pa.concat_batches(pending)
        start = 0
        while count - start >= rows:
            yield merged.slice(start, rows)
            start += rows
        pending = [merged.slice(start)] if start < count else []
        count -= start
    if count:
        yield pa.concat_batches(pending)
