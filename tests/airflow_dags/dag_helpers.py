"""Callables of the test DAGs: plain Python, importable beside the DAG files (and, once copied
beside an imported pipeline, from the pipelines folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl


def extract_orders(out_dir: str, ds: str, **context: Any) -> None:
    """Writes the day's orders (1.10 style: the context comes as keyword arguments)."""
    path = Path(out_dir) / f"orders_{context['ds_nodash']}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"day,amount\n{ds},3\n{ds},4\n")


def flaky_load(out_dir: str, ds: str) -> None:
    """Fails on its first call of a run, then succeeds (a retry is needed)."""
    marker = Path(out_dir) / f"attempt_{ds}"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts == 1:
        raise ConnectionError("warehouse not reachable (first attempt)")
    (Path(out_dir) / f"loaded_{ds}.txt").write_text(f"loaded after {attempts} attempts\n")


def count_rows(path: str) -> dict[str, int]:
    """A small return value, passed to the next task."""
    return {"rows": len(Path(path).read_text().splitlines()) - 1}


def write_summary(summary: dict[str, int], out_dir: str, ds: str) -> None:
    Path(out_dir, f"summary_{ds}.txt").write_text(f"{summary['rows']} rows\n")


def orders_frame() -> pl.DataFrame:
    return pl.DataFrame({"day": ["2025-03-01", "2025-03-01"], "amount": [3, 4]})


def double(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(amount=pl.col("amount") * 2)


def save_total(frame: pl.DataFrame, out_dir: str = "out") -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(out_dir, "total.txt").write_text(f"{frame['amount'].sum()}\n")


def alert(context: dict[str, Any]) -> None:
    Path("alerts.txt").write_text(f"{context['dag_id']} failed: {context['exception']}\n")
