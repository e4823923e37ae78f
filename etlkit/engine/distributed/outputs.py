"""The coordinator's side of a partitioned output: what finished, what it adds up to, the commit.

`finished` reads the finish of one partition, `finished_earlier` all the finishes an
earlier attempt of the run left for a segment's partitions, at once (a retry does not run
those again); `add_partition` adds one partition's statistics, as a task returned them or a
finish recorded them, to its node's `NodeStats` (`add_node`: a node run whole);
`commit_node` judges the whole output with the same `close_output` a local run calls
(dataset checks and keys repeating across partitions, over every partition's parts) and
commits the partitions as one output; `commit_referenced` commits a source as a reference
to its files instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from etlkit.engine.events import PartitionStats
from etlkit.engine.steps.sources import cursor_extra
from etlkit.engine.steps.stage import Output, close_output, commit_output
from etlkit.errors import StagingError
from etlkit.model.nodes import WriteResult
from etlkit.storage.manifest import Manifest
from etlkit.storage.partitions import read_finishes

if TYPE_CHECKING:
    import pyarrow as pa

    from etlkit.engine.events import NodeStats
    from etlkit.engine.steps.context import StepContext
    from etlkit.engine.steps.references import _Reference
    from etlkit.storage.staging import NodeWriter, Staging


def finished(
    staging: Staging, pipeline: str, run_id: str, node: str, partition: str
) -> Manifest | None:
    """The finish of a partition of a node's output (None: not finished, or unreadable, so
    the partition runs again)."""
    try:
        return read_all(staging, pipeline, run_id, node, [partition], strict=False)[partition]
    except StagingError:
        return None


def read_all(
    staging: Staging,
    pipeline: str,
    run_id: str,
    node: str,
    partitions: Sequence[str],
    *,
    strict: bool = True,
) -> dict[str, Manifest | None]:
    """`partitions.read_finishes` of a node's partitions in the run's directory (None: not
    finished); in `strict`, a corrupt finish raises, else counts as not finished.

    Raises:
        StagingError: a finish is corrupt (in `strict`), or the store could not be read.
    """
    run_dir = staging.run_dir(pipeline, run_id)
    return read_finishes(staging, run_dir, node, partitions, strict=strict)


def finished_earlier(
    staging: Staging, pipeline: str, run_id: str, nodes: Sequence[str], partitions: Sequence[str]
) -> dict[str, list[Manifest]]:
    """The partitions an earlier attempt of the run finished for every one of `nodes`, with
    their finishes in the order of `nodes`; each finish read once, concurrently on a remote
    store. A corrupt or unreadable finish counts as not finished: the partition runs again."""
    found: dict[str, list[Manifest]] = {p: [] for p in partitions}
    for node in nodes:
        try:
            finishes = read_all(staging, pipeline, run_id, node, partitions, strict=False)
        except StagingError:  # unreadable: the partitions run again
            return {}
        for partition, manifest in finishes.items():
            if manifest is None:
                found.pop(partition, None)
            elif partition in found:
                found[partition].append(manifest)
    return found


def resumed(segment: Sequence[str], manifests: Sequence[Manifest]) -> dict[str, Any] | None:
    """A partition's task result rebuilt from its finishes (one per node of the segment that
    writes parts, each recording the statistics of every node of the segment), as
    `run_partition` returned it; None if they do not record them all."""
    if not manifests:
        return None
    extra = manifests[0].extra
    nodes = extra.get("segment")
    if not isinstance(nodes, dict) or set(nodes) != set(segment):
        return None
    return {
        "worker": str(extra.get("worker", "")),
        "seconds": float(extra.get("seconds", 0.0)),
        "nodes": nodes,
    }


def add_partition(stats: NodeStats, partition: str, facts: Mapping[str, Any], task: Any) -> None:
    """Add one partition's statistics (`facts`, of the task result `task`) to its node's."""
    stats.rows_in += int(facts["rows_in"])
    stats.chunks_in += int(facts["chunks_in"])
    stats.rows_out += int(facts["rows_out"])
    stats.chunks_out += int(facts["chunks_out"])
    stats.invalid_rows += int(facts["invalid_rows"])
    if facts.get("cursor") is not None:  # an incremental source is read whole, in one task
        stats.cursor = facts["cursor"]
        stats.cursor_seen = set(facts.get("cursor_seen") or ())
    stats.partitions.append(
        PartitionStats(
            partition=partition,
            worker=str(task["worker"]),
            rows=int(facts["rows_out"]),
            attempt=str(facts["attempt"]),
            seconds=float(task["seconds"]),
        )
    )


def add_node(stats: NodeStats, facts: Mapping[str, Any]) -> pa.Schema | None:
    """Set a node run whole from its task's statistics (`facts`); its output's columns."""
    from etlkit.engine.distributed.spec import read_schema

    for field in ("rows_in", "chunks_in", "rows_out", "chunks_out", "invalid_rows"):
        setattr(stats, field, int(facts[field]))
    stats.bytes_staged = int(facts["bytes_staged"])
    stats.cursor = facts["cursor"]
    stats.cursor_seen = set(facts["cursor_seen"])
    if "write" in facts:
        written = facts["write"]
        stats.write = WriteResult(written["rows"], written["uri"], written["extra"])
    return read_schema(facts["schema"]) if facts.get("schema") else None


@dataclass
class _FinishedParts:
    """The parts of every finished partition of a node: what `close_output` asks a writer
    for (`part_urls`) to run dataset checks over the whole output."""

    staging: Staging
    run_dir: str
    finishes: Mapping[str, Manifest | None]

    def part_urls(self) -> list[str]:
        return [
            self.staging.url(f"{self.run_dir}/{f.name}")
            for record in self.finishes.values()
            if record is not None
            for f in record.files
        ]


def commit_node(
    step: StepContext,
    partitions: Sequence[str],
    first_schema: pa.Schema | None,
    produced: list[str] | None,
) -> None:
    """Judge a node's whole output and commit its finished partitions as one output."""
    node, stats, options = step.node, step.stats, step.options
    output = Output([], first_schema, produced)  # no key proven increasing across partitions
    # each finish read once, for the dataset checks and the commit both
    finishes = read_all(step.staging, step.pipeline, step.run_id, step.name, partitions)
    run_dir = step.staging.run_dir(step.pipeline, step.run_id)
    parts = _FinishedParts(step.staging, run_dir, finishes)
    # close_output reads only `part_urls` of the writer it is given (there is no guard: each
    # partition's guard judged its chunks, and failed the run at the first invalid one)
    close_output(step, output, cast("NodeWriter", parts), None)
    guarded = options.validate and node.output_model is not None
    manifest = step.staging.commit_partitions(
        step.pipeline,
        step.run_id,
        step.name,
        partitions,
        empty_schema=output.first_schema,
        extra={
            "kind": node.kind,
            "chunks": stats.chunks_out,
            "invalid_rows": stats.invalid_rows,
            "policy": (node.expectations.on_invalid or options.on_invalid) if guarded else None,
            "validated": guarded,
            "partitions": len(partitions),
            **cursor_extra(node, step.ctx, stats),
        },
        finishes=finishes,
    )
    stats.bytes_staged = manifest.bytes
    stats.finished = time.perf_counter()


def commit_referenced(
    step: StepContext,
    referenced: _Reference,
    first_schema: pa.Schema | None,
    produced: list[str] | None,
) -> None:
    """Judge a source's whole output and commit it as a reference to its files (what a local
    run does for a source whose files may stand for its output): its partitions staged no
    parts."""
    output = Output([], first_schema, produced)
    close_output(step, output, None, None, referenced)
    commit_output(step, output, None, None, referenced)
    step.stats.finished = time.perf_counter()
