"""`HttpJsonSource`: the pages of a JSON API, one record batch per page."""

from __future__ import annotations

import difflib
import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import pyarrow as pa

from connectors.http.auth import HEADER_NAME, mask_url, resolve_auth, valid_header_value
from connectors.http.client import Client, parse_json
from connectors.http.pagination import (
    STRATEGIES,
    Offset,
    PageNumber,
    Pagination,
    first_url,
    next_url,
    with_query,
)
from connectors.http.records import (
    column_prefixes,
    convert_column,
    flatten,
    json_type,
    lookup,
    missing_part,
    short,
)
from etlkit.connector import Context, Source, arrow_schema, model_name
from etlkit.errors import ConfigError, ConnectorError

if TYPE_CHECKING:
    from etlkit.connector import Model

logger = logging.getLogger(__name__)

#: Header names whose values are treated as secrets (masked if they ever show up in a message).
_SECRET_HEADER: Final = re.compile(r"auth|token|key|secret|cookie|session", re.IGNORECASE)


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
    Credentials come from the named connection `conn` (`etlkit.connector.resolve`); the token
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
        conn: the named connection (`etlkit.toml`, the environment) holding the credentials.
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
        if not isinstance(pagination, STRATEGIES):
            shown = pagination.__name__ if isinstance(pagination, type) else repr(pagination)
            raise ConfigError(
                f"{owner}: pagination must be an instance of one of "
                f"{[s.__name__ for s in STRATEGIES]}, such as PageNumber(); got {shown}."
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
            if not HEADER_NAME.match(name):
                problems.append(f"header name {name!r} is not a valid HTTP header name")
            elif not valid_header_value(value):
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
        prefixes = column_prefixes(target.names)
        checked = False
        for page in self._pages(ctx, owner):
            if not page.records:
                continue
            flat = []
            for index, record in enumerate(page.records):
                if not isinstance(record, dict):
                    raise ConnectorError(
                        f"{page.label}, record {self._record_at(index)} is "
                        f"{json_type(record)}, not an object: {short(record, page.secrets)}."
                    )
                flat.append(flatten(record, wanted, prefixes))
            if not checked:
                self._warn_missing(page, flat, target, owner)
                checked = True
            where = functools.partial(self._where, page.label)
            arrays = [
                convert_column([row.get(f.name) for row in flat], f, where, page.secrets)
                for f in target
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
        available = sorted(flatten(page.records[0], None, None))
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
        base = with_query(rendered, params)
        auth = resolve_auth(self.conn, owner) if self.conn is not None else None
        secrets = list(auth.secrets) if auth is not None else []
        secrets += [v for k, v in self.headers.items() if _SECRET_HEADER.search(k)]
        with Client(self, base, auth, secrets, owner) as client:
            yield from self._follow(client, base, owner, secrets)

    def _follow(self, client: Client, base: str, owner: str, secrets: list[str]) -> Iterator[_Page]:
        """Fetch the pages in order through `client`, following the pagination."""
        strategy = self.pagination
        number, offset = 0, 0
        url = first_url(self.pagination, base)
        requested = {url}
        previous: list[Any] | None = None
        while True:
            number += 1
            shown = mask_url(url, secrets)
            label = f"{owner}: page {number} (GET {shown})"
            response = client.get(url, label)
            body = parse_json(response, label, secrets)
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
            following = next_url(
                self.pagination,
                base,
                url,
                body,
                response.headers,
                records,
                number,
                offset,
                label,
                secrets,
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
                    f"{mask_url(following, secrets)} was already read. Check the "
                    "pagination settings (cursor_path, link_path)."
                )
            requested.add(following)
            url = following

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
                f"{label} is {json_type(body)}, not a list of records; "
                + (
                    f"set records_path to the key holding them (keys with lists: {lists})."
                    if lists
                    else "set records_path to the dotted path of the records."
                )
            )
        found, records = lookup(body, self.records_path)
        if not found:
            raise ConnectorError(
                f"{label} has no records at records_path '{self.records_path}': "
                f"{missing_part(body, self.records_path)}"
            )
        if records is None:
            return []
        if not isinstance(records, list):
            raise ConnectorError(
                f"{label}: records_path '{self.records_path}' holds {json_type(records)}, "
                f"not a list: {short(records, secrets)}."
            )
        return records


def _check_url(url: str, owner: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{owner}: url {mask_url(url, ())!r} is not an http or https URL; write it "
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
