"""Per-chunk validation cost: Pandera against etlkit's ChunkValidator, in ns per row.

Run from the repository root: `python -m benchmarks.validation [--rows N] [--repeat R]`.

Builds a TPC-H lineitem-like frame (8 columns: integer keys, floats with ge/le/in_range checks,
strings with isin checks, a date) and times, over the same rows:

- Pandera validating the whole frame at once (the floor to aim for),
- Pandera validating it in chunks of 100k rows,
- ChunkValidator in chunks of 100k and of 1M rows,
- ChunkValidator in chunks of 100k rows when 0.1% of the rows are bad (the report path).

Each timing is the best of `--repeat` runs, the variants taking turns within each round: the
machines are shared, so interleaving and the minimum give the most stable comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable

import pandera.polars as pdp
import polars as pl

from etlkit.checks.validation import ChunkValidator

SHIPMODES = ["AIR", "FOB", "MAIL", "RAIL", "REG AIR", "SHIP", "TRUCK"]


class Lineitem(pdp.DataFrameModel):
    """A slice of TPC-H lineitem with the checks a real contract would have."""

    l_orderkey: int = pdp.Field(ge=0)
    l_partkey: int = pdp.Field(ge=0)
    l_quantity: float = pdp.Field(ge=1, le=50)
    l_extendedprice: float = pdp.Field(ge=0)
    l_discount: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 0.1})
    l_returnflag: str = pdp.Field(isin=["A", "N", "R"])
    l_shipmode: str = pdp.Field(isin=SHIPMODES)
    l_shipdate: dt.date = pdp.Field(ge=dt.date(1992, 1, 1))


def lineitem(rows: int) -> pl.DataFrame:
    """A deterministic lineitem-like frame of `rows` rows that passes `Lineitem`."""
    i = pl.int_range(rows, dtype=pl.Int64)
    return pl.select(
        l_orderkey=i // 4 + 1,
        l_partkey=(i * 7919) % 200_000 + 1,
        l_quantity=((i * 31) % 50 + 1).cast(pl.Float64),
        l_extendedprice=((i * 977) % 10_000_000).cast(pl.Float64) / 100,
        l_discount=((i * 13) % 11).cast(pl.Float64) / 100,
        l_returnflag=pl.lit(pl.Series(["A", "N", "R"])).gather(i % 3),
        l_shipmode=pl.lit(pl.Series(SHIPMODES)).gather((i * 3) % 7),
        l_shipdate=pl.lit(dt.date(1992, 1, 2)) + pl.duration(days=(i * 17) % 2500),
    )


def dirty(df: pl.DataFrame, every: int = 1000) -> pl.DataFrame:
    """`df` with one row in `every` broken: negative quantity and an unknown ship mode."""
    bad = pl.int_range(pl.len()) % every == 0
    return df.with_columns(
        l_quantity=pl.when(bad).then(-1.0).otherwise(pl.col("l_quantity")),
        l_shipmode=pl.when(bad).then(pl.lit("CAMEL")).otherwise(pl.col("l_shipmode")),
    )


def best(repeat: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """The fastest of `repeat` rounds of every run, in seconds; runs take turns in a round."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(found) for name, found in times.items()}


def chunks(df: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    return [df.slice(offset, size) for offset in range(0, df.height, size)]


def pandera_chunks(parts: list[pl.DataFrame]) -> None:
    for part in parts:
        Lineitem.validate(part, lazy=True)


def validator_chunks(validator: ChunkValidator, parts: list[pl.DataFrame]) -> int:
    failures = 0
    for part in parts:
        failures += validator.check(part).failures.height
    return failures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6_000_000, help="rows (default: 6,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (default: 3)")
    args = parser.parse_args(argv)
    rows, repeat = args.rows, args.repeat

    df = lineitem(rows)
    bad = dirty(df)
    start = time.perf_counter()
    validator = ChunkValidator(Lineitem)
    compile_ms = (time.perf_counter() - start) * 1e3
    assert validator.check(df.head(1000)).ok
    assert validator_chunks(validator, chunks(bad, 100_000)) == 2 * len(range(0, rows, 1000))

    results = best(
        repeat,
        {
            "pandera, whole frame": lambda: Lineitem.validate(df, lazy=True),
            "pandera, 100k-row chunks": lambda: pandera_chunks(chunks(df, 100_000)),
            "ChunkValidator, 100k-row chunks": lambda: validator_chunks(
                validator, chunks(df, 100_000)
            ),
            "ChunkValidator, 1M-row chunks": lambda: validator_chunks(
                validator, chunks(df, 1_000_000)
            ),
            "ChunkValidator, 100k chunks, 0.1% bad": lambda: validator_chunks(
                validator, chunks(bad, 100_000)
            ),
        },
    )
    floor = results["pandera, whole frame"]
    print(f"{rows:,} rows x {df.width} columns; ChunkValidator compiled in {compile_ms:.0f} ms")
    print(f"{'':40} {'ns/row':>8} {'vs whole':>9}")
    for name, seconds in results.items():
        print(f"{name:40} {seconds / rows * 1e9:8.1f} {seconds / floor:8.2f}x")


if __name__ == "__main__":
    main()
