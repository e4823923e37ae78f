"""`Node`, the base every role shares, and the options a node declares.

A node has a name (its attribute on the pipeline class), inputs, declared input and output
models, and what it declares about how it runs: `options` (retries, timeout, pool: `NodeOptions`),
`expect` (dataset checks and the invalid-row `Policy`: `Expectations`) and `incremental` (its
cursor). The roles users subclass (Source, Transform, Sink, ...) are in `etlkit.model.nodes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Self

from etlkit.errors import PipelineDefinitionError, quoted

if TYPE_CHECKING:
    import pandera.polars as pdp

    Model = type[pdp.DataFrameModel]
else:
    Model = type

Kind = Literal["source", "transform", "sink", "sql", "lazy", "sensor", "task"]

Policy = Literal["fail", "drop", "quarantine"]
POLICIES: tuple[Policy, ...] = ("fail", "drop", "quarantine")


@dataclass(frozen=True)
class Expectations:
    """Dataset-level checks on a node's output and its policy for invalid rows (see `expect`)."""

    min_rows: int | None = None
    max_rows: int | None = None
    unique: tuple[str, ...] = ()
    sql: tuple[str, ...] = ()
    on_invalid: Policy | None = None
    max_invalid_fraction: float | None = None

    @property
    def dataset_checks(self) -> bool:
        """Whether checks need the node's whole staged output (uniqueness, SQL assertions)."""
        return bool(self.unique or self.sql)


@dataclass(frozen=True)
class NodeOptions:
    """How a node runs: retries, timeout and pool (see `Node.options`); None means the default."""

    retries: int | None = None
    retry_delay: float | None = None
    retry_exponential_backoff: bool | None = None
    max_retry_delay: float | None = None
    retry_validation_errors: bool = False
    timeout: float | None = None
    pool: str | None = None


class Node:
    """Base of every node. Users subclass one of the roles (`etlkit.model.nodes`), never this.

    Attributes:
        name: the attribute name on the pipeline class (set when the class is created).
        inputs: upstream nodes, or node names resolved when the graph is built.
        input_model: the Pandera model this node expects from its inputs, if declared.
        output_model: the Pandera model of what this node produces, if declared.
        stage: whether the node's output is staged as Parquet (blocking consumers force it).
    """

    kind: ClassVar[Kind]
    input_model: Model | None = None
    output_model: Model | None = None

    def __init__(self, *inputs: Node | str, stage: bool = True) -> None:
        for item in inputs:
            if not isinstance(item, Node | str):
                raise PipelineDefinitionError(
                    "?",
                    [
                        f"{type(self).__name__} got an input of type {type(item).__name__}; "
                        "inputs are nodes (or node names)"
                    ],
                )
        self.inputs: tuple[Node | str, ...] = tuple(inputs)
        self.stage = stage
        self.name = ""
        self.expectations = Expectations()
        self.run_options = NodeOptions()
        self.cursor_column: str | None = None
        self.cursor_key: tuple[str, ...] = ()

    def incremental(self, cursor: str, *, primary_key: Sequence[str] = ()) -> Self:
        """Load only rows not loaded yet: those whose `cursor` column is at or above the
        largest value an earlier successful run loaded, less the rows it loaded at that value.

            visits = PostgresSource(conn="hospital_db", table="visits", schema=Visit)
            visits = visits.incremental("updated_at", primary_key=["visit_id"])

        The boundary is inclusive, as dlt's `incremental` is: rows arriving late with the
        same cursor value as the last loaded row are loaded, not skipped. The rows loaded at
        the largest value are remembered by a hash of their `primary_key` columns (of the
        whole row when none is given) and not loaded twice.

        The cursor is taken from the source's committed output, whichever attempt of the run
        committed it (an in-run retry, `etlkit retry RUN`), and stored per pipeline and node
        once the run succeeds: a failed run does not advance it. `etlkit state show/reset
        PIPELINE` inspects or resets it. Connectors that can push the predicate down read
        `ctx.cursor` (`column >= value`); every source is also filtered as it streams.
        """
        self.cursor_column = cursor
        self.cursor_key = tuple(primary_key)
        return self

    def options(
        self,
        *,
        retries: int | None = None,
        retry_delay: float | None = None,
        retry_exponential_backoff: bool | None = None,
        max_retry_delay: float | None = None,
        retry_validation_errors: bool = False,
        timeout: float | None = None,
        pool: str | None = None,
    ) -> Self:
        """Set how the node runs; returns the node. Unset values fall back to the pipeline's.

            load = PostgresSink(cleaned, conn="warehouse", table="t").options(
                retries=3, retry_delay=30, retry_exponential_backoff=True, pool="warehouse"
            )

        Args:
            retries: attempts after the first failure; a retried node restarts from its inputs'
                staged outputs (committed nodes are not recomputed).
            retry_delay: seconds before the first retry.
            retry_exponential_backoff: double the delay on each further retry.
            max_retry_delay: cap on the delay, in seconds.
            retry_validation_errors: retry data validation failures too (off: bad data rarely
                fixes itself).
            timeout: seconds the node may run; it is cancelled at the next chunk boundary, or
                abandoned if it does not yield.
            pool: a named pool (`[pools]` in etlkit.toml) whose slots bound how many nodes using
                it run at once, across runs.
        """
        problems = []
        for label, value in (("retries", retries), ("retry_delay", retry_delay)):
            if value is not None and value < 0:
                problems.append(f"{label} must be >= 0")
        for label, value in (("timeout", timeout), ("max_retry_delay", max_retry_delay)):
            if value is not None and value <= 0:
                problems.append(f"{label} must be > 0")
        if problems:
            raise PipelineDefinitionError(self.name or type(self).__name__, problems)
        self.run_options = NodeOptions(
            retries=retries,
            retry_delay=retry_delay,
            retry_exponential_backoff=retry_exponential_backoff,
            max_retry_delay=max_retry_delay,
            retry_validation_errors=retry_validation_errors,
            timeout=timeout,
            pool=pool,
        )
        return self

    def expect(
        self,
        *,
        min_rows: int | None = None,
        max_rows: int | None = None,
        unique: Sequence[str] = (),
        sql: Sequence[str] = (),
        on_invalid: Policy | None = None,
        max_invalid_fraction: float | None = None,
    ) -> Self:
        """Declare checks on the node's output and what to do with invalid rows; returns the node.

            patients = CsvSource("patients.csv", schema=RawPatient).expect(
                min_rows=1, unique=["patient_id"], on_invalid="quarantine"
            )

        Args:
            min_rows: fewer output rows fail the run (`min_rows=1`: "no data found").
            max_rows: more output rows fail the run.
            unique: columns whose combination must be unique across the whole output.
            sql: assertions as DuckDB queries over `{output}` returning the offending rows;
                any row returned fails the run.
            on_invalid: rows breaking the output model: `fail` the run (default), `drop` them
                (counted), or `quarantine` them in the `<node>_rejects` staged output.
            max_invalid_fraction: with drop or quarantine, fail the run anyway when more than
                this fraction of the rows is invalid.

        Dataset-level checks run over the node's whole staged output when it finishes.
        """
        problems = []
        if any(bound is not None and bound < 0 for bound in (min_rows, max_rows)):
            problems.append("min_rows and max_rows must be >= 0")
        if on_invalid is not None and on_invalid not in POLICIES:
            problems.append(f"on_invalid must be one of {quoted(POLICIES)}, not {on_invalid!r}")
        if max_invalid_fraction is not None and not 0 <= max_invalid_fraction <= 1:
            problems.append("max_invalid_fraction must be between 0 and 1")
        for query in sql:
            if "{output}" not in query:
                problems.append(f"SQL assertion {query!r} must select from {{output}}")
        if problems:
            raise PipelineDefinitionError(self.name or type(self).__name__, problems)
        self.expectations = Expectations(
            min_rows=min_rows,
            max_rows=max_rows,
            unique=tuple(unique),
            sql=tuple(sql),
            on_invalid=on_invalid,
            max_invalid_fraction=max_invalid_fraction,
        )
        return self

    def __set_name__(self, owner: type, name: str) -> None:
        if not self.name:
            self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or '(unnamed)'}>"

    @property
    def streaming(self) -> bool:
        """Whether the node consumes its inputs chunk by chunk (else it reads staged outputs)."""
        return self.kind in ("transform", "sink")
