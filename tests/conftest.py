"""Shared fixtures: settings with a tmp staging root, small Arrow tables."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import etlkit as ek

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(tmp_path: Path) -> ek.Settings:
    """Default settings with every state path under tmp_path, the environment ignored."""
    return ek.load_settings(tmp_path, env={}, cli={"paths.state_dir": str(tmp_path / "state")})


@pytest.fixture
def billing_table() -> pa.Table:
    """Ten billing rows: invoice_id 1..10, patient_id 1..5, amount 10.0..100.0."""
    return pa.table(
        {
            "invoice_id": list(range(1, 11)),
            "patient_id": [1 + i % 5 for i in range(10)],
            "amount": [10.0 * (i + 1) for i in range(10)],
        }
    )
