"""data.generate: deterministic, consistent sample data for the monthly financial report."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import data.generate as datagen

ROOT = Path(__file__).resolve().parents[2]

ROWS = 5_000


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> datagen.GeneratedPaths:
    """One small data set in both formats, shared by the read-only tests."""
    return datagen.generate(tmp_path_factory.mktemp("both"), ROWS, fmt="both")


def billing(paths: datagen.GeneratedPaths, ext: str = "csv") -> pl.DataFrame:
    frames = []
    for ds in paths.months:
        file = paths.billing_dir / ds / f"billing.{ext}"
        frame = (
            pl.read_parquet(file) if ext == "parquet" else pl.read_csv(file, try_parse_dates=True)
        )
        frames.append(frame.with_columns(ds=pl.lit(ds)))
    return pl.concat(frames)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        datagen.generate(tmp_path / name, 3_000, seed=seed, months=2, fmt="both")

    first, second, other = (files(tmp_path / name) for name in "abc")
    assert first == second
    assert len(first) == 2 + 2 + 2 * 2  # patients, insurance, two months; csv and parquet each
    assert first["patients.csv"] != other["patients.csv"]
    assert first["billing/2025-01-01/billing.csv"] != other["billing/2025-01-01/billing.csv"]


def test_chunk_size_does_not_change_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datagen.generate(tmp_path / "whole", 2_000, fmt="csv")
    monkeypatch.setattr(datagen, "CHUNK_ROWS", 333)
    datagen.generate(tmp_path / "chunked", 2_000, fmt="csv")

    assert files(tmp_path / "whole") == files(tmp_path / "chunked")


def test_returned_paths_name_the_files(both: datagen.GeneratedPaths) -> None:
    root = both.patients.parent
    assert both == datagen.GeneratedPaths(
        patients=root / "patients.csv",
        insurance=root / "insurance.csv",
        billing_dir=root / "billing",
        months=("2025-01-01", "2025-02-01", "2025-03-01"),
        fmt="both",
    )
    assert not list(root.rglob(".*.tmp"))


def test_row_counts_and_even_split_over_months(both: datagen.GeneratedPaths) -> None:
    per_month = billing(both).group_by("ds").len().sort("ds")["len"].to_list()

    assert per_month == [1_667, 1_667, 1_666]
    assert pl.read_csv(both.patients).height == 1_000  # max(1000, rows // 10)
    assert pl.read_csv(both.insurance).height == 1_000


def test_patient_count_grows_with_rows(tmp_path: Path) -> None:
    paths = datagen.generate(tmp_path, 200_000, months=1, start="2024-12")

    assert pl.read_csv(paths.patients)["patient_id"].to_list() == list(range(1, 20_001))
    assert pl.read_csv(paths.billing_dir / "2024-12-01" / "billing.csv").height == 200_000


def test_invoice_ids_are_unique_across_months(both: datagen.GeneratedPaths) -> None:
    ids = billing(both)["invoice_id"]

    assert ids.null_count() == 0
    assert ids.n_unique() == ROWS


def test_billing_references_patients_and_their_payer(both: datagen.GeneratedPaths) -> None:
    insurance = pl.read_csv(both.insurance)
    joined = billing(both).join(insurance, on="patient_id", how="left", suffix="_insurance")

    assert joined["payer_id_insurance"].null_count() == 0
    assert (joined["payer_id"] == joined["payer_id_insurance"]).all()
    assert joined["payer_id"].is_between(1, 20).all()
    assert set(joined["status"]) == {"paid", "pending", "denied"}


def test_billed_at_is_inside_its_month(both: datagen.GeneratedPaths) -> None:
    rows = billing(both)

    assert rows.schema["billed_at"] == pl.Datetime("us")
    assert (rows["billed_at"].dt.strftime("%Y-%m-01") == rows["ds"]).all()


def test_amounts_are_non_negative_with_two_decimals(both: datagen.GeneratedPaths) -> None:
    amount = billing(both)["amount"]
    text = (both.billing_dir / "2025-01-01" / "billing.csv").read_text().splitlines()[1]

    assert amount.min() == 0.0
    assert (amount.round(2) == amount).all()
    assert text.split(",")[2].split(".")[1].isdigit()
    assert len(text.split(",")[2].split(".")[1]) == 2


def test_patients_include_dirty_rows_but_never_a_null_id(both: datagen.GeneratedPaths) -> None:
    patients = pl.read_csv(both.patients, try_parse_dates=True)
    email = patients["email"]

    assert patients["patient_id"].null_count() == 0
    assert patients["patient_id"].is_unique().all()
    assert (patients["first_name"] != patients["first_name"].str.strip_chars()).sum() > 0
    assert (email != email.str.to_lowercase()).sum() > 0
    assert email.null_count() > 0
    assert (email == "").sum() > 0
    assert set(patients["sex"]) == {"F", "M", "X"}
    assert patients.schema["registered_at"] == pl.Datetime("us")
    assert (patients["registered_at"].dt.date() >= patients["birth_date"]).all()
    assert patients["registered_at"].max() < datetime(2025, 1, 1)  # type: ignore[operator]


def test_insurance_is_one_consistent_coverage_per_patient(both: datagen.GeneratedPaths) -> None:
    insurance = pl.read_csv(both.insurance, try_parse_dates=True)
    names = insurance.group_by("payer_id").agg(pl.col("payer_name").n_unique()).sort("payer_id")

    assert insurance["patient_id"].is_unique().all()
    assert names["payer_name"].to_list() == [1] * 20
    assert "Payer 07 Health" in set(insurance["payer_name"])
    assert set(insurance["plan"]) == {"bronze", "silver", "gold"}
    assert insurance["coverage_pct"].is_between(0, 1).all()
    assert insurance["valid_from"].max() <= date(2025, 1, 1)  # type: ignore[operator]


@pytest.mark.parametrize("table", ["patients", "insurance"])
def test_parquet_holds_the_same_rows_as_csv(both: datagen.GeneratedPaths, table: str) -> None:
    parquet = pl.read_parquet(both.patients.parent / f"{table}.parquet")
    csv = pl.read_csv(both.patients.parent / f"{table}.csv", schema=parquet.schema)

    assert_frame_equal(csv, parquet)


def test_billing_parquet_holds_the_same_rows_as_csv(both: datagen.GeneratedPaths) -> None:
    assert_frame_equal(billing(both), billing(both, "parquet"))


def test_a_month_without_rows_still_has_a_header(tmp_path: Path) -> None:
    paths = datagen.generate(tmp_path, 2, months=3, fmt="both")
    empty = paths.billing_dir / "2025-03-01"

    assert (empty / "billing.csv").read_text() == (
        "invoice_id,patient_id,amount,billed_at,payer_id,status\n"
    )
    assert pl.read_parquet(empty / "billing.parquet").height == 0


def test_a_failed_write_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> pl.DataFrame:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(datagen, "_billing", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        datagen.generate(tmp_path, 10, fmt="both")

    assert sorted(p.name for p in (tmp_path / "billing" / "2025-01-01").iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 0}, "rows must be between 1 and"),
        ({"months": 0}, "months must be at least 1, got 0"),
        ({"start": "2025-13"}, "start must be a month as YYYY-MM"),
        ({"start": "9999-12", "months": 2}, "past the year 9999"),
    ],
)
def test_api_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    arguments: dict[str, object] = {"rows": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        datagen.generate(tmp_path, **arguments)  # type: ignore[arg-type]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "data.generate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_cli_writes_and_prints_one_summary_line(tmp_path: Path) -> None:
    result = run_cli("--rows", "30", "--out", str(tmp_path), "--months", "2", "--start", "2024-11")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "30 invoices over 2 months (2024-11-01..2024-12-01)" in result.stdout
    assert (tmp_path / "billing" / "2024-12-01" / "billing.csv").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rows", "0"], "rows must be between 1 and 10,000,000,000, got 0"),
        (["--rows", "10", "--months", "0"], "months must be at least 1, got 0"),
        (["--rows", "10", "--start", "2025-1"], "start must be a month as YYYY-MM"),
        (["--rows", "10", "--format", "xlsx"], "invalid choice: 'xlsx'"),
    ],
)
def test_cli_bad_arguments_exit_2_with_a_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("--out", str(tmp_path / "out"), *args)

    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()
