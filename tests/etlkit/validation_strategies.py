"""Hypothesis strategies for the differential validation suite: random Pandera models and frames.

A model is drawn as a `ModelSpec` (a readable dataclass, which is what Hypothesis prints for a
falsifying example) and built into a `pdp.DataFrameModel` class with `ModelSpec.model()`. Every
column has a `Kind`: a polars dtype with a pool of interesting values (boundaries, nulls, NaN,
inf, -0.0, sub-microsecond instants), from which check thresholds are drawn too, so values land
on, just inside and just outside every bound.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any

import pandera.polars as pdp
import polars as pl
from hypothesis import strategies as st

INF = math.inf
UTC = dt.UTC
NS_2020 = 1_577_836_800_000_000_000  # 2020-01-01T00:00:00 in nanoseconds
NOON_NS = 43_200_000_000_000


@dataclass(frozen=True)
class Kind:
    """A column dtype: its annotation in a model, and a pool of values worth checking.

    `stored` is the dtype the pool is written in before the cast to `dtype`: instants finer than
    Python's microseconds are written as integers.
    """

    name: str
    annotation: Any
    dtype: pl.DataType
    pool: tuple[Any, ...]
    ordered: bool = True
    text: bool = False
    stored: pl.DataType | None = None

    def series(self, name: str, values: list[Any]) -> pl.Series:
        if self.stored is None:
            return pl.Series(name, values, dtype=self.dtype)
        return pl.Series(name, values, dtype=self.stored).cast(self.dtype)

    @cached_property
    def thresholds(self) -> tuple[Any, ...]:
        """The pool as Pandera's checks take it: Python values (instants cut to microseconds)."""
        values = self.series("x", list(self.pool)).to_list()
        return tuple(v for v in values if not (isinstance(v, float) and math.isnan(v)))


def _datetimes(tz: dt.tzinfo | None) -> tuple[dt.datetime, ...]:
    return (
        dt.datetime(1970, 1, 1, tzinfo=tz),
        dt.datetime(2019, 12, 31, 23, 59, 59, 999_000, tzinfo=tz),
        dt.datetime(2020, 1, 1, tzinfo=tz),
        dt.datetime(2020, 1, 1, 0, 0, 0, 1_000, tzinfo=tz),
        dt.datetime(2262, 4, 11, tzinfo=tz),
    )


KINDS: tuple[Kind, ...] = (
    Kind("int8", pl.Int8, pl.Int8(), (-128, -1, 0, 1, 127)),
    Kind("uint16", pl.UInt16, pl.UInt16(), (0, 1, 2, 65_535)),
    Kind("int32", pl.Int32, pl.Int32(), (-(2**31), -1, 0, 1, 2**31 - 1)),
    Kind("int64", int, pl.Int64(), (-(2**63), -1, 0, 1, 2, 2**53 + 1, 2**63 - 1)),
    Kind("float32", pl.Float32, pl.Float32(), (0.0, -0.0, 1.5, -1.0, INF, -INF, math.nan)),
    Kind("float64", float, pl.Float64(), (0.0, -0.0, 0.1, 1.5, -1.0, INF, -INF, math.nan, 1e308)),
    Kind(
        "decimal",
        Annotated[pl.Decimal, 10, 2],
        pl.Decimal(10, 2),
        tuple(Decimal(v) for v in ("-0.01", "0.00", "0.29", "0.30", "0.31", "99999999.99")),
    ),
    Kind("string", str, pl.String(), ("", "a", "ab", "abc", "AB1", "ok", "not ok", "é"), text=True),
    Kind("boolean", bool, pl.Boolean(), (False, True), ordered=False),
    Kind(
        "date",
        dt.date,
        pl.Date(),
        (dt.date(1, 1, 1), dt.date(2019, 12, 31), dt.date(2020, 1, 1), dt.date(9999, 12, 31)),
    ),
    Kind("datetime_us", Annotated[pl.Datetime, "us", None], pl.Datetime("us"), _datetimes(None)),
    Kind(
        "datetime_ms_utc",
        Annotated[pl.Datetime, "ms", "UTC"],
        pl.Datetime("ms", "UTC"),
        _datetimes(UTC),
    ),
    Kind(
        "datetime_ns",
        Annotated[pl.Datetime, "ns", None],
        pl.Datetime("ns"),
        (0, NS_2020 - 1, NS_2020, NS_2020 + 500, NS_2020 + 1_000),
        stored=pl.Int64(),
    ),
    Kind(
        "time",
        dt.time,
        pl.Time(),
        (0, NOON_NS - 1_000, NOON_NS, NOON_NS + 500, NOON_NS + 1_000, 86_399_999_999_999),
        stored=pl.Int64(),
    ),
    Kind(
        "duration",
        Annotated[pl.Duration, "us"],
        pl.Duration("us"),
        (dt.timedelta(-1), dt.timedelta(0), dt.timedelta(microseconds=1), dt.timedelta(days=1)),
    ),
    Kind("categorical", pl.Categorical, pl.Categorical(), ("a", "b", "c"), ordered=False),
)
KIND = {kind.name: kind for kind in KINDS}

# a finer type a file may hold for a column of the model's kind (no cast is lossless)
FINER: dict[str, Kind] = {
    "datetime_us": KIND["datetime_ns"],
    "float64": KIND["int64"],
    "decimal": Kind(
        "decimal_12_3",
        Annotated[pl.Decimal, 12, 3],
        pl.Decimal(12, 3),
        tuple(Decimal(v) for v in ("0.295", "0.300", "0.305", "1.004", "1.005", "-0.001")),
    ),
}

# what a coerced column may arrive as, by the model's kind (values that do not cast become
# coerce failures)
COERCE_FROM: dict[str, tuple[pl.DataType, ...]] = {
    "int8": (pl.Int64(), pl.String(), pl.Float64()),
    "int32": (pl.Int64(), pl.String()),
    "int64": (pl.String(), pl.Float64()),
    "float64": (pl.Int64(), pl.String()),
    "float32": (pl.Float64(),),
    "decimal": (pl.Float64(), pl.String()),
    "string": (pl.Int64(),),
    "date": (pl.String(), pl.Datetime("us")),
    "datetime_us": (pl.String(), pl.Datetime("ns"), pl.Int64()),
    "datetime_ms_utc": (pl.Int64(),),
    "categorical": (pl.String(), pl.Int64()),
    "boolean": (pl.String(),),
}
JUNK: tuple[str, ...] = ("x", "1e3", " 1", "2020-13-01", "NaN")


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str
    checks: dict[str, Any] = field(default_factory=dict)
    nullable: bool = True
    unique: bool = False
    coerce: bool = False
    ignore_na: bool = True
    arrives_as: pl.DataType | None = None  # the frame's dtype when the model coerces
    regex: bool = False  # declared as a pattern matching its name (and no other column)

    def field(self) -> Any:
        extra: dict[str, Any] = {} if self.ignore_na else {"ignore_na": False}
        if self.regex:
            extra |= {"alias": rf"^{self.name}(_\d)?$", "regex": True}
        return pdp.Field(
            nullable=self.nullable, unique=self.unique, coerce=self.coerce, **self.checks, **extra
        )


@dataclass(frozen=True)
class ModelSpec:
    columns: tuple[ColumnSpec, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    nested: bool = False  # `Config.unique` as a list of lists, else one flat list
    # a custom check on the first column reading the second: null only where the second is set
    cross: tuple[str, str] | None = None

    @property
    def config_unique(self) -> list[str] | list[list[str]]:
        if self.nested or len(self.unique) > 1:
            return [list(u) for u in self.unique]
        return list(self.unique[0])

    def model(self) -> type[pdp.DataFrameModel]:
        body: dict[str, Any] = {
            "__annotations__": {c.name: KIND[c.kind].annotation for c in self.columns},
            "__module__": __name__,
            **{c.name: c.field() for c in self.columns},
        }
        if self.cross is not None:
            body["needs_other"] = _needs_other(*self.cross)
        if self.unique:
            body["Config"] = type("Config", (), {"unique": self.config_unique})
        return type("Random", (pdp.DataFrameModel,), body)

    def polars_schema(self) -> pl.Schema:
        return pl.Schema({c.name: KIND[c.kind].dtype for c in self.columns})


def _in_range(low: Any, high: Any, include_min: bool, include_max: bool) -> dict[str, Any]:
    """Pandera's `in_range` arguments; equal bounds include both (else the range is empty)."""
    both = low == high
    return {
        "min_value": min(low, high),
        "max_value": max(low, high),
        "include_min": include_min or both,
        "include_max": include_max or both,
    }


def _needs_other(column: str, other: str) -> Any:
    """A `@pdp.check` on `column` that reads `other` (Pandera runs it: no expression exists)."""

    def needs_other(cls: Any, data: Any) -> Any:
        return data.lazyframe.select(pl.col(column).is_null() | pl.col(other).is_not_null())

    return pdp.check(column, name="needs_other")(needs_other)


@st.composite
def checks(draw: st.DrawFn, kind: Kind) -> dict[str, Any]:
    """Zero to two of the built-in checks that apply to the kind, thresholds from its pool."""
    value = st.sampled_from(kind.thresholds)
    options: dict[str, st.SearchStrategy[Any]] = {
        "eq": value,
        "ne": value,
        "isin": st.lists(value, min_size=1, max_size=3, unique_by=repr),
        "notin": st.lists(value, min_size=1, max_size=3, unique_by=repr),
    }
    if kind.ordered:
        options |= {"ge": value, "gt": value, "le": value, "lt": value}
        options["in_range"] = st.builds(_in_range, value, value, st.booleans(), st.booleans())
    if kind.text:
        options |= {
            "str_matches": st.sampled_from([r"[A-Z]{2}\d", r"a+", r"^$", "ok"]),
            "str_contains": st.sampled_from(["ok", "b", " "]),
            "str_startswith": st.sampled_from(["a", "AB", "not"]),
            "str_endswith": st.sampled_from(["b", "1", "ok"]),
            "str_length": st.sampled_from(
                [{"min_value": 1, "max_value": 2}, {"max_value": 1}, {"min_value": 3}]
            ),
        }
    if kind.name == "boolean":  # a mistyped model (issue 19 item 11)
        options["notin"] = st.just(["x", "y"])
    names = draw(st.lists(st.sampled_from(sorted(options)), max_size=2, unique=True))
    return {name: draw(options[name]) for name in names}


@st.composite
def column_specs(draw: st.DrawFn, name: str, kinds: tuple[str, ...], coerce: bool) -> ColumnSpec:
    kind = KIND[draw(st.sampled_from(kinds))]
    coerced = coerce and kind.name in COERCE_FROM and draw(st.booleans())
    return ColumnSpec(
        name=name,
        kind=kind.name,
        checks=draw(checks(kind)),
        nullable=draw(st.booleans()),
        unique=draw(st.integers(0, 2)) == 0,
        coerce=coerced,
        ignore_na=draw(st.integers(0, 5)) > 0,
        arrives_as=draw(st.sampled_from(COERCE_FROM[kind.name])) if coerced else None,
        regex=draw(st.integers(0, 15)) == 0,
    )


@st.composite
def model_specs(
    draw: st.DrawFn,
    *,
    kinds: tuple[str, ...] = tuple(KIND),
    max_columns: int = 3,
    coerce: bool = True,
) -> ModelSpec:
    """A model of one to `max_columns` columns over the given kinds."""
    width = draw(st.integers(1, max_columns))
    columns = tuple(draw(column_specs(f"c{i}", kinds, coerce)) for i in range(width))
    # Config.unique and custom checks name the model's fields: plain (not regex) ones
    plain = [c.name for c in columns if not c.regex]
    unique: tuple[tuple[str, ...], ...] = ()
    if len(plain) > 1 and draw(st.integers(0, 3)) == 0:
        first = tuple(draw(st.lists(st.sampled_from(plain), min_size=1, unique=True)))
        unique = (first,)
        if draw(st.booleans()):
            unique += (tuple(n for n in plain if n not in first) or (plain[0],),)
    nested = len(unique) > 1 or draw(st.booleans())
    cross = None
    if plain and width > 1 and draw(st.integers(0, 5)) == 0:
        column = draw(st.sampled_from(plain))
        cross = (column, draw(st.sampled_from([c.name for c in columns if c.name != column])))
    return ModelSpec(columns, unique, nested, cross)


@st.composite
def frames(
    draw: st.DrawFn, spec: ModelSpec, *, max_rows: int = 10, finer: frozenset[str] = frozenset()
) -> pl.DataFrame:
    """Rows drawn from each column's pool and nulls; unique columns sometimes increase.

    Columns named in `finer` hold values of the finer type a file may have (`FINER`).
    """
    height = draw(st.integers(0, max_rows))
    series = []
    for column in spec.columns:
        kind = FINER[column.kind] if column.name in finer else KIND[column.kind]
        pool = st.sampled_from(kind.pool)
        values = draw(st.lists(st.one_of(st.none(), pool, pool), min_size=height, max_size=height))
        if column.unique and draw(st.booleans()):  # the increasing-key shortcut's case
            present = sorted({repr(v): v for v in values if v is not None}.values())
            values = present + [None] * (height - len(present))
        s = kind.series(column.name, values)
        if column.arrives_as is not None:
            s = _arriving(draw, s, column.arrives_as)
        series.append(s)
    return pl.DataFrame(series, height=height)


def _arriving(draw: st.DrawFn, s: pl.Series, dtype: pl.DataType) -> pl.Series:
    """The column as a source hands it over before coercion; text may hold junk."""
    if s.dtype == pl.Categorical and dtype == pl.Int64:
        cast = pl.Series(s.name, [draw(st.sampled_from([0, 1, 7])) for _ in s], dtype=pl.Int64)
    elif dtype == pl.String and s.dtype in (pl.Date, pl.Datetime, pl.Boolean):
        cast = s.cast(pl.String)
    else:
        cast = s.cast(dtype, strict=False)
    if dtype == pl.String:
        junk = [draw(st.sampled_from(JUNK)) if draw(st.integers(0, 3)) == 0 else None for _ in cast]
        cast = pl.Series(s.name, [j or v for j, v in zip(junk, cast, strict=True)])
    return cast.rename(s.name)
