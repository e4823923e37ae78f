"""Connectors are found by name through the `etlkit.connectors` entry points."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.duckdb import DuckDBTableSource
from connectors.files import CsvSource, NdjsonSource, ParquetSource
from etlkit.errors import ConnectorNotFoundError
from etlkit.model.connector_lookup import connector_names, find_connector, installed_connectors

ROOT = Path(__file__).resolve().parents[2]


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


def _install(site: Path, entry_points: str) -> None:
    """A real distribution in `site` declaring `entry_points` (no mocks: importlib.metadata
    reads it from sys.path as it reads an installed package)."""
    (site / "acme_nodes.py").write_text(
        "import etlkit as ek\n\n"
        "class AcmeSource(ek.Source):\n"
        '    """Reads the Acme API."""\n\n'
        "    def read(self, ctx):\n"
        "        return iter(())\n"
    )
    info = site / "acme_nodes-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-nodes\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def _connectors(site: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "etlkit", "--project", str(tmp_path), "connectors"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_etlkit_connectors_lists_the_built_in_and_third_party_connectors(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "[etlkit.connectors]\nacme = acme_nodes:AcmeSource\n")

    done = _connectors(site, tmp_path)

    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in done.stdout.splitlines()[1:]}
    assert rows["acme"] == ["source", "acme_nodes:AcmeSource"]
    assert rows["csv"] == ["source", "connectors.files:CsvSource"]
    assert rows["postgres_sink"] == ["sink", "connectors.postgres:PostgresSink"]
    assert "Reads the Acme API." in done.stdout


def test_a_connector_that_does_not_load_is_listed_with_the_reason(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "[etlkit.connectors]\nbroken = acme_nodes:Missing\n")

    done = _connectors(site, tmp_path)

    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("broken "))
    assert "cannot load" in line
    assert "Connector 'broken' (acme_nodes:Missing) could not be loaded: AttributeError" in line


def test_every_connector_class_of_the_repository_is_declared() -> None:
    import connectors.duckdb
    import connectors.files
    import connectors.http
    import connectors.postgres
    from etlkit.model.nodes import Sink, Source

    classes = {
        f"{module.__name__}:{name}"
        for module in (connectors.files, connectors.duckdb, connectors.postgres, connectors.http)
        for name in dir(module)
        if isinstance(getattr(module, name), type)
        and issubclass(getattr(module, name), Source | Sink)
        and getattr(module, name) not in (Source, Sink)
        and not name.startswith("File")
    }
    declared = {c.target for c in installed_connectors()}
    assert classes - declared == set()
