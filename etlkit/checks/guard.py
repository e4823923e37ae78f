"""A node's validation policy applied to its chunks: fail, drop or quarantine invalid rows.

Every chunk a node produces passes its `OutputGuard`: the chunk is checked against the node's output
model (see `etlkit.checks.validation`); under `fail` any failure stops the run, under `drop` the
invalid rows are counted and discarded, under `quarantine` they are also staged, with the check,
column and reason, as the `<node>.rejects` companion of the node's output. The failure table of
every failed check is staged as `<node>.failures` (kept even when the run fails), so both can be
queried in DuckDB as `<node>_rejects` and `<node>_failures`.

A source's failures and rejects also say where each row came from: `file`, `row` (its number in
the file, from 1) and `line` (in a text file, counting a header line) in the failure table,
`_file`, `_row` and `_line` in the rejects, from the chunk's `Origin`; nulls when the source
gives none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from etlkit.errors import DataValidationError, StagingError
from etlkit.model.chunks import Chunk
from etlkit.model.nodes import Node, Origin, Policy
from etlkit.model.schema import to_polars
from etlkit.storage.staging import NodeWriter, Staging

if TYPE_CHECKING:
    from etlkit.checks.validator import ChunkValidator

REJECTS_SUFFIX = ".rejects"
FAILURES_SUFFIX = ".failures"
DROPPED_SUFFIX = ".dropped"  # never committed: the dropped rows' keys, while the node runs


def _to_batches(frame: pl.DataFrame) -> list[pa.RecordBatch]:
    """A companion's rows (rejects, failures, keys) as record batches."""
    batches: list[pa.RecordBatch] = frame.to_arrow().to_batches()
    return batches


class OutputGuard:
    """Validates one node's chunks under its policy; stages rejects and failure tables."""

    def __init__(
        self,
        *,
        pipeline: str,
        run_id: str,
        name: str,
        node: Node,
        staging: Staging,
        default_policy: Policy,
        default_max_fraction: float | None,
        input_side: bool = False,
    ) -> None:
        from etlkit.checks.validator import ChunkValidator

        model = node.input_model if input_side else node.output_model
        if model is None:
            raise ValueError(f"node '{name}' declares no model to guard")
        self.model_name = model.__name__
        self.validator: ChunkValidator = ChunkValidator(model)
        self.pipeline, self.run_id, self.name = pipeline, run_id, name
        self.staging = staging
        self.side = "Input" if input_side else "Output"
        expectations = node.expectations
        self.policy: Policy = "fail" if input_side else (expectations.on_invalid or default_policy)
        self.max_fraction = (
            expectations.max_invalid_fraction
            if expectations.max_invalid_fraction is not None
            else default_max_fraction
        )
        self.invalid_rows = 0
        self.checked_rows = 0
        self.checked_chunks = 0
        self.located = node.kind == "source" and not input_side  # rows have an origin
        self.rejects: NodeWriter | None = None
        self.failures: NodeWriter | None = None
        # Uniqueness counts every row, valid or not, as Pandera's does over a whole frame: the
        # keys of rows dropped from a chunk are kept for the check across chunks.
        self.key_columns: list[str] = []
        if self.policy == "drop":
            from etlkit.model.schema import unique_sets

            self.key_columns = list(dict.fromkeys(c for k in unique_sets(model) for c in k))
        self.dropped: NodeWriter | None = None

    def _companion(self, suffix: str) -> NodeWriter:
        return self.staging.writer(self.pipeline, self.run_id, self.name + suffix)

    def check(
        self, item: pa.RecordBatch | pl.DataFrame, chunk: int, origin: Origin | None = None
    ) -> list[pa.RecordBatch]:
        """The chunk's valid rows as record batches (the chunk itself when all are valid); see
        `check_chunk`."""
        return self.check_chunk(item, chunk, origin).batches()

    def check_chunk(
        self, item: pa.RecordBatch | pl.DataFrame, chunk: int, origin: Origin | None = None
    ) -> Chunk:
        """The chunk's valid rows (the chunk itself when all are valid), in the forms the
        check left at hand: a record batch checked in polars keeps the frame it was checked
        as, for a consumer that takes polars.

        `origin`: where a source's chunk came from, named in failures, rejects and the error.

        Raises:
            DataValidationError: under `fail`, or when the model's columns or types are wrong.
        """
        self.checked_chunks += 1
        if isinstance(item, pa.RecordBatch) and self.validator.nothing_to_check(item.schema):
            self.checked_rows += item.num_rows
            return Chunk(batch=item)  # statistics proved every check: the values need no look
        frame = item if isinstance(item, pl.DataFrame) else to_polars(item)
        self.checked_rows += frame.height
        report = self.validator.check(frame)
        if report.ok:
            if isinstance(item, pa.RecordBatch) and report.data is frame:
                return Chunk(batch=item, frame=frame)
            return Chunk(frame=report.data)
        failures = report.failures.with_columns(chunk=pl.lit(chunk, pl.Int64))
        if self.located:
            failures = _locate(failures, "index", origin, "")
        if self.side == "Output":
            if self.failures is None:
                self.failures = self._companion(FAILURES_SUFFIX)
            self.failures.append_many(_to_batches(failures))
        mended = report.mended or not _of_the_frame(failures)
        if self.policy == "fail" or report.invalid is None or not mended:
            from etlkit.checks.failures import validation_error

            raise validation_error(
                report.failures,
                pipeline=self.pipeline,
                node=self.name,
                run_id=self.run_id,
                chunk=chunk,
                model_name=self.model_name,
                side=self.side,
                origin=_describe(origin, report.failures) if origin is not None else None,
            )
        invalid = report.invalid
        self.invalid_rows += int(invalid.sum())
        if self.policy == "quarantine":
            if self.rejects is None:
                self.rejects = self._companion(REJECTS_SUFFIX)
            rejects = _annotate(report.data, invalid, failures, origin if self.located else None)
            if self.located and origin is None:
                rejects = _locate(rejects, "_row", None, "_")
            self.rejects.append_many(_to_batches(rejects))
        elif self.key_columns:
            if self.dropped is None:
                self.dropped = self._companion(DROPPED_SUFFIX)
            keys = report.data.filter(invalid).select(self.key_columns)
            self.dropped.append_many(_to_batches(keys))
        return Chunk(frame=report.data.filter(~invalid))

    def judged_parts(self) -> list[str]:
        """The staged files of the rows this guard took out of the output (quarantined rows,
        or the keys of dropped ones), for checks that count every row."""
        writer = self.rejects if self.policy == "quarantine" else self.dropped
        return [] if writer is None else writer.part_urls()

    def reject_repeats(self, rows: pl.DataFrame, failures: pl.DataFrame) -> None:
        """Take out rows of the output found repeating a unique key across chunks: counted as
        invalid, their failures staged, and (under `quarantine`) the rows with them."""
        self.invalid_rows += rows.height
        if self.located:  # read back from staging, where rows no longer carry their origin
            failures = _locate(failures, "index", None, "")
            rows = _locate(rows, "_row", None, "_")
        if self.failures is None:
            self.failures = self._companion(FAILURES_SUFFIX)
        self.failures.append_many(_to_batches(failures))
        if self.policy == "quarantine":
            if self.rejects is None:
                self.rejects = self._companion(REJECTS_SUFFIX)
            self.rejects.append_many(_to_batches(rows))

    def finish(self) -> None:
        """Commit the companions; fail when too large a fraction of rows was invalid.

        Raises:
            DataValidationError: the invalid fraction is above `max_invalid_fraction`.
        """
        if self.max_fraction is not None and self.checked_rows:
            fraction = self.invalid_rows / self.checked_rows
            if fraction > self.max_fraction:
                raise DataValidationError(
                    f"{self.side} of node '{self.name}' in pipeline '{self.pipeline}' "
                    f"(run {self.run_id}): {self.invalid_rows} of {self.checked_rows} rows "
                    f"({fraction:.2%}) broke schema {self.model_name}, above "
                    f"max_invalid_fraction {self.max_fraction:.2%}; see the "
                    f"{self.name}_failures view (etlkit query)"
                )
        if self.dropped is not None:
            self.dropped.abort()
        for writer in (self.rejects, self.failures):
            if writer is not None:
                writer.commit()

    def abort(self) -> None:
        """The node failed: keep the failure table (it explains why), discard rejects."""
        for writer in (self.rejects, self.dropped):
            if writer is not None:
                writer.abort()
        if self.failures is not None:
            try:
                self.failures.commit()
            except StagingError:  # the run already failed; its own error is the one to report
                self.failures.abort()


def _of_the_frame(failures: pl.DataFrame) -> bool:
    """Whether a chunk's failures include one of no row that dropping rows does not mend (a
    check that cannot run on its column, a wrong dtype): the chunk then fails under every
    policy, as in Pandera's verdict. A wrong dtype left by values that did not coerce is
    mended by taking those rows out."""
    whole = failures.filter(pl.col("index").is_null())
    if whole.is_empty():
        return False
    rows = failures.filter(pl.col("index").is_not_null())
    if rows.filter(pl.col("check").str.starts_with("coerce_dtype")).height:
        whole = whole.filter(~pl.col("check").str.starts_with("dtype"))
    return whole.height > 0


def _locate(frame: pl.DataFrame, index: str, origin: Origin | None, prefix: str) -> pl.DataFrame:
    """The frame with `file`, `row` and `line` (named with a prefix) of the chunk's rows at
    column `index`, from the chunk's origin; nulls without one."""
    file, row, line = prefix + "file", prefix + "row", prefix + "line"
    if origin is None:
        return frame.with_columns(
            pl.lit(None, pl.String).alias(file),
            pl.lit(None, pl.Int64).alias(row),
            pl.lit(None, pl.Int64).alias(line),
        )
    at = pl.col(index).cast(pl.Int64)
    if origin.first_line is None:
        lines: pl.Expr | pl.Series = pl.lit(None, pl.Int64)
    elif not origin.jumps:
        lines = at + origin.first_line
    else:  # rows with gaps between them: resolved one failing row at a time
        found = frame.get_column(index).to_list()
        lines = pl.Series([None if i is None else origin.line(i) for i in found], dtype=pl.Int64)
    return frame.with_columns(
        pl.lit(origin.file, pl.String).alias(file),
        (at + origin.first_row + 1).alias(row),
        lines.alias(line),
    )


def _describe(origin: Origin, failures: pl.DataFrame, limit: int = 5) -> str:
    """Where the failing rows are, for the error message: `file 'b.csv', lines 4, 7`."""
    indexes = failures.get_column("index").drop_nulls().unique().sort()
    shown = f"file {origin.file!r}"
    if indexes.is_empty():
        return shown
    text = origin.first_line is not None
    unit = "line" if text else "row"
    numbers = [
        origin.line(i) if text else origin.row(i) for i in indexes.head(limit).cast(int).to_list()
    ]
    more = f" and {indexes.len() - limit} more" if indexes.len() > limit else ""
    plural = "s" if indexes.len() > 1 else ""
    return f"{shown}, {unit}{plural} {', '.join(str(n) for n in numbers)}{more}"


def _annotate(
    data: pl.DataFrame, invalid: pl.Series, failures: pl.DataFrame, origin: Origin | None = None
) -> pl.DataFrame:
    """The invalid rows with `_check`, `_column` and `_reason` of their first failure, and
    `_file`, `_row`, `_line` when the chunk has an origin."""
    reasons = (
        failures.filter(pl.col("index").is_not_null())
        .group_by("index", maintain_order=True)
        .agg(
            _check=pl.col("check").first(),
            _column=pl.col("column").first(),
            _reason=pl.concat_str(
                pl.lit("column '"),
                pl.col("column").fill_null("*"),
                pl.lit("' failed "),
                pl.col("check"),
                pl.lit(": "),
                pl.col("failure_case").fill_null("null"),
            ).str.join("; "),
        )
        .with_columns(pl.col("index").cast(pl.Int64))
    )
    rows = data.with_row_index("__row").filter(invalid)
    annotated = rows.with_columns(pl.col("__row").cast(pl.Int64)).join(
        reasons, left_on="__row", right_on="index", how="left"
    )
    if origin is not None:
        annotated = _locate(annotated, "__row", origin, "_")
    return annotated.drop("__row")
