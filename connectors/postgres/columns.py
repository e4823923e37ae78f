"""PostgreSQL column types against the model's: reading a column as the model's type, in SQL,
and casting the batches ADBC returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import polars as pl
import pyarrow as pa

from connectors.tables import quote_ident
from etlkit.connector import ColumnSpec

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Cursor

#: PostgreSQL type names (as ADBC reports them) by the family the model's types are mapped from.
_FAMILIES: Final = {
    **dict.fromkeys(("int2", "int4", "int8", "oid"), "integer"),
    **dict.fromkeys(("float4", "float8"), "float"),
    "numeric": "numeric",
    "bool": "boolean",
    **dict.fromkeys(("text", "varchar", "bpchar", "name", "char", "citext"), "text"),
    **dict.fromkeys(("json", "jsonb"), "json"),
    "uuid": "uuid",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "bytea": "bytea",
}


def relation_columns(cur: Cursor, relation: str) -> pa.Schema:
    """The columns of `relation` (a table or a subquery) with ADBC's types and PG type names."""
    cur.execute(f"SELECT * FROM {relation} LIMIT 0")
    reader = cur.fetch_record_batch()
    try:
        schema: pa.Schema = reader.schema
    finally:
        reader.close()
    return schema


def pg_type(field: pa.Field) -> str:
    """The PostgreSQL type name ADBC reports for a result column (`numeric(10,2)`, `jsonb`)."""
    metadata = field.metadata or {}
    name = metadata.get(b"POSTGRESQL:type", b"?").decode()
    precision, scale = _numeric_precision(field)
    return f"{name}({precision},{scale})" if precision is not None else name


def _numeric_precision(field: pa.Field) -> tuple[int | None, int | None]:
    metadata = field.metadata or {}
    typmod = int(metadata.get(b"POSTGRESQL:typmod", b"-1"))
    if metadata.get(b"POSTGRESQL:type") != b"numeric" or typmod < 4:
        return None, None
    return ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF


def type_family(field: pa.Field) -> str:
    name = (field.metadata or {}).get(b"POSTGRESQL:type", b"").decode()
    if name in _FAMILIES:
        return _FAMILIES[name]
    # enums and other text-like types arrive as strings
    return "text" if pa.types.is_string(field.type) else "other"


def _int_sql(dtype: pl.DataType) -> str:
    if dtype in (pl.Int8, pl.Int16, pl.UInt8):
        return "smallint"
    return "integer" if dtype in (pl.Int32, pl.UInt16) else "bigint"


def readable_types(dtype: pl.DataType) -> str:
    """The PostgreSQL types a model type can be read from (for error messages)."""
    if dtype.is_integer():
        return "smallint, integer, bigint, numeric without a fractional scale"
    if dtype.is_float():
        return "smallint, integer, bigint, real, double precision, numeric"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "text, varchar, char, name, enums, json, jsonb, uuid, numeric"
    if isinstance(dtype, pl.Datetime):
        return "timestamp, timestamptz, date"
    readable = {pl.Boolean: "boolean", pl.Date: "date", pl.Time: "time", pl.Binary: "bytea"}
    return readable.get(type(dtype), "numeric, integer" if dtype.is_decimal() else "?")


def projection_sql(column: str, field: pa.Field, spec: ColumnSpec) -> str | None:
    """The SQL reading `column` as the model's type, or None when the types do not map."""
    family, dtype, col = type_family(field), spec.dtype, quote_ident(column)
    if dtype.is_integer():
        scale = _numeric_precision(field)[1]
        if family == "integer" or (family == "numeric" and not scale):
            return f"{col}::{_int_sql(dtype)}"
    elif dtype.is_float():
        if family in ("integer", "float", "numeric"):
            return f"{col}::{'real' if dtype == pl.Float32 else 'double precision'}"
    elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        if family in ("text", "json", "uuid", "numeric"):
            return f"{col}::text"
    elif isinstance(dtype, pl.Datetime):
        naive = dtype.time_zone is None
        if family == "timestamp":
            return f"{col}::timestamp" if naive else f"({col} AT TIME ZONE 'UTC')"
        if family == "timestamptz":
            return f"({col} AT TIME ZONE 'UTC')" if naive else f"{col}::timestamptz"
        if family == "date":
            return f"{col}::timestamp" if naive else f"({col}::timestamp AT TIME ZONE 'UTC')"
    elif dtype.is_decimal():
        if family in ("numeric", "integer"):
            return f"{col}::text"  # ADBC's numeric is opaque; Arrow parses the text exactly
    elif dtype == pl.Boolean:
        return f"{col}::boolean" if family == "boolean" else None
    elif dtype == pl.Date:
        return f"{col}::date" if family == "date" else None
    elif dtype == pl.Time:
        return f"{col}::time" if family == "time" else None
    elif dtype == pl.Binary:
        return col if family == "bytea" else None
    else:
        return col  # nested and other types: left to the Arrow cast, which names the column
    return None
