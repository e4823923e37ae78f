"""A model's columns against a file's: the schema sources read with, the one sinks write with
(`Conformer`), and the messages naming the column or value at fault."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import pyarrow as pa

from etlkit.connector import Model, arrow_schema, column_names, matched, model_name
from etlkit.errors import ConnectorError, quoted


def did_you_mean(missing: Sequence[str], available: Sequence[str]) -> str:
    hints = [
        f"'{close[0]}' for '{name}'"
        for name in missing
        if (close := difflib.get_close_matches(name, available, n=1))
    ]
    return f" Did you mean {', '.join(hints)}?" if hints else ""


def missing_columns(where: str, shown: str, model: Model, found: Sequence[str]) -> ConnectorError:
    # a regex column is missing when it matches no column
    missing = [n for n in column_names(model) if not set(matched(model, n, found)) & set(found)]
    return ConnectorError(
        f"{where}: file {shown} has no column(s) {quoted(missing)} declared by "
        f"{model_name(model)}; its columns are {quoted(found)}.{did_you_mean(missing, found)}"
    )


def short(value: object, limit: int = 80) -> str:
    """A value for a message: strings quoted, long ones cut."""
    text = repr(value[:limit] + "..." if isinstance(value, str) and len(value) > limit else value)
    return text if len(text) <= limit + 10 else text[:limit] + "..."


def read_schema(model: Model, names: Sequence[str] | None = None) -> pa.Schema:
    """The model's Arrow schema, every field nullable: nulls are the validator's business.
    Over a file holding `names`, a regex column gives a field for each name it matches."""
    fields = [f.with_nullable(True) for f in arrow_schema(model)]
    if names is None:
        return pa.schema(fields)
    return pa.schema([f.with_name(n) for f in fields for n in matched(model, f.name, names)])


def first_failing(count: int, fails: Callable[[int], bool]) -> int:
    """The smallest k in 1..count with fails(k) (fails is monotonic), minus one; -1 if none."""
    if count == 0 or not fails(count):
        return -1
    low, high = 1, count
    while low < high:
        middle = (low + high) // 2
        if fails(middle):
            high = middle
        else:
            low = middle + 1
    return low - 1


def plain_type(dtype: pa.DataType) -> pa.DataType:
    """The everyday Arrow type for a file: `string` rather than `large_string` or a view."""
    t = pa.types
    if t.is_large_string(dtype) or t.is_string_view(dtype):
        return pa.string()
    if t.is_large_binary(dtype) or t.is_binary_view(dtype):
        return pa.binary()
    if t.is_large_list(dtype):
        return pa.list_(dtype.value_field.with_type(plain_type(dtype.value_type)))
    return dtype


class Conformer:
    """Casts each incoming batch to the sink's file schema: the model's, else the first batch's."""

    def __init__(self, where: str, model: Model | None) -> None:
        self.where = where
        self.model = model
        self.schema: pa.Schema | None = None
        if model is not None:
            self.schema = pa.schema(
                [pa.field(f.name, plain_type(f.type)) for f in arrow_schema(model)]
            )

    def file_schema(self, schema: pa.Schema) -> pa.Schema:
        """The file's schema for batches of `schema`: the model's, else theirs, types plain."""
        if self.schema is not None:
            return self.schema
        return pa.schema([pa.field(f.name, plain_type(f.type)) for f in schema])

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.schema is None:
            self.schema = self.file_schema(batch.schema)
        names = self.schema.names
        missing = [name for name in names if name not in batch.schema.names]
        if missing:
            expected = (
                f"declared by {model_name(self.model)}" if self.model else "of the first batch"
            )
            raise ConnectorError(
                f"{self.where}: a batch lacks column(s) {quoted(missing)} {expected}; it has "
                f"{quoted(batch.schema.names)}.{did_you_mean(missing, batch.schema.names)}"
            )
        if batch.schema.names != names:
            batch = batch.select(names)
        if batch.schema == self.schema:
            return batch
        try:
            return batch.cast(self.schema, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ConnectorError(
                f"{self.where}: cannot write a batch with schema {batch.schema.types} as "
                f"{self.schema.types} ({exc})."
            ) from exc
