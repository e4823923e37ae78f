"""Pandera models as data contracts: columns, polars/Arrow schemas, edge compatibility."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

from etlkit.model.schema import (
    ColumnSpec,
    arrow_schema,
    column_names,
    columns,
    edge_problems,
    model_name,
    polars_schema,
    to_polars,
)


class Visit(pdp.DataFrameModel):
    visit_id: int
    cost: float = pdp.Field(nullable=True)
    ward: str
    urgent: bool
    day: dt.date
    admitted: dt.datetime
    billed_at: Annotated[pl.Datetime, "us", "UTC"] = pdp.Field(nullable=True)


class VisitIds(pdp.DataFrameModel):
    visit_id: int
    ward: str


class VisitWithNotes(pdp.DataFrameModel):
    visit_id: int
    ward: str
    notes: str
    doctor: str


class FloatIds(pdp.DataFrameModel):
    visit_id: float
    ward: str


class CoercedFloatIds(pdp.DataFrameModel):
    visit_id: float
    ward: str

    class Config:
        coerce = True


class CoercedStringIds(pdp.DataFrameModel):
    visit_id: str = pdp.Field(coerce=True)


class CoercedIntWard(pdp.DataFrameModel):
    ward: int = pdp.Field(coerce=True)


class NaiveBilledAt(pdp.DataFrameModel):
    billed_at: pl.Datetime


def test_columns_follow_declaration_order_with_polars_dtypes() -> None:
    assert columns(Visit) == (
        ColumnSpec("visit_id", pl.Int64(), nullable=False, coerce=False),
        ColumnSpec("cost", pl.Float64(), nullable=True, coerce=False),
        ColumnSpec("ward", pl.String(), nullable=False, coerce=False),
        ColumnSpec("urgent", pl.Boolean(), nullable=False, coerce=False),
        ColumnSpec("day", pl.Date(), nullable=False, coerce=False),
        ColumnSpec("admitted", pl.Datetime("us"), nullable=False, coerce=False),
        ColumnSpec("billed_at", pl.Datetime("us", "UTC"), nullable=True, coerce=False),
    )


def test_column_names_lists_the_declared_columns() -> None:
    assert column_names(Visit) == [
        "visit_id",
        "cost",
        "ward",
        "urgent",
        "day",
        "admitted",
        "billed_at",
    ]


def test_coerce_comes_from_the_field_or_the_model_config() -> None:
    assert [c.coerce for c in columns(CoercedFloatIds)] == [True, True]
    assert [c.coerce for c in columns(CoercedStringIds)] == [True]


def test_polars_schema_has_every_column_and_dtype() -> None:
    assert polars_schema(Visit) == pl.Schema(
        {
            "visit_id": pl.Int64(),
            "cost": pl.Float64(),
            "ward": pl.String(),
            "urgent": pl.Boolean(),
            "day": pl.Date(),
            "admitted": pl.Datetime("us"),
            "billed_at": pl.Datetime("us", "UTC"),
        }
    )


def test_arrow_schema_maps_types_and_nullable_flags() -> None:
    assert arrow_schema(Visit) == pa.schema(
        [
            pa.field("visit_id", pa.int64(), nullable=False),
            pa.field("cost", pa.float64(), nullable=True),
            pa.field("ward", pa.large_string(), nullable=False),
            pa.field("urgent", pa.bool_(), nullable=False),
            pa.field("day", pa.date32(), nullable=False),
            pa.field("admitted", pa.timestamp("us"), nullable=False),
            pa.field("billed_at", pa.timestamp("us", tz="UTC"), nullable=True),
        ]
    )


def test_arrow_schema_matches_what_polars_exports() -> None:
    frame = pl.DataFrame(
        {
            "visit_id": [1],
            "cost": [None],
            "ward": ["A"],
            "urgent": [True],
            "day": [dt.date(2025, 3, 1)],
            "admitted": [dt.datetime(2025, 3, 1, 8)],
            "billed_at": [dt.datetime(2025, 3, 1, 9, tzinfo=dt.UTC)],
        },
        schema=polars_schema(Visit),
    )
    exported = frame.to_arrow().schema
    assert [f.type for f in exported] == [f.type for f in arrow_schema(Visit)]


def test_model_name_is_the_class_name_or_untyped() -> None:
    assert model_name(Visit) == "Visit"
    assert model_name(None) == "untyped"


def test_identical_models_are_compatible() -> None:
    assert edge_problems(Visit, Visit) == []


def test_extra_upstream_columns_are_compatible() -> None:
    assert edge_problems(Visit, VisitIds) == []
    assert edge_problems(VisitWithNotes, VisitIds) == []


def test_missing_columns_are_named_with_what_upstream_has() -> None:
    problems = edge_problems(VisitIds, VisitWithNotes)
    assert problems == [
        "missing column(s) 'notes' and 'doctor'; VisitIds has 'visit_id' and 'ward'",
    ]


def test_wrong_dtype_names_the_column_and_both_types() -> None:
    assert edge_problems(Visit, FloatIds) == [
        "column 'visit_id' is Int64 in Visit but FloatIds expects Float64"
    ]


def test_missing_and_mistyped_columns_are_all_reported() -> None:
    problems = edge_problems(FloatIds, VisitWithNotes)
    assert len(problems) == 2
    assert problems[0].startswith("missing column(s) 'notes' and 'doctor'")
    assert "column 'visit_id' is Float64 in FloatIds but VisitWithNotes expects Int64" in problems


def test_timezone_aware_and_naive_datetimes_differ() -> None:
    (problem,) = edge_problems(Visit, NaiveBilledAt)
    assert "column 'billed_at'" in problem
    assert "time_zone='UTC'" in problem


@pytest.mark.parametrize(
    ("upstream", "downstream"),
    [
        (Visit, CoercedFloatIds),  # int -> float, coerced
        (Visit, CoercedStringIds),  # anything -> string, coerced
    ],
)
def test_coerced_columns_accept_castable_types(
    upstream: type[pdp.DataFrameModel], downstream: type[pdp.DataFrameModel]
) -> None:
    assert edge_problems(upstream, downstream) == []


def test_coerce_does_not_turn_text_into_numbers() -> None:
    assert edge_problems(Visit, CoercedIntWard) == [
        "column 'ward' is String in Visit but CoercedIntWard expects Int64"
    ]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_to_polars_gives_the_frame_polars_would_build(kind: pa.DataType) -> None:
    values = ["", None, "a", "é" * 20, "x" * 12, "y" * 13]
    batch = pa.record_batch(
        {
            "s": pa.array(values * 3, kind),
            "n": pa.array(range(18), pa.int64()),
            "d": pa.array([None, 1.5] * 9, pa.float64()),
        }
    ).slice(2, 13)

    frame = to_polars(batch)

    assert frame.equals(pl.DataFrame(pl.from_arrow(batch)))
    assert frame.schema == pl.Schema({"s": pl.String, "n": pl.Int64, "d": pl.Float64})
    assert to_polars(batch.select(["n"])).equals(pl.DataFrame({"n": list(range(2, 15))}))
