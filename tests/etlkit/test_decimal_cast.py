"""A decimal cast to float64 (`cast_array`): the floats polars' cast gives, bit for bit, on the
pyarrow path decimals of up to 15 digits take and on the polars path of wider ones."""

from __future__ import annotations

import random
import struct
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pytest

from etlkit.model.schema import _unscaled_over_power, cast_array


def _bits(values: list[float | None]) -> list[bytes | None]:
    """Each float's IEEE bytes: -0.0 and 0.0 differ, as would any last bit."""
    return [None if v is None else struct.pack("<d", v) for v in values]


def _polars(array: pa.Array) -> list[float | None]:
    """The cast before the pyarrow path: polars' own."""
    return pl.Series(values=array).cast(pl.Float64).to_list()


def _integers(rng: random.Random, precision: int, count: int) -> list[int | None]:
    """Unscaled integers over the whole range `precision` digits hold, the edges, values around
    2**53 (where a float64 stops holding every integer) and nulls."""
    top = 10**precision - 1
    edges = [0, 1, -1, top, -top, top // 2, -(top // 3)]
    edges += [s * (2**53 + d) for s in (1, -1) for d in (-1, 0, 1, 3) if 2**53 + d <= top]
    values: list[int | None] = [v for v in edges if abs(v) <= top]
    for _ in range(count):
        digits = rng.randint(1, precision)
        values.append(rng.choice((1, -1)) * rng.randint(0, 10**digits - 1))
        if rng.random() < 0.05:
            values.append(None)
    return values


def _decimals(values: list[int | None], precision: int, scale: int) -> pa.Array:
    """Decimals whose unscaled integers are `values`, as a Parquet file's bytes hold them."""
    integers = pa.array(values, type=pa.decimal128(precision, 0))
    kind = pa.decimal128(precision, scale)
    return pa.Array.from_buffers(kind, len(integers), integers.buffers(), integers.null_count)


@pytest.mark.parametrize("precision", [1, 2, 5, 9, 12, 14, 15])
def test_decimals_of_up_to_15_digits_cast_bit_for_bit_as_polars_does(precision: int) -> None:
    rng = random.Random(precision)
    for scale in sorted({0, 1, 2, precision // 2, precision} - {precision + 1, precision + 2}):
        array = _decimals(_integers(rng, precision, 3000), precision, scale)
        expected = _bits(_polars(array))
        assert _bits(_unscaled_over_power(array).to_pylist()) == expected, (precision, scale)
        assert _bits(cast_array(array, pa.float64()).to_pylist()) == expected
        # the integer is a float exactly, divided by the power of ten: one rounding
        plain = [
            None if v is None else float(v.scaleb(scale)) / 10.0**scale for v in array.to_pylist()
        ]
        assert _bits(plain) == expected


def test_a_slice_of_decimals_casts_its_own_values_and_nulls() -> None:
    rng = random.Random(7)
    array = _decimals(_integers(rng, 15, 500), 15, 2)
    for start, length in ((0, 10), (3, 200), (101, 0), (250, 260)):
        part = array.slice(start, length)
        got = cast_array(part, pa.float64())
        assert got.null_count == part.null_count
        assert _bits(got.to_pylist()) == _bits(_polars(part))


@pytest.mark.parametrize("precision", [16, 18, 30])
def test_wider_decimals_keep_the_polars_cast(precision: int) -> None:
    """Past 15 digits an integer may not be a float64 exactly, and dividing it would round
    twice (9999999999999999 / 10 would give 1e15): polars casts those."""
    array = _decimals(_integers(random.Random(precision), precision, 2000), precision, 1)
    assert _bits(cast_array(array, pa.float64()).to_pylist()) == _bits(_polars(array))


def test_chunked_arrays_and_the_widest_decimals_keep_the_polars_cast() -> None:
    wide = pa.array(
        [Decimal("12345678901234567890123.45"), None, Decimal("-0.01")], type=pa.decimal128(30, 2)
    )
    assert _bits(cast_array(wide, pa.float64()).to_pylist()) == _bits(_polars(wide))
    chunked = pa.chunked_array([_decimals([1, 2, None, 32986 * 100 + 52], 15, 2)])
    assert cast_array(chunked, pa.float64()).to_pylist() == [0.01, 0.02, None, 32986.52]
