"""Per-chunk validation of polars DataFrames against a Pandera polars `DataFrameModel`.

Every chunk leaving every node is validated, so a chunk must cost about what its rows would cost
in one whole-frame validation. `Model.validate(df, lazy=True)` has a fixed cost per call, whatever
the chunk; `ChunkValidator` reads `model.to_schema()` once, turns the columns and built-in checks
into polars expressions, plans each distinct input schema once (missing and extra columns,
casts, dtypes), and then checks a chunk in one `select` of boolean masks, one per check. Only
the failing rows of failing checks are turned into the report. Shortcuts that change no
verdict: a unique column whose values increase within the chunk is not hashed; a pattern check
(`str_matches`, `str_contains`) over a column of few distinct values runs on those values, and
row by row only when one fails; checks proven for whole files by Parquet statistics are skipped
(`assume`), and a batch left with nothing to check is not converted to polars at all.

Translated, under the `check` names Pandera's `failure_cases` uses:

- a missing column: `column_in_dataframe`; with `strict=True`, an extra one: `column_in_schema`
  (`strict="filter"` drops extra columns); a wrong dtype: `dtype('Int64')`, as judged by
  Pandera's own dtype objects;
- `nullable=False`: `not_nullable` (NaN counts as null in float columns); `unique=True`:
  `field_uniqueness` (within the chunk, every duplicated row, nulls too); `Config.unique`:
  `multiple_fields_uniqueness` (the first failing set of columns);
- the `Field` checks `equal_to`, `not_equal_to`, `greater_than`, `greater_than_or_equal_to`,
  `less_than`, `less_than_or_equal_to`, `in_range`, `isin`, `notin`, `str_contains`,
  `str_matches`, `str_startswith`, `str_endswith`, `str_length`, named as Pandera names them
  (`greater_than_or_equal_to(0)`, `isin(['A', 'N'])`, `str_length(2, 4)`) and evaluated with
  Pandera's own expressions. So nulls pass value checks whatever `nullable` says (unless a check
  sets `ignore_na=False`), and NaN passes `ge`, fails `le`. A check that cannot run on the
  column's dtype is reported as Pandera does: that check, a null index, the error as the case.
- `coerce=True` and `Config.coerce`: a non-strict cast. A non-null value that does not cast is
  reported as `coerce_dtype('Int64')` on its column and row, and becomes null in `data` without
  failing any other check of that column.

Deviations from Pandera, on purpose. Pandera names a failed cast after the schema, with every
dtype of the schema in the check's name, stops at the first failing column, also counts that
column's nulls as failed casts, and then checks the uncast frame (reporting every coerced column
as a wrong dtype); etlkit reports each failed value on its own column, under the name Pandera's
column backend uses, and checks the cast chunk. Where polars raises on a cast instead of giving
null (a float rounding past a decimal's precision, a Categorical to a number), Pandera fails
every row of the column; etlkit fails the values whose own cast raises, so a row's verdict does
not depend on which values share its chunk. Under `strict=True` every extra column is
reported, not just the first. `column` names the missing or extra column where Pandera repeats
the schema's name, and is null for checks of the whole frame. A failing duration is shown in
polars' notation (`1d 3µs`; Pandera's own report fails on it), and a date or datetime past the
years polars can show as its count of units since 1970 (`4611686018427387904ms`). With several
`Config.unique` sets, Pandera fails the rows of the first set that repeats only; a chunk does
too, but across chunks (`flag_repeats`, `dataset_problems`) every set that repeats is reported.

Falls back to Pandera itself:

- checks polars expressions are not compiled for (`@pdp.check`, `@pdp.dataframe_check`,
  `pdp.Check(fn)`, element-wise, `raise_warning` or `groupby` checks, `unique_values_eq`): all of
  them run in one small `DataFrameSchema` holding only those checks (no dtypes, nullable) on the
  whole cast chunk (a column's check may read other columns), and their failures join the
  report: a few ms per chunk, for such models only;
- models with regex columns, `Config.ordered`, `add_missing_columns`, column defaults, a frame
  `dtype`, or coercion to nested or model dtypes: `Model.validate(df, lazy=True)` on the chunk
  (`data` is then the chunk as given whenever it fails).

Pandera (slow to import) is imported when a `ChunkValidator` is built, not with this module.

The parts, each in its module of `etlkit.checks`: `builtin` (Pandera's built-in checks as
polars expressions), `plan` (the model compiled once, a plan per input schema), `validator`
(`ChunkValidator`, the evaluation of a chunk), `failures` (failure tables and messages),
`proofs` (checks proven by column statistics), `keys` (unique keys across chunks) and `dataset`
(dataset checks in DuckDB). This module names what other packages use.
"""

from __future__ import annotations

from etlkit.checks.dataset import dataset_problems
from etlkit.checks.failures import FAILURE_SCHEMA, summarize, validation_error
from etlkit.checks.keys import (
    IncreasingKey,
    KeyCheck,
    flag_repeats,
    key_checks,
    repeat_rejects,
    strictly_increasing,
)
from etlkit.checks.validator import ChunkReport, ChunkValidator

__all__ = [
    "FAILURE_SCHEMA",
    "ChunkReport",
    "ChunkValidator",
    "IncreasingKey",
    "KeyCheck",
    "dataset_problems",
    "flag_repeats",
    "key_checks",
    "repeat_rejects",
    "strictly_increasing",
    "summarize",
    "validation_error",
]
