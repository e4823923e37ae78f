"""The errors a run on Dask fails with: a node's failure in a task, named with its partition.

A task catches its nodes' failures at the node boundary and returns them described (type,
message, node, partition, worker; see `tasks`), never as pickled exceptions; `reported` turns
such a description into the error the local executor would raise, with the partition and
the worker added. `lost` is the error of a task that did not return: its workers kept dying
(Dask gave up after its allowed failures), or it raised before reaching a node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from etlkit.errors import DataValidationError, EtlkitError, NodeError


def node_failure(
    pipeline: str, run_id: str, name: str, cause: str, partition: str = "", worker: str = ""
) -> NodeError:
    """A node's failure, naming where it ran."""
    where = f" in partition '{partition}'" if partition else ""
    on = f" (on worker {worker})" if worker else ""
    return NodeError(
        f"Node '{name}' in pipeline '{pipeline}' (run {run_id}) failed{where}{on}: {cause}",
        pipeline=pipeline,
        node=name,
        run_id=run_id,
    )


def reported(pipeline: str, run_id: str, source: str, failed: Mapping[str, Any]) -> EtlkitError:
    """The error a task described (`failed`), in a partition of `source`'s segment or ("")
    in a node run whole: a contract broken stays a `DataValidationError`, with the
    partition named; a node's failure is a `NodeError`."""
    name, partition, worker = failed["node"], failed["partition"], failed["worker"]
    message = str(failed["message"])
    where = f" [partition '{partition}' of source '{source}', on worker {worker}]"
    if failed["validation"]:
        return DataValidationError(message + (where if partition else ""))
    if failed["etlkit"] and message.startswith(f"Node '{name}'"):  # already says which node
        return NodeError(
            message + (where if partition else ""), pipeline=pipeline, node=name, run_id=run_id
        )
    cause = message if failed["etlkit"] else f"{failed['type']}: {message}"
    return node_failure(pipeline, run_id, name, cause, partition, worker)


def lost(
    pipeline: str, run_id: str, name: str, partition: str, exc: BaseException | None
) -> NodeError:
    """The error of a task that did not return (`exc`: what Dask reports, None: cancelled)."""
    if exc is None:
        cause = "its task was cancelled"
    elif isinstance(exc, EtlkitError) and not isinstance(exc, NodeError):
        cause = str(exc)
    else:
        cause = f"{type(exc).__name__}: {exc}"
    return node_failure(pipeline, run_id, name, cause, partition)
