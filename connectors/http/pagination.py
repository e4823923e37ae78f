"""The five pagination strategies, and how each finds the URL of the next page."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from connectors.http.records import json_type, lookup, missing_part, short
from etlkit.errors import ConfigError, ConnectorError

if TYPE_CHECKING:
    from email.message import Message

logger = logging.getLogger(__name__)

#: One `<uri>; params` element of a `Link` header.
_LINK: Final = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_REL: Final = re.compile(r"""rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)


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
STRATEGIES: Final = (PageNumber, Offset, Cursor, NextLink, Single)


def first_url(strategy: Pagination, base: str) -> str:
    """The URL of the first page: `base` with the first page number or offset, if any."""
    if isinstance(strategy, PageNumber):
        first = {strategy.param: str(strategy.start)}
        if strategy.size_param is not None:
            first[strategy.size_param] = str(strategy.size)
        return with_query(base, first)
    if isinstance(strategy, Offset):
        return with_query(base, {strategy.param: "0", strategy.limit_param: str(strategy.limit)})
    return base


def next_url(
    strategy: Pagination,
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
    if isinstance(strategy, PageNumber):
        if not records:
            return None
        following = {strategy.param: str(strategy.start + number)}
        if strategy.size_param is not None:
            following[strategy.size_param] = str(strategy.size)
        return with_query(base, following)
    if isinstance(strategy, Offset):
        if len(records) < strategy.limit:
            return None
        return with_query(
            base, {strategy.param: str(offset), strategy.limit_param: str(strategy.limit)}
        )
    if isinstance(strategy, NextLink) and strategy.link_path is None:
        link = _link_next(headers.get_all("Link") or [])
        return _link_url(url, link, label, secrets) if link and link.strip() else None
    if isinstance(strategy, Cursor | NextLink):
        path = strategy.cursor_path if isinstance(strategy, Cursor) else strategy.link_path
        assert path is not None
        what = "cursor_path" if isinstance(strategy, Cursor) else "link_path"
        found, value = lookup(body, path)
        if not found and records and number == 1:
            logger.warning(
                "%s has no %s '%s'; reading stops after it. If the API has more pages, "
                "check %s: %s",
                label,
                what,
                path,
                what,
                missing_part(body, path),
            )
        if isinstance(value, dict | list):
            raise ConnectorError(
                f"{label}: {what} '{path}' holds {json_type(value)}, not a "
                f"{'cursor' if what == 'cursor_path' else 'URL'}: "
                f"{short(value, secrets)}. Point {what} at the value itself."
            )
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(strategy, NextLink):
            return _link_url(url, str(value), label, secrets)
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        return with_query(base, {strategy.param: text})
    return None


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
            f"{label}: the next link {short(link, secrets)} is not an http or https URL; "
            "check link_path."
        )
    return absolute


def with_query(url: str, updates: Mapping[str, str]) -> str:
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
