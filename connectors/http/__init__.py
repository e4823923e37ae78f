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

httpx speaks HTTP: one client per read keeps its connections alive from page to page (one TCP
and TLS handshake per origin, not per page). Proxies come from the usual
`http_proxy`/`https_proxy`/`no_proxy` environment variables and certificates from the system's
default store.

- `pagination`: `PageNumber`, `Offset`, `Cursor`, `NextLink`, `Single`; finding the next page.
- `auth`: the credential header of a named connection; masking secrets in messages.
- `client`: GETs with retries and backoff, redirects; `HttpError`, `HttpRetriesExhaustedError`.
- `records`: records out of a page, flattened and converted to the model's types.
- `source`: `HttpJsonSource`.
"""

from __future__ import annotations

from connectors.http.client import HttpError, HttpRetriesExhaustedError
from connectors.http.pagination import Cursor, NextLink, Offset, PageNumber, Pagination, Single
from connectors.http.source import HttpJsonSource

__all__ = [
    "Cursor",
    "HttpError",
    "HttpJsonSource",
    "HttpRetriesExhaustedError",
    "NextLink",
    "Offset",
    "PageNumber",
    "Pagination",
    "Single",
]
