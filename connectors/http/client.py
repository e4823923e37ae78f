"""GETs with retries for one read: credentials sent only to the source's origin (also across
redirects), exponential backoff honouring `Retry-After`, and errors that name the page."""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from connectors.http.auth import Auth, mask, mask_url
from etlkit.errors import ConnectorError, TransientError

if TYPE_CHECKING:
    from email.message import Message
    from http.client import HTTPMessage

    from connectors.http.source import HttpJsonSource

logger = logging.getLogger(__name__)

#: How many characters of a response body an error message quotes.
_EXCERPT: Final = 200


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


class Client:
    """GETs with retries for one read: headers, credentials, backoff and error messages."""

    def __init__(
        self,
        source: HttpJsonSource,
        origin: str,
        auth: Auth | None,
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
        shown = mask_url(url, self.secrets)
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
                    f"({mask(str(exc), self.secrets)}).",
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
