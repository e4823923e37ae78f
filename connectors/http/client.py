"""GETs with retries for one read, through one pooled httpx client: credentials sent only to
the source's origin (also across redirects), exponential backoff honouring `Retry-After`, and
errors that name the page."""

from __future__ import annotations

import email.message
import email.utils
import json
import logging
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, TypeVar
from urllib.parse import urlsplit

import httpx

from connectors.http.auth import Auth, mask, mask_url
from etlkit.errors import ConnectorError, TransientError

if TYPE_CHECKING:
    from email.message import Message


logger = logging.getLogger(__name__)

#: How many characters of a response body an error message quotes.
_EXCERPT: Final = 200
_E = TypeVar("_E", bound=BaseException)

#: Redirects followed per request, as many as `urllib` followed.
_MAX_REDIRECTS: Final = 10

# httpx logs every request at INFO with its full URL, query secrets included; etlkit's own lines
# mask them, so httpx's stay quiet unless the user has set its level.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)


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


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or default


@dataclass(frozen=True)
class _Response:
    url: str  # where the answer came from, after redirects
    status: int
    reason: str
    headers: Message
    body: bytes


def _excerpt(body: bytes, secrets: Iterable[str], limit: int = _EXCERPT) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    text = mask(text, secrets)
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


class RequestPolicy(Protocol):
    """What a client takes from its source (`HttpJsonSource`): headers, credentials, limits."""

    conn: str | None
    headers: dict[str, str]
    timeout: float
    retries: int
    backoff: float
    max_backoff: float
    sleep: Callable[[float], None]


class Client:
    """GETs with retries for one read: headers, credentials, backoff and error messages.

    One httpx client per read keeps its connections alive from page to page (one TCP and TLS
    handshake per origin, not per page). Use it as a context manager: leaving closes them.
    """

    def __init__(
        self,
        source: RequestPolicy,
        origin: str,
        auth: Auth | None,
        secrets: Sequence[str],
        owner: str,
    ) -> None:
        self.source = source
        self.origin = origin
        self.secrets = tuple(secrets)
        self.owner = owner
        self.private = dict(source.headers)
        if auth is not None:
            for name in [k for k in self.private if k.lower() == auth.header.lower()]:
                del self.private[name]
            self.private[auth.header] = auth.value
        self.conn = source.conn
        self.public = httpx.Headers({"Accept": "application/json", "User-Agent": "etlkit"})
        self.http = httpx.Client(
            headers=self.public,
            timeout=httpx.Timeout(source.timeout),
            follow_redirects=True,
            max_redirects=_MAX_REDIRECTS,
            # the system's certificate store (and SSL_CERT_FILE), as urllib used, not certifi's
            verify=ssl.create_default_context(),
            event_hooks={"request": [self._scope_credentials]},
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.http.close()

    def _scope_credentials(self, request: httpx.Request) -> None:
        """Put the credentials and user headers on a request to the source's origin only.

        httpx calls this before every request it sends, redirects included; its own redirect
        handling keeps custom headers (an `X-Api-Key`) on another origin, so they are never
        given to the client, only added here.
        """
        same = _origin(str(request.url)) == _origin(self.origin)
        for name, value in self.private.items():
            if same:
                request.headers[name] = value
            elif name in self.public:  # a user's `Accept`: the default goes elsewhere
                request.headers[name] = self.public[name]
            else:
                request.headers.pop(name, None)

    def get(self, url: str, label: str) -> _Response:
        """The response to a GET of `url`, a 2xx one, after retrying what may pass.

        Raises:
            HttpError: a 4xx other than 429, a certificate that does not verify, a malformed
                URL, or too many redirects.
            HttpRetriesExhaustedError: 429, 5xx or transport failures on every attempt.
        """
        source = self.source
        shown = mask_url(url, self.secrets)
        attempts = source.retries + 1
        for attempt in range(1, attempts + 1):
            failure: BaseException | None = None
            retry_after: float | None = None
            status: int | None = None
            try:
                response = self._once(url)
            except (httpx.RequestError, httpx.InvalidURL) as exc:
                refused = self._refused(exc, label, shown)
                if refused is not None:
                    raise refused from exc
                failure = _builtin(exc)
                problem = _transport_problem(exc, source.timeout)
            else:
                status = response.status
                if 200 <= status < 300:
                    return response
                problem = f"HTTP {status} {response.reason}".rstrip()
                if status != 429 and not 500 <= status < 600:
                    hint = self._hint(status, response.url)
                    raise HttpError(
                        f"{label} failed: {problem}{hint}. The response starts with "
                        f"{_excerpt(response.body, self.secrets)}.",
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
                    mask(message, self.secrets), url=shown, status=status
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
                mask(problem, self.secrets),
                attempt,
                source.retries,
                delay,
            )
            source.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _once(self, url: str) -> _Response:
        """One GET (redirects followed); any status is returned, transport failures raise."""
        response = self.http.get(url)
        headers = email.message.Message()
        for name, value in response.headers.multi_items():
            headers[name] = value  # a Message keeps repeated names, as `Link` may be
        return _Response(
            url=str(response.url),
            status=response.status_code,
            reason=response.reason_phrase,
            headers=headers,
            body=response.content,
        )

    def _refused(self, exc: Exception, label: str, shown: str) -> HttpError | None:
        """The error for a failure no retry mends (a certificate that does not verify, a
        malformed URL, a redirect to another scheme, too many redirects, a body that does not
        decode); None for one that may pass (a timeout, a refused or dropped connection)."""
        if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
            why = (
                "a redirect leads to a URL that is not http or https"
                if isinstance(exc, httpx.UnsupportedProtocol)
                else "the URL is malformed (spaces or control characters?); percent-encode "
                "the URL and its params"
            )
        elif isinstance(exc, httpx.TooManyRedirects):
            why = f"it redirects more than {_MAX_REDIRECTS} times; check the URL"
        elif isinstance(exc, httpx.DecodingError):
            why = f"the body does not decode ({mask(str(exc), self.secrets)})"
        elif (cert := _cause(exc, ssl.SSLCertVerificationError)) is not None:
            why = f"the server's certificate does not verify ({mask(str(cert), self.secrets)})"
        else:
            return None
        return HttpError(f"{label}: {why}.", url=shown, status=None)

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


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of `kind` in the chain of causes of `exc`, None if there is none."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:  # a chain may loop back on itself
        if isinstance(seen, kind):
            return seen
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _builtin(exc: Exception) -> OSError:
    """The OSError a transport failure is (`TimeoutError`, `ConnectionError`), chaining it.

    Callers catch network failures as OSError whatever client speaks HTTP; httpx's own
    exceptions are not OSErrors, so the cause of an exhausted retry is the OSError under it or
    one made from its message.
    """
    found = _cause(exc, OSError)
    if found is not None:
        return found
    text = str(exc) or type(exc).__name__
    made = TimeoutError(text) if isinstance(exc, httpx.TimeoutException) else ConnectionError(text)
    made.__cause__ = exc
    return made


def _transport_problem(exc: Exception, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within timeout={timeout}s"
    reason = _cause(exc, OSError) or exc
    text = str(reason) or type(reason).__name__
    return f"{type(reason).__name__}: {text}" if text != type(reason).__name__ else text


def parse_json(response: _Response, label: str, secrets: Sequence[str]) -> Any:
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
