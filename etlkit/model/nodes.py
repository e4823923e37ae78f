"""The node roles a pipeline is made of: Source, Transform, Sink, Sql and Lazy, and their Context.

Each role has one small base class with one required method:

- `Source.read(ctx)` yields `pyarrow.RecordBatch` chunks.
- `Transform[In, Out].process(batch, ctx)` maps one polars DataFrame chunk to another.
- `Sink.write(batches, ctx)` consumes an iterator of record batches and returns a `WriteResult`.
- `Sql(query)` runs DuckDB SQL over its inputs' staged outputs, inputs named in braces.
- `Lazy[Out].query(ctx, *frames)` builds a polars LazyFrame over its inputs' staged outputs,
  executed by polars' streaming engine.

Node names are the attribute names on the pipeline class. Inputs are other nodes (or node names,
resolved when the pipeline's graph is built).

The rest of the node vocabulary lives next door and is re-exported here, so that one import
serves etlkit's packages and the connector SDK: the base `Node` and its options (`node`), the
`Context` and its templates (`context`), `bind_sql` (`sql_binding`), `SourceFiles` and
`Origin` (`files`), `Partition` (`partitions`), `Adoption` and `StagedParquet` (`adoption`).
Connectors are looked up by name in `connector_lookup`.
"""

from __future__ import annotations

import re
import string
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from etlkit.errors import PipelineDefinitionError
from etlkit.model.adoption import Adoption, StagedParquet
from etlkit.model.context import TEMPLATE_NAMES, Context
from etlkit.model.files import Origin, SourceFiles
from etlkit.model.node import Model, Node, Policy
from etlkit.model.partitions import Partition
from etlkit.model.sql_binding import bind_sql

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

__all__ = [
    "TEMPLATE_NAMES",
    "Adoption",
    "Context",
    "Lazy",
    "Model",
    "Node",
    "Origin",
    "Partition",
    "Policy",
    "Sensor",
    "Sink",
    "Source",
    "SourceFiles",
    "Sql",
    "StagedParquet",
    "Task",
    "Transform",
    "WriteResult",
    "bind_sql",
]

InT = TypeVar("InT")
OutT = TypeVar("OutT")


@dataclass(frozen=True)
class WriteResult:
    """What a sink wrote: the rows, where to (a URI or table name) and free-form facts."""

    rows: int
    uri: str
    extra: Mapping[str, Any] = field(default_factory=dict)


def _model_args(cls: type, base: type) -> tuple[Any, ...]:
    for orig in getattr(cls, "__orig_bases__", ()):
        if typing.get_origin(orig) is base:
            return typing.get_args(orig)
    return ()


def _as_model(arg: Any) -> Model | None:
    return arg if isinstance(arg, type) and hasattr(arg, "to_schema") else None


class Source(Node):
    """Produces record batches from the outside world.

    Subclasses call `super().__init__(schema=...)` and implement `read`. The schema model is the
    source's projection: read only its columns, with its types.
    """

    kind = "source"
    #: Whether the files `files` describes are best read in place by `Sql` and `Lazy` consumers
    #: (Parquet, which DuckDB and polars read themselves), rather than the chunks `read` yields
    #: (CSV: a `Sql` node then scans the parsed chunks as they come).
    files_in_place: ClassVar[bool] = True

    def __init__(self, *, schema: Model | None = None, stage: bool = True) -> None:
        super().__init__(stage=stage)
        self.output_model = schema

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        """Yield the source's data, one record batch at a time."""
        raise NotImplementedError(f"{type(self).__name__} must implement read(ctx)")

    def files(self, ctx: Context) -> SourceFiles | None:
        """The immutable files `read` would read, if its output is those files as they are
        (Parquet), or parsed from them by fixed rules (CSV: `SourceFiles.format`).

        Optional: None (the default) means the source's output is always streamed and staged.
        """
        return None

    def estimate(self, ctx: Context) -> int | None:
        """About how many rows `read` will yield, when that is cheap to know (file sizes,
        Parquet footers), for the progress display's percentage and ETA.

        Optional: None (the default) means unknown. An estimate is never checked against the
        rows read; it must cost little next to the read itself.
        """
        return None

    def partitions(self, ctx: Context) -> Sequence[Partition] | None:
        """The pieces `read` would read, in its order, each readable on its own by
        `read_partition`, maybe in another process or on another machine (a partition crosses
        as JSON): files of a glob, row groups of a Parquet file, key ranges of a table.

        Reading every partition in order yields the rows `read` yields, in the same order,
        each with the same `Origin` (file and row); chunks of no rows may differ, and chunk
        boundaries may differ inside a piece `read` reads whole. An empty sequence: nothing to
        read.

        Optional: None (the default) means the source is not split: `read` reads it whole.
        """
        return None

    def read_partition(self, ctx: Context, partition: Partition) -> Iterator[pa.RecordBatch]:
        """Yield one of `partitions(ctx)`'s data, one record batch at a time."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement read_partition(ctx, partition) when "
            "partitions(ctx) returns partitions"
        )


class Transform(Node, Generic[InT, OutT]):
    """Maps each chunk of its inputs to a chunk of output, in polars.

    Declare the models as type arguments; both are checked on every edge:

        class AddMonth(ek.Transform[RawBilling, Billing]):
            def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
                return batch.with_columns(month=pl.col("billed_at").dt.strftime("%Y-%m"))

    Several inputs are a union: chunks arrive in the order they are produced.
    """

    kind = "transform"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        args = _model_args(cls, Transform)
        if args:
            cls.input_model = _as_model(args[0])
            cls.output_model = _as_model(args[1])

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        """Return the output chunk for one input chunk (an empty frame drops it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement process(batch, ctx)")


class Sink(Node):
    """Writes its inputs' chunks to the outside world, atomically: all of it or nothing.

    Subclasses call `super().__init__(*inputs, schema=...)` and implement `write`, writing to a
    temporary location and committing only when the iterator is exhausted. When the run fails,
    the iterator raises `RunCancelledError` and the sink must discard what it wrote.

    A sink commits exactly once per run: a retry may run it again after a kill that came
    between the destination's commit and the run store's. A sink whose commit is not
    idempotent (an append) records `ctx.load_id` in the same transaction and implements
    `find_load`, which the engine asks before `write`. Temporary objects carry the run id in
    their names, and `discard_leftovers` removes those a dead attempt left behind (a retry
    calls it before `write`, `etlkit gc` for runs no process runs any more).
    """

    kind = "sink"
    #: Whether `write` takes string columns as Arrow string views (`pa.string_view()`), the
    #: layout polars holds text in; a sink that does not (the default) gets them cast to
    #: `large_string`, which costs a copy of every string.
    string_views: ClassVar[bool] = False

    def __init__(self, *inputs: Node | str, schema: Model | None = None) -> None:
        super().__init__(*inputs, stage=False)
        self.input_model = schema

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        """Consume `batches` and commit them; return what was written."""
        raise NotImplementedError(f"{type(self).__name__} must implement write(batches, ctx)")

    def find_load(self, ctx: Context) -> WriteResult | None:
        """What this run's load (`ctx.load_id`) wrote, if the destination already committed it.

        The default (None) suits sinks whose commit is idempotent: rewriting the same target.
        """
        return None

    def discard_leftovers(self, ctx: Context) -> list[str]:
        """Remove the temporary objects attempts of this run left behind; what was removed."""
        return []

    def adoption(self) -> Adoption | None:
        """How this sink's one input must be staged for the sink to adopt the staged file as
        its own (see `etlkit.model.adoption`); None (the default): it writes what it receives.
        """
        return None

    def adoption_refused(self, staged: StagedParquet) -> str | None:
        """Why this sink cannot adopt `staged` (it then writes the batches); None: it can."""
        return "it does not adopt staged files"

    def adopt(self, staged: StagedParquet, ctx: Context) -> WriteResult:
        """Commit `staged` as this sink's output, as atomically and exactly once as `write`
        (only called when `adoption_refused` found nothing)."""
        raise NotImplementedError(f"{type(self).__name__} does not adopt staged files")


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Sql(Node):
    """DuckDB SQL over the staged outputs of the nodes it names in braces.

        totals = ek.Sql("select month, sum(amount) as total from {monthly} group by month")

    Other brace fields (`{ds}`, params) become bound parameters, never SQL text: `{flt}` is
    `$flt` and a literal holding fields (`'{ds}'`) one value; see `bind_sql`. DuckDB runs
    out-of-core (memory limit and spill directory come from the settings) and the result streams
    out in chunks.
    A query over one input that streams (not a Parquet source read in place) scans its chunks as
    they arrive, while they are staged, unless its plan reads that input more than once.
    """

    kind = "sql"

    def __init__(self, query: str, *, schema: Model | None = None, stage: bool = True) -> None:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(query) if name]
        except ValueError as exc:
            raise PipelineDefinitionError(
                "?",
                [
                    f"SQL {query!r} is malformed ({exc}): node names and template fields go in "
                    "single braces, literal braces are written '{{' and '}}'"
                ],
            ) from exc
        referenced = [
            name
            for name in fields
            if _FIELD.fullmatch("{" + name + "}") and name not in TEMPLATE_NAMES
        ]
        super().__init__(*dict.fromkeys(referenced), stage=stage)
        self.query = query
        self.output_model = schema


class Lazy(Node, Generic[OutT]):
    """A polars lazy query over the staged outputs of its inputs, run by the streaming engine.

    class Joined(ek.Lazy[Report]):
        def query(self, ctx, billing: pl.LazyFrame, insurance: pl.LazyFrame) -> pl.LazyFrame:
            return billing.join(insurance, on="patient_id")

    joined = Joined(billing, insurance)
    """

    kind = "lazy"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        args = _model_args(cls, Lazy)
        if args:
            cls.output_model = _as_model(args[0])

    def query(self, ctx: Context, *frames: pl.LazyFrame) -> pl.LazyFrame:
        """Build the lazy query from one LazyFrame per input, in the order of the inputs."""
        raise NotImplementedError(f"{type(self).__name__} must implement query(ctx, *frames)")


class Sensor(Node):
    """Waits for a condition before the rest of the run starts (a file arrived, a run succeeded).

    Subclasses implement `poke(ctx) -> bool`. In a run, every sensor must pass before any other
    node starts; the scheduler pokes a due run's sensors itself and starts the run only when
    they pass, so a waiting sensor holds no process and no slot.

    Args:
        poke_interval: seconds between pokes.
        timeout: seconds to wait in all before failing (or skipping, with `soft_fail`).
        soft_fail: on timeout, skip the run instead of failing it.
    """

    kind = "sensor"

    def __init__(
        self, *, poke_interval: float = 60.0, timeout: float = 3600.0, soft_fail: bool = False
    ) -> None:
        super().__init__(stage=False)
        if poke_interval <= 0 or timeout <= 0:
            raise PipelineDefinitionError(
                type(self).__name__, ["poke_interval and timeout must be > 0"]
            )
        self.poke_interval = poke_interval
        self.timeout = timeout
        self.soft_fail = soft_fail

    def poke(self, ctx: Context) -> bool:
        """Whether the condition holds now. Must be quick and must not block."""
        raise NotImplementedError(f"{type(self).__name__} must implement poke(ctx)")

    def describe(self, ctx: Context) -> str:
        """What the sensor waits for, for messages (`file s3://b/billing/2025-03-01.csv`)."""
        return type(self).__name__


class Task(Node):
    """A step with no data output: runs after its inputs finished (sinks included).

        notify = Command(["python", "send_report.py", "{ds}"], after=[report])

    Subclasses implement `run(ctx)`; raising fails the node.
    """

    kind = "task"

    def __init__(self, *, after: Sequence[Node | str] = ()) -> None:
        super().__init__(*after, stage=False)

    def run(self, ctx: Context) -> None:
        """Do the step's work."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(ctx)")
