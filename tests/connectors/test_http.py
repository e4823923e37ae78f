"""HttpJsonSource against a local JSON API (tests/http_server.py): pagination, casting, retries."""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

from connectors.http import (
    Cursor,
    HttpError,
    HttpJsonSource,
    HttpRetriesExhaustedError,
    NextLink,
    Offset,
    PageNumber,
    Pagination,
    Single,
)
from etlkit.errors import ConfigError, ConnectorError, TransientError
from etlkit.model.nodes import Context, Source
from etlkit.settings.connections import Connection, SecretStr, activate
from tests.connectors.contract import MakeSource, Model, SourceContract
from tests.http_server import ApiServer, self_signed

TOKEN = "s3cr3t-T0KEN-abc"


class Visit(pdp.DataFrameModel):
    id: int
    patient_id: int
    patient_name: str = pdp.Field(nullable=True)
    amount: float = pdp.Field(nullable=True)
    seen_at: pl.Datetime


class Id(pdp.DataFrameModel):
    id: int


CTX = Context(
    pipeline="p",
    run_id="20250101T000000Z-abc123",
    logical_date=datetime(2025, 1, 1, tzinfo=UTC),
    node="visits",
)


def visits(count: int) -> list[dict[str, Any]]:
    """Nested API records: ids 0..count-1, amounts as strings, an extra key."""
    return [
        {
            "id": i,
            "patient": {"id": 100 + i, "name": f"patient {i}", "ward": {"floor": i % 3}},
            "amount": f"{i * 1.5}",
            "seen_at": (datetime(2025, 1, 1, 8) + timedelta(minutes=i)).isoformat(),
            "ignored": [1, 2, 3],
        }
        for i in range(count)
    ]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to the local server never go through a proxy from the environment."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer(visits(23), page_size=10)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sleeps() -> list[float]:
    """What the source asked to sleep, in order (it never really sleeps)."""
    return []


def source(
    api: ApiServer,
    path: str,
    sleeps: list[float],
    *,
    pagination: Pagination | None = None,
    schema: Model = Visit,
    **options: Any,
) -> HttpJsonSource:
    node = HttpJsonSource(
        api.url(path),
        schema=schema,
        pagination=pagination or Single(),
        sleep=sleeps.append,
        **options,
    )
    node.name = "visits"
    return node


def read(node: Source) -> pa.Table:
    batches = list(node.read(CTX))
    assert node.output_model is not None
    return pa.Table.from_batches(batches) if batches else pa.table({})


# ------------------------------------------------------------------ connections

Use = Callable[..., None]


@pytest.fixture
def use_connections() -> Iterator[Use]:
    """Activates the given connections for `resolve`, as the CLI does; restores them after."""

    def use(*defined: Connection) -> None:
        activate({conn.name: conn for conn in defined})

    previous = activate(None)
    yield use
    activate(previous)


def api_connection(**fields: Any) -> Connection:
    return Connection("crm_api", "https", "crm.example.com", **fields)


# ------------------------------------------------------------------ pagination

STYLES = [
    pytest.param("/pages", PageNumber(size_param="per_page", size=10), "data.items", id="page"),
    pytest.param("/offset", Offset(limit=10), "items", id="offset"),
    pytest.param("/cursor", Cursor(cursor_path="meta.next_cursor"), "results", id="cursor"),
    pytest.param("/next", NextLink(link_path="links.next"), "items", id="next-link-body"),
    pytest.param("/link", NextLink(link_path=None), None, id="next-link-header"),
    pytest.param("/items", Single(), None, id="single"),
]


@pytest.mark.parametrize(("path", "pagination", "records_path"), STYLES)
def test_every_pagination_style_reads_all_records_once_in_order(
    api: ApiServer,
    sleeps: list[float],
    path: str,
    pagination: Pagination,
    records_path: str | None,
) -> None:
    node = source(api, path, sleeps, pagination=pagination, records_path=records_path)
    batches = list(node.read(CTX))
    ids = [i for batch in batches for i in batch.column("id").to_pylist()]
    assert ids == list(range(23))
    expected_batches = [23] if path == "/items" else [10, 10, 3]
    assert [b.num_rows for b in batches] == expected_batches  # one batch per page
    extra = 1 if path == "/pages" else 0  # numbered pages end at an empty page
    assert len(api.requests) == len(expected_batches) + extra
    assert sleeps == []


def test_requests_carry_the_pagination_parameters(api: ApiServer, sleeps: list[float]) -> None:
    read(source(api, "/pages", sleeps, pagination=PageNumber(), records_path="data.items"))
    read(source(api, "/offset", sleeps, pagination=Offset(limit=10), records_path="items"))
    read(
        source(
            api, "/cursor", sleeps, pagination=Cursor("meta.next_cursor"), records_path="results"
        )
    )
    assert api.paths() == [
        "/pages?page=1",
        "/pages?page=2",
        "/pages?page=3",
        "/pages?page=4",
        "/offset?offset=0&limit=10",
        "/offset?offset=10&limit=10",
        "/offset?offset=20&limit=10",
        "/cursor",
        "/cursor?cursor=c10",
        "/cursor?cursor=c20",
    ]


def test_url_and_params_are_rendered_and_kept_on_every_page(
    api: ApiServer, sleeps: list[float]
) -> None:
    node = HttpJsonSource(
        api.url("/offset") + "?day={ds}&limit=3",
        schema=Id,
        pagination=Offset(limit=10),
        records_path="items",
        params={"run": "{run_id}", "fixed": "x y"},
        sleep=sleeps.append,
    )
    assert read(node).num_rows == 23
    assert [seen.query for seen in api.requests][1] == {
        "day": "2025-01-01",
        "run": "20250101T000000Z-abc123",
        "fixed": "x y",
        "offset": "10",
        "limit": "10",  # the pagination's parameters win over the URL's
    }


def test_max_pages_stops_early(
    api: ApiServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    node = source(api, "/next", sleeps, pagination=NextLink("links.next"), records_path="items")
    node.max_pages = 2
    assert read(node).column("id").to_pylist() == list(range(20))
    assert len(api.requests) == 2
    assert "stopped after max_pages=2 pages" in caplog.text


def test_chunk_rows_rechunks_across_pages(api: ApiServer, sleeps: list[float]) -> None:
    node = source(
        api, "/cursor", sleeps, pagination=Cursor("meta.next_cursor"), records_path="results"
    )
    node.chunk_rows = 4
    batches = list(node.read(CTX))
    assert [b.num_rows for b in batches] == [4, 4, 4, 4, 4, 3]
    assert pa.Table.from_batches(batches).column("id").to_pylist() == list(range(23))


def test_pages_larger_than_the_context_chunk_rows_are_split(
    api: ApiServer, sleeps: list[float]
) -> None:
    ctx = Context(pipeline="p", run_id="r", logical_date=CTX.logical_date, chunk_rows=8)
    batches = list(source(api, "/items", sleeps).read(ctx))
    assert [b.num_rows for b in batches] == [8, 8, 7]


def test_empty_api_yields_no_rows(api: ApiServer, sleeps: list[float]) -> None:
    api.records = []
    node = source(api, "/pages", sleeps, pagination=PageNumber(), records_path="data.items")
    assert list(node.read(CTX)) == []
    assert len(api.requests) == 1


def test_a_repeated_cursor_is_a_loop_error(api: ApiServer, sleeps: list[float]) -> None:
    api.respond("/loop", {"items": [{"id": 1}], "next_cursor": "same"})
    node = source(api, "/loop", sleeps, pagination=Cursor(), records_path="items", schema=Id)
    with pytest.raises(ConnectorError, match=r"page 2 .*the pagination loops, the next page"):
        read(node)
    assert len(api.requests) == 2


def test_a_cursor_path_holding_an_object_is_an_error(api: ApiServer, sleeps: list[float]) -> None:
    node = source(api, "/cursor", sleeps, pagination=Cursor("meta"), records_path="results")
    with pytest.raises(
        ConnectorError,
        match=r"page 1 .*: cursor_path 'meta' holds an object, not a cursor: \{'next_cursor': "
        r"'c10'\}\. Point cursor_path at the value itself\.",
    ):
        read(node)


def test_a_missing_cursor_on_the_first_page_stops_with_a_warning(
    api: ApiServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    node = source(api, "/cursor", sleeps, pagination=Cursor("meta.next"), records_path="results")
    assert read(node).num_rows == 10
    assert "has no cursor_path 'meta.next'; reading stops after it" in caplog.text
    assert "Did you mean 'meta.next_cursor'?" in caplog.text


def test_the_link_header_next_relation_is_found_among_others(
    api: ApiServer, sleeps: list[float]
) -> None:
    link = f'<{api.url("/first")}>; rel="prev first", </items?from=link>; rel="last next"'
    api.respond("/first", [{"id": -1}], headers={"Link": link})
    node = source(api, "/first", sleeps, pagination=NextLink(link_path=None), schema=Id)
    assert read(node).column("id").to_pylist() == [-1, *range(23)]
    assert api.paths() == ["/first", "/items?from=link"]


def test_a_next_link_that_is_not_http_is_an_error(api: ApiServer, sleeps: list[float]) -> None:
    api.respond("/ftp", {"items": [{"id": 1}], "next": "ftp://files.example.com/2"})
    node = source(api, "/ftp", sleeps, pagination=NextLink(), records_path="items", schema=Id)
    with pytest.raises(ConnectorError, match=r"the next link 'ftp://files\.example\.com/2' is not"):
        read(node)


def test_an_api_ignoring_the_page_parameter_is_an_error(
    api: ApiServer, sleeps: list[float]
) -> None:
    node = source(api, "/items", sleeps, pagination=PageNumber(), schema=Id)
    with pytest.raises(
        ConnectorError,
        match=r"page 2 .* returned the same 23 records as page 1: the API seems to ignore the "
        r"'page' parameter",
    ):
        read(node)


# ------------------------------------------------------------------ records and casting


def test_nested_objects_are_flattened_and_projected(api: ApiServer, sleeps: list[float]) -> None:
    api.records = visits(2)
    del api.records[1]["patient"]["name"]  # a missing key is a null

    class Floor(pdp.DataFrameModel):
        patient_ward_floor: int
        id: int

    got = read(source(api, "/items", sleeps))
    assert got.schema.names == ["id", "patient_id", "patient_name", "amount", "seen_at"]
    assert got.schema.types == [
        pa.int64(),
        pa.int64(),
        pa.large_string(),
        pa.float64(),
        pa.timestamp("us"),
    ]
    assert got.to_pylist() == [
        {
            "id": 0,
            "patient_id": 100,
            "patient_name": "patient 0",
            "amount": 0.0,
            "seen_at": datetime(2025, 1, 1, 8),
        },
        {
            "id": 1,
            "patient_id": 101,
            "patient_name": None,
            "amount": 1.5,
            "seen_at": datetime(2025, 1, 1, 8, 1),
        },
    ]
    deep = read(source(api, "/items", sleeps, schema=Floor))
    assert deep.to_pylist() == [
        {"patient_ward_floor": 0, "id": 0},
        {"patient_ward_floor": 1, "id": 1},
    ]


def test_a_shallow_key_wins_over_a_flattened_one(api: ApiServer, sleeps: list[float]) -> None:
    class PatientId(pdp.DataFrameModel):
        patient_id: int

    api.records = [{"patient": {"id": 1}, "patient_id": 2}]
    assert read(source(api, "/items", sleeps, schema=PatientId)).to_pylist() == [{"patient_id": 2}]


def test_a_column_no_record_has_is_null_with_a_warning(
    api: ApiServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    class Typo(pdp.DataFrameModel):
        id: int
        patient_nmae: str = pdp.Field(nullable=True)

    caplog.set_level(logging.WARNING, logger="connectors.http")
    got = read(source(api, "/items", sleeps, schema=Typo))
    assert got.column("patient_nmae").null_count == 23
    assert "no record of the first page has ['patient_nmae'], declared by Typo" in caplog.text
    assert "did you mean 'patient_nmae' -> 'patient_name'?" in caplog.text


def test_a_value_that_does_not_cast_names_page_record_column_and_value(
    api: ApiServer, sleeps: list[float]
) -> None:
    api.records[13]["amount"] = "n/a"
    node = source(api, "/offset", sleeps, pagination=Offset(limit=10), records_path="items")
    node.url = api.url("/offset") + "?api_key=" + TOKEN
    with pytest.raises(
        ConnectorError,
        match=r"HttpJsonSource 'visits': page 2 \(GET http://127\.0\.0\.1:\d+/offset\?"
        r"api_key=\*\*\*&offset=10&limit=10\), record items\[3\], column 'amount': cannot convert "
        r"'n/a' to double",
    ) as info:
        read(node)
    assert TOKEN not in str(info.value)


def test_a_float_is_never_truncated_into_an_int_column(api: ApiServer, sleeps: list[float]) -> None:
    api.records = [{"id": 1}, {"id": 2.0}, {"id": 2.5}]
    with pytest.raises(ConnectorError, match=r"record \[2\], column 'id': cannot convert 2\.5"):
        read(source(api, "/items", sleeps, schema=Id))


def test_mixed_json_types_in_one_column_convert_value_by_value(
    api: ApiServer, sleeps: list[float]
) -> None:
    api.records = [{"id": 1}, {"id": "2"}, {"id": None}, {}]
    assert read(source(api, "/items", sleeps, schema=Id)).column("id").to_pylist() == [
        1,
        2,
        None,
        None,
    ]


def test_numbers_are_refused_for_timestamps(api: ApiServer, sleeps: list[float]) -> None:
    api.records = visits(2)
    api.records[1]["seen_at"] = 1735718400
    with pytest.raises(ConnectorError, match=r"record \[1\], column 'seen_at': .*ambiguous"):
        read(source(api, "/items", sleeps))


def test_a_zoned_timestamp_for_a_naive_column_suggests_a_time_zone(
    api: ApiServer, sleeps: list[float]
) -> None:
    api.records = visits(1)
    api.records[0]["seen_at"] = "2025-01-01T08:00:00Z"
    with pytest.raises(ConnectorError, match=r"pl\.Datetime\(time_zone='UTC'\)"):
        read(source(api, "/items", sleeps))

    class Zoned(pdp.DataFrameModel):
        seen_at: pl.Datetime(time_zone="UTC")  # type: ignore[valid-type]  # pandera's spelling

    got = read(source(api, "/items", sleeps, schema=Zoned))
    assert got.column("seen_at").to_pylist() == [datetime(2025, 1, 1, 8, tzinfo=UTC)]


def test_a_record_that_is_not_an_object_is_an_error(api: ApiServer, sleeps: list[float]) -> None:
    api.respond("/scalars", {"items": [{"id": 1}, 7]})
    node = source(api, "/scalars", sleeps, records_path="items", schema=Id)
    with pytest.raises(ConnectorError, match=r"record items\[1\] is a number, not an object: 7"):
        read(node)


def test_a_missing_records_path_lists_the_keys_there(api: ApiServer, sleeps: list[float]) -> None:
    node = source(api, "/pages", sleeps, pagination=PageNumber(), records_path="data.itmes")
    with pytest.raises(
        ConnectorError,
        match=r"page 1 .* has no records at records_path 'data\.itmes': there is no key 'itmes' "
        r"at data; keys there are \['items'\]\. Did you mean 'data\.items'\?",
    ):
        read(node)


def test_an_object_page_without_records_path_names_the_list_keys(
    api: ApiServer, sleeps: list[float]
) -> None:
    node = source(api, "/offset", sleeps, pagination=Offset())
    with pytest.raises(
        ConnectorError,
        match=r"is an object, not a list of records; set records_path to the key holding "
        r"them \(keys with lists: \['items'\]\)",
    ):
        read(node)


def test_invalid_json_names_the_url_and_the_position(api: ApiServer, sleeps: list[float]) -> None:
    api.fail("/items", status=200, body=b'[{"id": 1}, {"id": 2,, }]')
    with pytest.raises(
        ConnectorError,
        match=r"page 1 \(GET http://127\.0\.0\.1:\d+/items\) is not valid JSON: Expecting "
        r"property name enclosed in double quotes at line 1, column 22 \(character 21\).*"
        r"starts with '\[\{\"id\": 1\}",
    ):
        read(source(api, "/items", sleeps, schema=Id))
    assert sleeps == []


# ------------------------------------------------------------------ retries and errors


def test_503_twice_then_success_backs_off_exponentially(
    api: ApiServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    api.fail("/pages", status=503, times=2, query={"page": "2"})
    node = source(api, "/pages", sleeps, pagination=PageNumber(), records_path="data.items")
    assert read(node).column("id").to_pylist() == list(range(23))
    assert sleeps == [0.5, 1.0]
    assert api.paths()[:4] == ["/pages?page=1", "/pages?page=2", "/pages?page=2", "/pages?page=2"]
    assert "HTTP 503 Service Unavailable; retry 1 of 5 in 0.5s" in caplog.text


def test_backoff_is_capped_by_max_backoff(api: ApiServer, sleeps: list[float]) -> None:
    api.fail("/items", status=500, times=4)
    node = source(api, "/items", sleeps, retries=4, backoff=1.0, max_backoff=3.0)
    assert read(node).num_rows == 23
    assert sleeps == [1.0, 2.0, 3.0, 3.0]


def test_429_retry_after_seconds_is_honoured(api: ApiServer, sleeps: list[float]) -> None:
    api.fail("/items", status=429, headers={"Retry-After": "2"})
    assert read(source(api, "/items", sleeps)).num_rows == 23
    assert sleeps == [2.0]


def test_retry_after_as_an_http_date_is_capped_by_max_backoff(
    api: ApiServer, sleeps: list[float]
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    api.fail("/items", status=429, headers={"Retry-After": later})
    api.fail("/items", status=503, headers={"Retry-After": earlier})
    assert read(source(api, "/items", sleeps, max_backoff=7.0)).num_rows == 23
    assert sleeps == [7.0, 0.0]


def test_a_dropped_connection_is_retried(api: ApiServer, sleeps: list[float]) -> None:
    api.fail("/items", drop=True, times=2)
    assert read(source(api, "/items", sleeps)).num_rows == 23
    assert sleeps == [0.5, 1.0]


def test_a_timeout_is_retried(api: ApiServer, sleeps: list[float]) -> None:
    api.fail("/items", hang=True)
    assert read(source(api, "/items", sleeps, timeout=0.2)).num_rows == 23
    assert sleeps == [0.5]


def test_retry_after_on_a_503_wins_over_the_exponential_backoff(
    api: ApiServer, sleeps: list[float]
) -> None:
    api.fail("/items", status=503, times=2, headers={"Retry-After": "0"})
    assert read(source(api, "/items", sleeps, backoff=4.0)).num_rows == 23
    assert sleeps == [0.0, 0.0]


def test_a_hanging_server_fails_after_timeout_with_a_timeout_error_as_cause(
    api: ApiServer, sleeps: list[float]
) -> None:
    api.fail("/items", hang=True)
    with pytest.raises(
        HttpRetriesExhaustedError,
        match=r"failed 1 time\(s\), last with no answer within "
        r"timeout=0\.2s",
    ) as info:
        read(source(api, "/items", sleeps, timeout=0.2, retries=0))
    assert isinstance(info.value.__cause__, TimeoutError)
    assert info.value.status is None


def test_the_pages_of_a_read_share_one_kept_alive_connection(
    api: ApiServer, sleeps: list[float]
) -> None:
    api.fail("/pages", status=503, headers={"Retry-After": "0"}, query={"page": "3"})
    node = source(api, "/pages", sleeps, pagination=PageNumber(), records_path="data.items")
    assert read(node).column("id").to_pylist() == list(range(23))
    assert len(api.requests) == 5  # four pages, one of them twice
    assert api.connections == 1
    assert sleeps == [0.0]


def test_a_connection_broken_mid_read_is_replaced_for_the_next_pages(
    api: ApiServer, sleeps: list[float]
) -> None:
    api.fail("/pages", hang=True, query={"page": "2"})
    node = source(
        api, "/pages", sleeps, pagination=PageNumber(), records_path="data.items", timeout=0.2
    )
    assert read(node).column("id").to_pylist() == list(range(23))
    assert api.connections == 2
    assert sleeps == [0.5]


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[ApiServer, Path]]:
    """The API over HTTPS with a self-signed certificate, and that certificate's file."""
    cert, context = self_signed(tmp_path)
    server = ApiServer(visits(23), page_size=10)
    server.start(tls=context)
    try:
        yield server, cert
    finally:
        server.stop()


def test_https_pages_share_one_tls_connection_verified_by_the_system_store(
    tls_api: tuple[ApiServer, Path], sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, cert = tls_api
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system store, as OpenSSL finds it
    node = source(api, "/pages", sleeps, pagination=PageNumber(), records_path="data.items")
    assert node.url.startswith("https://")
    assert read(node).column("id").to_pylist() == list(range(23))
    assert len(api.requests) == 4
    assert api.connections == 1


def test_a_certificate_that_does_not_verify_fails_at_once(
    tls_api: tuple[ApiServer, Path], sleeps: list[float]
) -> None:
    api, _ = tls_api
    with pytest.raises(
        HttpError,
        match=r"page 1 \(GET https://.*the server's certificate does not "
        r"verify \(.*self.signed",
    ) as info:
        read(source(api, "/items", sleeps))
    assert not isinstance(info.value, TransientError)
    assert sleeps == []


def test_each_read_closes_its_connections(api: ApiServer, sleeps: list[float]) -> None:
    node = source(api, "/items", sleeps)
    read(node)
    read(node)
    assert api.connections == 2


def test_exhausted_retries_raise_a_transient_error(api: ApiServer, sleeps: list[float]) -> None:
    api.fail("/items", status=503, times=10)
    with pytest.raises(
        HttpRetriesExhaustedError,
        match=r"page 1 \(GET http://127\.0\.0\.1:\d+/items\) failed 3 time\(s\), last with "
        r"HTTP 503 Service Unavailable\. .*retry the node later, or raise retries= \(now 2\)",
    ) as info:
        read(source(api, "/items", sleeps, retries=2))
    error = info.value
    assert isinstance(error, TransientError)
    assert isinstance(error, ConnectorError)
    assert error.status == 503
    assert error.url == api.url("/items")
    assert sleeps == [0.5, 1.0]
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is HttpRetriesExhaustedError
    assert (str(copy), copy.status, copy.url) == (str(error), 503, error.url)


def test_exhausted_retries_on_dropped_connections_chain_the_cause(
    api: ApiServer, sleeps: list[float]
) -> None:
    api.fail("/items", drop=True, times=3)
    with pytest.raises(HttpRetriesExhaustedError, match=r"failed 2 time\(s\), last with") as info:
        read(source(api, "/items", sleeps, retries=1))
    assert info.value.status is None
    assert isinstance(info.value.__cause__, OSError)


def test_404_fails_at_once_with_the_start_of_the_body(api: ApiServer, sleeps: list[float]) -> None:
    body = b'{"error": "no such resource"' + b" " + b"x" * 300 + b"TAIL}"
    api.fail("/items", status=404, body=body)
    with pytest.raises(
        HttpError,
        match=r"page 1 \(GET http://127\.0\.0\.1:\d+/items\) failed: HTTP 404 Not Found; check "
        r"the URL and its parameters\. The response starts with "
        r"'\{\"error\": \"no such resource\" x+\.\.\.'",
    ) as info:
        read(source(api, "/items", sleeps))
    assert not isinstance(info.value, TransientError)
    assert info.value.status == 404
    assert "TAIL" not in str(info.value)
    assert len(api.requests) == 1
    assert sleeps == []


# ------------------------------------------------------------------ credentials


@pytest.mark.parametrize(
    ("connection", "header", "value"),
    [
        pytest.param(
            api_connection(password=SecretStr(TOKEN)),
            "authorization",
            f"Bearer {TOKEN}",
            id="bearer",
        ),
        pytest.param(
            api_connection(login="ann", password=SecretStr(TOKEN), extra={"auth": "bearer"}),
            "authorization",
            f"Bearer {TOKEN}",
            id="bearer-despite-login",
        ),
        pytest.param(
            api_connection(login="ann", password=SecretStr(TOKEN)),
            "authorization",
            "Basic YW5uOnMzY3IzdC1UMEtFTi1hYmM=",
            id="basic-with-login",
        ),
        pytest.param(
            api_connection(login="ann", password=SecretStr(TOKEN), extra={"auth": "basic"}),
            "authorization",
            "Basic YW5uOnMzY3IzdC1UMEtFTi1hYmM=",
            id="basic",
        ),
        pytest.param(
            api_connection(extra={"token": TOKEN}),
            "authorization",
            f"Bearer {TOKEN}",
            id="extra-token",
        ),
        pytest.param(
            api_connection(password=SecretStr(TOKEN + "\n"), extra={"header": "X-Api-Key"}),
            "x-api-key",
            TOKEN,
            id="api-key-header",
        ),
    ],
)
def test_credentials_come_from_the_named_connection(
    api: ApiServer,
    sleeps: list[float],
    use_connections: Use,
    connection: Connection,
    header: str,
    value: str,
) -> None:
    use_connections(connection)
    api.auth = (header, value)
    node = source(
        api,
        "/pages",
        sleeps,
        pagination=PageNumber(),
        records_path="data.items",
        conn="crm_api",
        headers={"Authorization": "Bearer overridden-by-conn", "X-Trace": "1"},
    )
    assert read(node).num_rows == 23
    assert all(seen.headers[header] == value for seen in api.requests)
    assert all(seen.headers["x-trace"] == "1" for seen in api.requests)


def test_missing_credentials_get_a_401_with_a_hint(api: ApiServer, sleeps: list[float]) -> None:
    api.auth = ("authorization", f"Bearer {TOKEN}")
    with pytest.raises(HttpError, match=r"HTTP 401 Unauthorized; the API wants credentials"):
        read(source(api, "/items", sleeps))
    assert sleeps == []


def test_the_token_never_appears_in_errors_or_logs(
    api: ApiServer,
    sleeps: list[float],
    use_connections: Use,
    caplog: pytest.LogCaptureFixture,
) -> None:
    use_connections(api_connection(password=SecretStr(TOKEN)))
    api.fail("/items", status=503, body=f"bad token {TOKEN}".encode())
    api.fail("/items", status=403, body=f'{{"error": "token {TOKEN} is revoked"}}'.encode())
    node = source(api, "/items", sleeps, conn="crm_api")
    node.url = api.url("/items") + f"?access_token={TOKEN}&day={{ds}}"
    with pytest.raises(HttpError, match=r"HTTP 403 Forbidden; check the credentials") as info:
        read(node)
    shown = "".join(traceback.format_exception(info.value))
    assert "token *** is revoked" in shown
    assert "access_token=***&day=2025-01-01" in shown
    assert TOKEN not in shown
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(info.value.__dict__)


def test_credentials_follow_redirects_only_on_the_same_origin(
    api: ApiServer, sleeps: list[float], use_connections: Use
) -> None:
    use_connections(api_connection(password=SecretStr(TOKEN)))
    same = source(api, "/redirect", sleeps, conn="crm_api", headers={"X-Secret-Key": "k"})
    same.params = {"to": "/items"}
    assert read(same).num_rows == 23
    assert [s.headers.get("authorization") for s in api.requests] == [f"Bearer {TOKEN}"] * 2

    api.requests.clear()
    other = source(api, "/redirect", sleeps, conn="crm_api", headers={"X-Secret-Key": "k"})
    other.params = {"to": api.url("/items", host="localhost")}
    assert read(other).num_rows == 23
    assert [s.headers.get("authorization") for s in api.requests] == [f"Bearer {TOKEN}", None]
    assert "x-secret-key" not in api.requests[1].headers


def test_an_api_key_and_user_headers_stay_on_the_origin_across_a_redirect(
    api: ApiServer, sleeps: list[float], use_connections: Use
) -> None:
    other = ApiServer(visits(3))
    other.start()
    try:
        use_connections(api_connection(password=SecretStr(TOKEN), extra={"header": "X-Api-Key"}))
        node = source(
            api,
            "/redirect",
            sleeps,
            conn="crm_api",
            headers={"X-Secret-Key": "k", "Accept": "application/vnd.crm+json"},
        )
        node.params = {"to": other.url("/items")}
        assert read(node).num_rows == 3
        other.auth = ("x-api-key", TOKEN)
        with pytest.raises(
            HttpError,
            match=r"HTTP 401 Unauthorized; credentials of connection 'crm_api' are only sent to "
            r"the origin of the source's url",
        ):
            read(node)
    finally:
        other.stop()
    assert [s.headers.get("x-api-key") for s in api.requests] == [TOKEN, TOKEN]
    assert [s.headers.get("x-secret-key") for s in api.requests] == ["k", "k"]
    assert len(other.requests) == 2
    assert [s.headers["accept"] for s in api.requests] == ["application/vnd.crm+json"] * 2
    assert [s.headers["accept"] for s in other.requests] == ["application/json"] * 2
    assert not any(
        {"x-api-key", "x-secret-key", "authorization"} & set(s.headers) for s in other.requests
    )


def test_an_unknown_connection_is_a_config_error(
    api: ApiServer, sleeps: list[float], use_connections: Use
) -> None:
    use_connections(api_connection(password=SecretStr(TOKEN)))
    with pytest.raises(ConfigError, match="Connection 'nope' is not defined"):
        read(source(api, "/items", sleeps, conn="nope"))
    assert api.requests == []


def test_a_connection_without_a_secret_is_an_error(
    api: ApiServer, sleeps: list[float], use_connections: Use
) -> None:
    use_connections(api_connection(login="ann", extra={"auth": "basic"}))
    with pytest.raises(
        ConnectorError,
        match=r"connection 'crm_api' \(code\) has neither a password nor an extra 'token'",
    ):
        read(source(api, "/items", sleeps, conn="crm_api"))


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pagination": PageNumber}, r"pagination must be an instance .* got PageNumber"),
        ({"url": "ftp://example.com/x"}, r"url 'ftp://example.com/x' is not an http or https"),
        ({"retries": -1}, r"retries must be at least 0, got -1"),
        ({"timeout": 0}, r"timeout must be positive"),
        ({"headers": {"X-Bad": "a\r\nb"}}, r"header 'X-Bad' holds line breaks"),
        ({"headers": {"Bad Name": "x"}}, r"header name 'Bad Name' is not a valid"),
    ],
    ids=["pagination-class", "ftp-url", "retries", "timeout", "header-value", "header-name"],
)
def test_invalid_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"url": "https://api.example.com/v1", "pagination": Single()}
    arguments.update(options)
    with pytest.raises(ConfigError, match=message):
        HttpJsonSource(arguments.pop("url"), schema=Id, **arguments)


def test_page_size_needs_its_parameter() -> None:
    with pytest.raises(ConfigError, match="PageNumber takes size_param= and size= together"):
        PageNumber(size=50)


def test_a_rendered_url_is_checked_too(sleeps: list[float]) -> None:
    ctx = Context(pipeline="p", run_id="r", logical_date=CTX.logical_date, params={"base": "x"})
    node = HttpJsonSource("{base}/items", schema=Id, pagination=Single(), sleep=sleeps.append)
    with pytest.raises(ConfigError, match="url 'x/items' is not an http or https URL"):
        list(node.read(ctx))


# ------------------------------------------------------------------ the contract


class TestHttpJsonSourceContract(SourceContract):
    @pytest.fixture
    def make_source(self, api: ApiServer) -> MakeSource:
        def make(table: pa.Table, model: Model, *, chunk_rows: int | None = None) -> Source:
            api.records = table.to_pylist()
            return HttpJsonSource(
                api.url("/pages"),
                schema=model,
                pagination=PageNumber(size_param="per_page", size=250),
                records_path="data.items",
                chunk_rows=chunk_rows,
                sleep=lambda seconds: None,
            )

        return make
