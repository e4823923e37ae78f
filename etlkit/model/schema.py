"""Pandera models as data contracts: column types, Arrow projection, edge compatibility.

A node declares a `pandera.polars.DataFrameModel`; this module reads its columns once and turns
them into what the engine needs: the polars and Arrow types of each column (a source reads only
these columns, so the model is its projection) and the checks of one edge of the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Final, cast

import polars as pl
import pyarrow as pa

from etlkit.errors import quoted

if TYPE_CHECKING:
    import pandera.polars as pdp
    from polars._typing import PolarsDataType

    Model = type[pdp.DataFrameModel]
else:
    Model = type


@dataclass(frozen=True)
class ColumnSpec:
    """One declared column: its name, polars dtype and whether it may hold nulls."""

    name: str
    dtype: pl.DataType
    nullable: bool
    coerce: bool


@cache
def columns(model: Model) -> tuple[ColumnSpec, ...]:
    """The declared columns of `model`, in declaration order."""
    schema = model.to_schema()
    specs = []
    for name, column in schema.columns.items():
        dtype = column.dtype.type if column.dtype is not None else pl.Null()
        if isinstance(dtype, type):  # a class such as pl.Int64 rather than an instance
            dtype = dtype()
        specs.append(
            ColumnSpec(
                name=str(name),
                dtype=dtype,
                nullable=bool(column.nullable),
                coerce=bool(column.coerce or schema.coerce),
            )
        )
    return tuple(specs)


@cache
def unique_sets(model: Model) -> tuple[tuple[str, ...], ...]:
    """Column combinations `model` declares unique: `unique=True` fields and `Config.unique`
    (one name, a list of names, or a list of such lists, as Pandera reads it)."""
    schema = model.to_schema()
    sets = [(str(name),) for name, column in schema.columns.items() if column.unique]
    combined = schema.unique or []
    if isinstance(combined, str) or all(isinstance(c, str) for c in combined):
        combined = [combined]
    sets.extend(tuple([c] if isinstance(c, str) else c) for c in combined if c)
    return tuple(sets)


@cache
def _regex_selectors(model: Model) -> dict[str, str]:
    """The regex columns of `model`: name to the pattern Pandera selects columns with."""
    schema = model.to_schema()
    return {
        str(name): str(getattr(column, "selector", None) or name)
        for name, column in schema.columns.items()
        if column.regex
    }


def _matching(pattern: str, names: Sequence[str]) -> list[str]:
    """The names a regex column's pattern (anchored by Pandera) selects, as polars selects
    them for Pandera."""
    frame = pl.LazyFrame(schema=dict.fromkeys(names, pl.Null))
    return frame.select(pl.col(pattern)).collect_schema().names()


def matched(model: Model, column: str, names: Sequence[str]) -> list[str]:
    """The names in `names` that `model`'s `column` stands for: itself, or for a regex column
    every name its pattern matches (in the frame's order)."""
    pattern = _regex_selectors(model).get(column)
    return [column] if pattern is None else _matching(pattern, names)


def project(model: Model, names: Sequence[str]) -> list[str]:
    """The columns `model` reads from a frame holding `names`: each column by its name, and
    for a regex column every name its pattern matches."""
    return list(dict.fromkeys(n for c in columns(model) for n in matched(model, c.name, names)))


def unique_sets_in(model: Model, names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """`unique_sets(model)` over a frame holding `names`: a regex column's key becomes one
    key per column it matches, each unique on its own as Pandera checks it."""
    regex = _regex_selectors(model)
    if not regex:
        return unique_sets(model)
    return tuple(
        key
        for found in unique_sets(model)
        for key in (
            [(n,) for n in _matching(regex[found[0]], names)]
            if len(found) == 1 and found[0] in regex
            else [found]
        )
    )


def has_regex(model: Model) -> bool:
    """Whether `model` declares a regex column, whose output columns depend on the data."""
    return bool(_regex_selectors(model))


def polars_schema_in(model: Model, names: Sequence[str]) -> pl.Schema:
    """`polars_schema(model)` over a frame holding `names`: a regex column gives an entry for
    each name it matches (none when it matches none), in the frame's order."""
    return pl.Schema({n: c.dtype for c in columns(model) for n in matched(model, c.name, names)})


def arrow_schema_in(model: Model, names: Sequence[str]) -> pa.Schema:
    """`arrow_schema(model)` over a frame holding `names`, as `polars_schema_in` resolves
    regex columns."""
    return pa.schema(
        [f.with_name(n) for f in arrow_schema(model) for n in matched(model, f.name, names)]
    )


def column_names(model: Model) -> list[str]:
    """The names of the columns `model` declares."""
    return [c.name for c in columns(model)]


def polars_schema(model: Model) -> pl.Schema:
    """The polars schema `model` declares."""
    return pl.Schema({c.name: c.dtype for c in columns(model)})


@cache
def arrow_schema(model: Model) -> pa.Schema:
    """The Arrow schema `model` declares (strings as `large_string`, as polars exports them)."""
    empty = pl.DataFrame(schema=polars_schema(model)).to_arrow()
    fields = [
        field.with_nullable(spec.nullable)
        for field, spec in zip(empty.schema, columns(model), strict=True)
    ]
    return pa.schema(fields)


def to_polars(batch: pa.RecordBatch) -> pl.DataFrame:
    """A record batch as a polars DataFrame, without copying where polars allows.

    String columns are first cast to Arrow's string view by pyarrow, a layout polars takes as
    it is: cheaper than polars converting offsets-and-data strings itself.
    """
    strings = [
        i
        for i, f in enumerate(batch.schema)
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    if strings:
        columns, schema = list(batch.columns), batch.schema  # fields keep their metadata
        for i in strings:
            columns[i] = columns[i].cast(pa.string_view())
            schema = schema.set(i, schema.field(i).with_type(pa.string_view()))
        batch = pa.RecordBatch.from_arrays(columns, schema=schema)
    # one batch is one chunk per column already: rechunking it only costs a call
    return cast("pl.DataFrame", pl.from_arrow(batch, rechunk=False))


def from_polars(frame: pl.DataFrame) -> list[pa.RecordBatch]:
    """A polars frame as record batches, without copying its strings where every column allows.

    Strings leave polars as Arrow string views, the layout polars holds them in (exporting
    `large_string` copies every string). Only a frame whose text is in plain `String` columns
    is exported so: polars would also export binary, categorical and nested text columns as
    views, which not every consumer reads; such a frame is exported as `large_string`.
    """
    batches: list[pa.RecordBatch] = frame.to_arrow(compat_level=_level(frame)).to_batches()
    return batches


def exported_schema(frame: pl.DataFrame) -> pa.Schema:
    """The Arrow schema of `from_polars(frame)`, without exporting any row."""
    schema: pa.Schema = frame.head(0).to_arrow(compat_level=_level(frame)).schema
    return schema


def _level(frame: pl.DataFrame) -> pl.CompatLevel:
    views = all(not _nested_text(dtype) for dtype in frame.schema.values())
    return pl.CompatLevel.newest() if views else pl.CompatLevel.oldest()


def _nested_text(dtype: PolarsDataType) -> bool:
    """Whether a column holds text polars exports as views inside another type (a list, a
    struct, a category), or binary: exported as views, not every consumer reads them."""
    if dtype == pl.String or not (dtype.is_nested() or dtype in _VIEW_TYPES):
        return False
    if isinstance(dtype, pl.List | pl.Array):
        return dtype.inner == pl.String or _nested_text(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(f.dtype == pl.String or _nested_text(f.dtype) for f in dtype.fields)
    return True


_VIEW_TYPES: Final = (pl.Binary, pl.Categorical, pl.Enum)


def plain_strings(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with its string-view columns as `large_string`, as polars exported text before
    string views, for consumers that do not read views."""
    views = [i for i, f in enumerate(batch.schema) if pa.types.is_string_view(f.type)]
    if not views:
        return batch
    return batch.cast(plain_schema(batch.schema))


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with its string-view columns as `large_string` (see `plain_strings`)."""
    for i, field in enumerate(schema):
        if pa.types.is_string_view(field.type):
            schema = schema.set(i, field.with_type(pa.large_string()))
    return schema


def cast_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    """`array` cast to `target` by pyarrow's safe cast, except a decimal to `float64`, which
    is divided as polars divides it: the decimal's integer by 10**scale, rounding once as DuckDB
    does, where pyarrow's cast multiplies by an inexact 10**-scale (32986.52 becomes
    32986.520000000004). Up to 15 digits pyarrow divides (`_unscaled_over_power`), past them
    polars casts.
    A streamed Parquet file then holds the floats its reference is validated with and its SQL
    consumers read, so both give one verdict.

    Raises:
        pyarrow.ArrowInvalid: a value the cast would change (pyarrow's safe cast).
    """
    if pa.types.is_decimal128(array.type) and pa.types.is_float64(target):
        kind = array.type
        exact = 0 <= kind.scale <= kind.precision <= _EXACT_PRECISION
        if exact and isinstance(array, pa.Array):
            return _unscaled_over_power(array)
        return pl.Series(values=array).cast(pl.Float64).to_arrow()
    return array.cast(target, safe=True)  # pyarrow.compute's cast, imported on first use


#: Decimals of at most this many digits hold integers below 10**15 < 2**53, each exactly a
#: float64, and scales whose power of ten is an exact float64 (10**22 is the last): their
#: quotient rounds once. Wider integers would round twice, where polars rounds once.
_EXACT_PRECISION: Final = 15


def _unscaled_over_power(array: pa.Array) -> pa.Array:
    """A decimal128 array of at most `_EXACT_PRECISION` digits as float64: the same bytes read
    as decimals of scale 0 are the integers, converted exactly, then divided by 10**scale, so
    each value is the quotient correctly rounded, bit for bit what polars' cast gives, at a
    third of its CPU."""
    import pyarrow.compute as pc  # loaded by the first cast, as `array.cast` loads it

    kind = array.type
    unscaled = pa.Array.from_buffers(
        pa.decimal128(kind.precision, 0),
        len(array),
        array.buffers(),
        null_count=array.null_count,
        offset=array.offset,
    )
    floats = unscaled.cast(pa.float64())
    if kind.scale == 0:
        return floats
    result: pa.Array = pc.divide(floats, pa.scalar(10.0**kind.scale, pa.float64()))
    return result


def model_name(model: Model | None) -> str:
    """A model's class name, or `untyped` when a node declares none."""
    return model.__name__ if model is not None else "untyped"


def _compatible(produced: pl.DataType, expected: pl.DataType, coerce: bool) -> bool:
    if produced == expected:
        return True
    if coerce:
        return produced.is_numeric() == expected.is_numeric() or expected == pl.String
    return False


def edge_problems(upstream: Model, downstream: Model) -> list[str]:
    """What `downstream` needs that `upstream` does not provide: missing columns, wrong dtypes.

    An empty list means the edge is compatible. Extra upstream columns are fine.
    """
    produced = {c.name: c for c in columns(upstream)}
    problems: list[str] = []
    missing = [c.name for c in columns(downstream) if c.name not in produced]
    if missing:
        has = quoted(sorted(produced))
        problems.append(f"missing column(s) {quoted(missing)}; {upstream.__name__} has {has}")
    for spec in columns(downstream):
        got = produced.get(spec.name)
        if got is not None and not _compatible(got.dtype, spec.dtype, spec.coerce):
            problems.append(
                f"column '{spec.name}' is {got.dtype} in {upstream.__name__} "
                f"but {downstream.__name__} expects {spec.dtype}"
            )
    return problems
