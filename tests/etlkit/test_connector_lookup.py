"""Connectors are found by name through the `etlkit.connectors` entry points."""

from __future__ import annotations

import pickle

import pytest

from connectors.duckdb import DuckDBTableSource
from connectors.files import CsvSource, NdjsonSource, ParquetSource
from etlkit.errors import ConnectorNotFoundError
from etlkit.model.connector_lookup import connector_names, find_connector


def test_the_installed_connectors_are_found_by_their_entry_point_names() -> None:
    assert {"csv", "parquet", "ndjson", "duckdb"} <= set(connector_names())
    assert find_connector("csv") is CsvSource
    assert find_connector("parquet") is ParquetSource
    assert find_connector("ndjson") is NdjsonSource
    assert find_connector("duckdb") is DuckDBTableSource


def test_an_unknown_connector_name_says_what_is_installed_and_the_closest_name() -> None:
    with pytest.raises(
        ConnectorNotFoundError, match=r"under the name 'cvs'\. Did you mean 'csv'\?"
    ) as caught:
        find_connector("cvs")

    assert "'csv'" in str(caught.value)
    assert isinstance(caught.value, KeyError)
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)
