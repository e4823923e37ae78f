"""A project for the UI tests: a pipelines folder, settings, a store with real runs in it."""

from __future__ import annotations

from pathlib import Path

from etlkit.model.discovery import load_pipeline
from etlkit.settings.config import Settings, load_settings
from etlkit.storage.store import RunStore

#: A param value and a data row that would run script in a page that failed to escape them.
SCRIPT = "<script>alert('x')</script>"

DEMO = '''
import polars as pl
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySource


class Label(ek.Transform):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(pl.lit(ctx.params["label"]).alias("label"))


class Demo(ek.Pipeline):
    """A small pipeline for the UI tests."""

    schedule = "@daily"
    start_date = "2025-01-01"
    params = {"label": "<script>alert('x')</script>"}
    numbers = MemorySource(
        pa.table({"x": [1, 2, 3], "note": ["<script>alert('x')</script>", "b", "c"]})
    )
    labelled = Label(numbers)
'''

BROKEN = '''
import polars as pl
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySource


class Explode(ek.Transform):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        raise ValueError("boom <b>bold</b>")


class Broken(ek.Pipeline):
    """Fails in its transform."""

    numbers = MemorySource(pa.table({"x": [1]}))
    explode = Explode(numbers)
'''

CHECKED = '''
import pandera.polars as pdp
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySource


class Bill(pdp.DataFrameModel):
    invoice_id: int = pdp.Field(nullable=False)
    amount: float = pdp.Field(ge=0)


class Checked(ek.Pipeline):
    """Quarantines the bills with a negative amount."""

    bills = MemorySource(
        pa.table({"invoice_id": [1, 2, 3], "amount": [5.0, -1.0, 2.0]}), schema=Bill
    ).expect(on_invalid="quarantine")
'''


def make_project(root: Path) -> Settings:
    """Pipelines `demo`, `broken` and `checked` under `root`, and the project's settings."""
    (root / "pipelines").mkdir()
    (root / "pipelines" / "demo.py").write_text(DEMO)
    (root / "pipelines" / "broken.py").write_text(BROKEN)
    (root / "pipelines" / "checked.py").write_text(CHECKED)
    return load_settings(root, env={})


def run(root: Path, settings: Settings, name: str, date: str = "2025-03-01") -> str:
    """Run pipeline `name` in this process, recorded in the project's store; its run id."""
    cls = load_pipeline(name, root / "pipelines")
    with RunStore(settings.paths.store) as store:
        result = cls.run(date=date, settings=cls.layered(settings), store=store)
    return result.run_id
