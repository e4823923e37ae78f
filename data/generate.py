"""Deterministic sample data for the hospital's monthly financial report.

Usage::

    python -m data.generate --rows N --out DIR [--seed S] [--format csv|parquet|both]
                            [--months M] [--start 2025-01]

Writes, under DIR:

- ``patients.csv``: patient_id, first_name, last_name, birth_date, sex, city, email, registered_at
- ``insurance.csv``: patient_id, payer_id, payer_name, plan, coverage_pct, valid_from
- ``billing/{YYYY-MM-01}/billing.csv``: invoice_id, patient_id, amount, billed_at, payer_id, status

and with ``--format parquet`` or ``both`` the same tables as ``.parquet`` next to them.

Every value is a pure function of the seed, a column and a row's index (a counter-based hash,
computed column-wise in polars), so the same arguments always give byte-identical files, whatever
the chunk size. Each file is generated and written in chunks of at most ``CHUNK_ROWS`` rows, so
memory stays bounded, and appears atomically (written under a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Final, Literal, get_args

import polars as pl

Format = Literal["csv", "parquet", "both"]

CHUNK_ROWS: Final = 1_000_000
PAYERS: Final = 20
MIN_PATIENTS: Final = 1_000
MAX_ROWS: Final = 10_000_000_000

_FIRST_NAMES: Final = (
    "Ada", "Alan", "Amara", "Ana", "Anna", "Ben", "Carlos", "Chen", "Chloe", "David",
    "Elena", "Emma", "Fatima", "Grace", "Hana", "Ines", "Ivan", "James", "Jin", "Kofi",
    "Laura", "Leila", "Liam", "Lucas", "Maria", "Mateo", "Mei", "Noah", "Nora", "Olga",
    "Omar", "Paul", "Priya", "Rosa", "Sam", "Sara", "Tariq", "Yuki", "Zoe", "Zofia",
)  # fmt: skip
_LAST_NAMES: Final = (
    "Adams", "Ahmed", "Brown", "Costa", "Diaz", "Dubois", "Evans", "Fischer", "Garcia", "Gupta",
    "Hansen", "Ito", "Jensen", "Khan", "Kim", "Kowalski", "Lee", "Lopez", "Martin", "Meyer",
    "Mensah", "Moreau", "Nguyen", "Novak", "O'Brien", "Okafor", "Patel", "Rossi", "Santos", "Sato",
    "Schmidt", "Silva", "Smith", "Suzuki", "Taylor", "Tanaka", "Walker", "Wang", "Weber", "Young",
)  # fmt: skip
_CITIES: Final = (
    "Springfield", "Riverside", "Fairview", "Franklin", "Greenville", "Bristol", "Clinton",
    "Madison", "Georgetown", "Salem", "Ashland", "Oakland", "Burlington", "Milton", "Newport",
    "Dayton", "Lexington", "Arlington", "Winchester", "Kingston",
)  # fmt: skip
_DOMAINS: Final = ("example.org", "example.com", "mail.example.net")
_SEXES: Final = {"F": 49, "M": 49, "X": 2}
_STATUSES: Final = {"paid": 75, "pending": 17, "denied": 8}
_PLANS: Final = {"bronze": 40, "silver": 40, "gold": 20}
_PLAN_COVERAGE: Final = {"bronze": 60, "silver": 70, "gold": 80}  # percent, then -5..+5

_START_RE: Final = re.compile(r"(\d{4})-(\d{2})")
_EPOCH: Final = datetime(1970, 1, 1)
_DAY_S: Final = 86_400
_MASK32: Final = 0xFFFF_FFFF
_MASK64: Final = 0xFFFF_FFFF_FFFF_FFFF

# One independent random stream per drawn column; changing a number changes the data.
_FIRST, _LAST, _SEX, _CITY, _DOMAIN, _QUIRK, _BIRTH, _REGISTERED = range(1, 9)
_PAYER, _PLAN, _COVERAGE, _VALID_FROM = range(11, 15)
_BILL_PATIENT, _AMOUNT_KIND, _AMOUNT, _STATUS, _BILLED_AT = range(21, 26)


@dataclass(frozen=True)
class GeneratedPaths:
    """Where `generate` wrote its files.

    `patients` and `insurance` are the CSV files, or the Parquet files when `fmt` is "parquet";
    with "both", the Parquet files sit next to the CSV ones. Month `ds` holds
    ``billing_dir / ds / "billing.csv"`` (and/or ``billing.parquet``).
    """

    patients: Path
    insurance: Path
    billing_dir: Path
    months: tuple[str, ...]
    fmt: Format


def generate(
    out: Path,
    rows: int,
    *,
    seed: int = 42,
    months: int = 3,
    start: str = "2025-01",
    fmt: Format = "csv",
) -> GeneratedPaths:
    """Writes the sample data sets under `out`, `rows` billing rows in total.

    There are ``max(1000, rows // 10)`` patients, each with one insurance coverage. Billing rows are
    split evenly over `months` months from `start` (YYYY-MM), the earlier months taking the
    remainder, and each invoice's payer is its patient's payer.

    Raises:
        ValueError: an argument is out of range; the message names it and what is accepted.
    """
    month_starts = _check(out, rows, months, start, fmt)
    patients = max(MIN_PATIENTS, rows // 10)
    start_dt = month_starts[0]
    out.mkdir(parents=True, exist_ok=True)

    _write(
        (_patients(ids, seed, start_dt) for ids in _chunks(1, patients + 1)),
        out / "patients",
        fmt,
        datetime_format="%Y-%m-%dT%H:%M:%S",
    )
    _write(
        (_insurance(ids, seed, start_dt) for ids in _chunks(1, patients + 1)),
        out / "insurance",
        fmt,
        float_precision=2,
    )

    base, extra = divmod(rows, months)
    first = 0
    for k, (month_start, month_end) in enumerate(pairwise(month_starts)):
        count = base + (k < extra)
        stem = out / "billing" / f"{month_start:%Y-%m-%d}" / "billing"
        stem.parent.mkdir(parents=True, exist_ok=True)
        _write(
            (
                _billing(ids, seed, patients, month_start, month_end)
                for ids in _chunks(first, first + count)
            ),
            stem,
            fmt,
            datetime_format="%Y-%m-%d %H:%M:%S",
            float_precision=2,
        )
        first += count

    suffix = ".parquet" if fmt == "parquet" else ".csv"
    return GeneratedPaths(
        patients=out / f"patients{suffix}",
        insurance=out / f"insurance{suffix}",
        billing_dir=out / "billing",
        months=tuple(f"{m:%Y-%m-%d}" for m in month_starts[:-1]),
        fmt=fmt,
    )


def _check(out: Path, rows: int, months: int, start: str, fmt: str) -> list[datetime]:
    """Validates the arguments; returns the first day of each month plus the one after the last."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a directory, but {str(out)!r} is a file")
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be between 1 and {MAX_ROWS:,}, got {rows:,}")
    if months < 1:
        raise ValueError(f"months must be at least 1, got {months}")
    if fmt not in get_args(Format):
        raise ValueError(f"fmt must be one of {', '.join(get_args(Format))}, got {fmt!r}")
    match = _START_RE.fullmatch(start)
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1900:
        raise ValueError(
            f"start must be a month as YYYY-MM with a year from 1900 (for example 2025-01), "
            f"got {start!r}"
        )
    first = int(match[1]) * 12 + int(match[2]) - 1
    if (first + months) // 12 > 9999:
        raise ValueError(f"start {start} plus {months} months goes past the year 9999")
    return [datetime((first + k) // 12, (first + k) % 12 + 1, 1) for k in range(months + 1)]


# --- generation: one chunk of rows from a Series of row ids ---------------------------------------


def _chunks(lo: int, hi: int) -> Iterator[pl.Series]:
    """Ids lo..hi-1 as Series of at most CHUNK_ROWS; a single empty Series when lo == hi."""
    for chunk_lo in range(lo, hi, CHUNK_ROWS) or [lo]:
        yield pl.int_range(chunk_lo, min(chunk_lo + CHUNK_ROWS, hi), dtype=pl.UInt64, eager=True)


def _patients(pid: pl.Series, seed: int, start: datetime) -> pl.DataFrame:
    birth, registered = _birth_and_registration(pid, seed, start)
    first = _choice(_draw(pid, seed, _FIRST), _FIRST_NAMES)
    last = _choice(_draw(pid, seed, _LAST), _LAST_NAMES)
    # 0: whitespace around the names, 1: mixed-case email, 2-4: null email, 5: empty email
    quirk = _below(_draw(pid, seed, _QUIRK), 100)
    frame = pl.DataFrame(
        {
            "patient_id": pid.cast(pl.Int64),
            "first_name": first,
            "last_name": last,
            "birth_date": birth,
            "sex": _choice(_draw(pid, seed, _SEX), _weighted(_SEXES)),
            "city": _choice(_draw(pid, seed, _CITY), _CITIES),
            "domain": _choice(_draw(pid, seed, _DOMAIN), _DOMAINS),
            "registered_at": registered,
            "quirk": quirk,
        }
    )
    q = pl.col("quirk")
    email = pl.concat_str(
        "first_name",
        pl.lit("."),
        pl.col("last_name").str.replace_all("'", ""),
        pl.col("patient_id").cast(pl.String),
        pl.lit("@"),
        pl.when(q == 1).then(pl.col("domain").str.to_uppercase()).otherwise("domain"),
    )
    return frame.select(
        "patient_id",
        *(
            pl.when(q == 0)
            .then(pl.concat_str(pl.lit(" "), name, pl.lit("  ")))
            .otherwise(name)
            .alias(name)
            for name in ("first_name", "last_name")
        ),
        "birth_date",
        "sex",
        "city",
        pl.when(q == 1)
        .then(email)  # mixed case: "Ana.Lopez12@EXAMPLE.ORG"
        .when(q.is_between(2, 4))
        .then(pl.lit(None, dtype=pl.String))
        .when(q == 5)
        .then(pl.lit(""))
        .otherwise(email.str.to_lowercase())
        .alias("email"),
        "registered_at",
    )


def _birth_and_registration(
    pid: pl.Series, seed: int, start: datetime
) -> tuple[pl.Series, pl.Series]:
    """Birth dates 1 to 90 years before `start`; registration after birth, in the last 10 years."""
    start_s = _seconds(start)
    birth_lo = _days(start.replace(year=start.year - 90))
    birth_hi = _days(start.replace(year=start.year - 1))
    birth_day = birth_lo + _below(_draw(pid, seed, _BIRTH), birth_hi - birth_lo).cast(pl.Int64)
    reg_lo = (birth_day * _DAY_S).clip(lower_bound=_seconds(start.replace(year=start.year - 10)))
    span = (start_s - reg_lo).cast(pl.UInt64)
    reg_s = reg_lo + _below(_draw(pid, seed, _REGISTERED), span).cast(pl.Int64)
    return (
        birth_day.cast(pl.Int32).cast(pl.Date).alias("birth_date"),
        (reg_s * 1_000_000).cast(pl.Datetime("us")).alias("registered_at"),
    )


def _payer_ids(pid: pl.Series, seed: int) -> pl.Series:
    return (_below(_draw(pid, seed, _PAYER), PAYERS) + 1).cast(pl.Int64)


def _insurance(pid: pl.Series, seed: int, start: datetime) -> pl.DataFrame:
    """One coverage per patient, valid from a day between registration and `start`."""
    _, registered = _birth_and_registration(pid, seed, start)
    reg_day = registered.dt.date().cast(pl.Int32).cast(pl.Int64)
    span = (_days(start) - reg_day).cast(pl.UInt64)
    valid_from = reg_day + _below(_draw(pid, seed, _VALID_FROM), span).cast(pl.Int64)
    payer = _payer_ids(pid, seed)
    plan = _choice(_draw(pid, seed, _PLAN), _weighted(_PLANS))
    names = pl.Series([f"Payer {p:02d} Health" for p in range(1, PAYERS + 1)])
    coverage = plan.replace_strict(_PLAN_COVERAGE, return_dtype=pl.Int64) - 5
    coverage += _below(_draw(pid, seed, _COVERAGE), 11).cast(pl.Int64)
    return pl.DataFrame(
        {
            "patient_id": pid.cast(pl.Int64),
            "payer_id": payer,
            "payer_name": names.gather(payer - 1),
            "plan": plan,
            "coverage_pct": coverage / 100,
            "valid_from": valid_from.cast(pl.Int32).cast(pl.Date),
        }
    )


def _billing(
    index: pl.Series, seed: int, patients: int, month_start: datetime, month_end: datetime
) -> pl.DataFrame:
    """Invoices `index` (0-based, global over all months), billed in [month_start, month_end)."""
    pid = _below(_draw(index, seed, _BILL_PATIENT), patients) + 1
    # 0.5% written off to 0.00, 95% from 15.00 to 499.99, the rest from 500.00 to 24,999.99
    kind = _below(_draw(index, seed, _AMOUNT_KIND), 1000)
    value = _draw(index, seed, _AMOUNT)
    cents = (
        pl.DataFrame(
            {"kind": kind, "small": _below(value, 48_500), "large": _below(value, 2_450_000)}
        )
        .select(
            pl.when(pl.col("kind") < 5)
            .then(0)
            .when(pl.col("kind") < 955)
            .then(1_500 + pl.col("small"))
            .otherwise(50_000 + pl.col("large"))
        )
        .to_series()
    )
    month_s = int((month_end - month_start).total_seconds())
    billed_s = _seconds(month_start) + _below(_draw(index, seed, _BILLED_AT), month_s).cast(
        pl.Int64
    )
    return pl.DataFrame(
        {
            "invoice_id": (index + 1).cast(pl.Int64),
            "patient_id": pid.cast(pl.Int64),
            "amount": cents.cast(pl.Float64) / 100,
            "billed_at": (billed_s * 1_000_000).cast(pl.Datetime("us")),
            "payer_id": _payer_ids(pid, seed),
            "status": _choice(_draw(index, seed, _STATUS), _weighted(_STATUSES)),
        }
    )


# --- randomness: a counter-based hash, so a value depends only on (seed, column, row) -------------


def _draw(index: pl.Series, seed: int, stream: int) -> pl.Series:
    """A uniform 32-bit value (as UInt64) per index: two keyed rounds of a 32-bit integer hash."""
    key = _splitmix64(_splitmix64(seed & _MASK64) ^ stream)
    x = _mix32((index & _MASK32) ^ (key & _MASK32))
    return _mix32(x ^ (index // 2**32) ^ (key >> 32))


def _mix32(x: pl.Series) -> pl.Series:
    # "lowbias32" by Chris Wellons; every product stays below 2**64, so nothing overflows.
    x = x ^ (x // 2**16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x // 2**15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x // 2**16)


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _below(h: pl.Series, n: int | pl.Series) -> pl.Series:
    """Maps 32-bit draws onto 0..n-1 (n < 2**32) by multiply-shift."""
    return (h * n) // 2**32


def _choice(h: pl.Series, values: Iterable[str]) -> pl.Series:
    table = pl.Series(list(values), dtype=pl.String)
    return table.gather(_below(h, len(table)))


def _weighted(weights: dict[str, int]) -> list[str]:
    return [value for value, weight in weights.items() for _ in range(weight)]


def _seconds(moment: datetime) -> int:
    return int((moment - _EPOCH).total_seconds())


def _days(moment: datetime) -> int:
    return (moment.date() - date(1970, 1, 1)).days


# --- output ---------------------------------------------------------------------------------------


def _write(
    chunks: Iterable[pl.DataFrame],
    stem: Path,
    fmt: Format,
    *,
    datetime_format: str | None = None,
    float_precision: int | None = None,
) -> None:
    """Writes the chunks to ``stem.csv`` and/or ``stem.parquet``, each file atomically."""
    with ExitStack() as stack:
        csv_file = None
        parquet_path = None
        parquet_writer = None
        if fmt in ("csv", "both"):
            csv_path = stack.enter_context(_atomic(stem.with_name(f"{stem.name}.csv")))
            csv_file = stack.enter_context(csv_path.open("wb"))
        if fmt in ("parquet", "both"):
            import pyarrow.parquet as pq  # only Parquet output needs it

            parquet_path = stack.enter_context(_atomic(stem.with_name(f"{stem.name}.parquet")))
        for n, chunk in enumerate(chunks):
            if csv_file is not None:
                chunk.write_csv(
                    csv_file,
                    include_header=n == 0,
                    datetime_format=datetime_format,
                    date_format="%Y-%m-%d",
                    float_precision=float_precision,
                )
            if parquet_path is not None:
                table = chunk.to_arrow()
                if parquet_writer is None:
                    parquet_writer = pq.ParquetWriter(
                        parquet_path, table.schema, compression="zstd"
                    )
                    stack.callback(parquet_writer.close)
                parquet_writer.write_table(table)


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yields a temporary path next to `path`; renames it to `path` if the block succeeds."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)  # os.replace: atomic within a directory
    finally:
        tmp.unlink(missing_ok=True)


# --- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; argument errors exit with code 2 (through argparse)."""
    parser = argparse.ArgumentParser(
        prog="python -m data.generate",
        description="Write deterministic sample data for the monthly financial report.",
    )
    parser.add_argument("--rows", type=int, required=True, help="billing rows over all months")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument(
        "--format", choices=get_args(Format), default="csv", dest="fmt", help="(default: csv)"
    )
    parser.add_argument("--months", type=int, default=3, help="months of billing (default: 3)")
    parser.add_argument(
        "--start", default="2025-01", help="first month, YYYY-MM (default: 2025-01)"
    )
    args = parser.parse_args(argv)
    try:
        _check(args.out, args.rows, args.months, args.start, args.fmt)
    except ValueError as exc:
        parser.error(str(exc))

    began = time.perf_counter()
    paths = generate(
        args.out, args.rows, seed=args.seed, months=args.months, start=args.start, fmt=args.fmt
    )
    print(
        f"wrote {args.rows:,} invoices over {len(paths.months)} months "
        f"({paths.months[0]}..{paths.months[-1]}), {max(MIN_PATIENTS, args.rows // 10):,} patients "
        f"and their insurance as {args.fmt} to {args.out} in {time.perf_counter() - began:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
