"""Query results for people and files: aligned text tables, CSV, JSON and Parquet output.

`render_table` draws the plain-text table `etlkit query` and its shell print; `write_result`
renders a result in a chosen format or saves it to a local file, atomically.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

import pyarrow as pa

from etlkit.errors import QueryError

logger = logging.getLogger(__name__)

#: Longest cell the text table shows before cutting it with an ellipsis.
_MAX_CELL: Final = 80


def _cell(value: object) -> str:
    text = "NULL" if value is None else str(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def _numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def render_table(table: pa.Table, *, footer: str | None = None) -> str:
    """An aligned plain-text table: names, a rule, the rows, then `footer` or the row count."""
    columns = [[_cell(v) for v in column.to_pylist()] for column in table.columns]
    lines = []
    if table.num_columns:
        names = table.column_names
        widths = [
            max([len(name), *(len(c) for c in cells)])
            for name, cells in zip(names, columns, strict=True)
        ]
        right = [_numeric(field.type) for field in table.schema]
        lines.append(" | ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip())
        lines.append("-+-".join("-" * w for w in widths))
        for i in range(table.num_rows):
            cells = [
                col[i].rjust(w) if r else col[i].ljust(w)
                for col, w, r in zip(columns, widths, right, strict=True)
            ]
            lines.append(" | ".join(cells).rstrip())
    lines.append(footer or f"({table.num_rows} row{'' if table.num_rows == 1 else 's'})")
    return "\n".join(lines) + "\n"


def write_result(
    table: pa.Table, fmt: Literal["table", "csv", "json", "parquet"], output: str | None
) -> str | None:
    """Render or save a query result.

    `table` is aligned plain text for a terminal. `csv` has a header row; `json` is one array of
    row objects (`[{"col": value, ...}, ...]`, dates and times as ISO strings). With `output`
    the result goes to that local file, atomically (a temporary file in the same directory,
    then a rename), and None is returned; without it the text is returned.

    Raises:
        QueryError: parquet without `output`, a result the format cannot hold (nested columns
            in CSV), or the file cannot be written.
    """
    if fmt == "parquet":
        if output is None:
            raise QueryError(
                "The parquet format needs an output file (--output FILE); "
                "use table, csv or json to print the result"
            )
        import pyarrow.parquet as pq

        _write_atomically(output, lambda tmp: pq.write_table(table, tmp))
        return None
    if fmt == "table":
        text = render_table(table)
    elif fmt in ("csv", "json"):
        import polars as pl

        try:
            frame = pl.DataFrame(table)
            text = frame.write_csv() if fmt == "csv" else frame.write_json()
        except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
            raise QueryError(f"Cannot write the result as {fmt}: {exc}") from exc
    else:
        raise QueryError(f"Unknown output format {fmt!r}; use table, csv, json or parquet")
    if output is None:
        return text
    _write_atomically(output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return None


def _write_atomically(output: str, write: Callable[[Path], object]) -> None:
    target = Path(output)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        tmp.replace(target)
    except (OSError, pa.ArrowException) as exc:
        raise QueryError(f"Cannot write the result to {output}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("query result written to %s", output)
