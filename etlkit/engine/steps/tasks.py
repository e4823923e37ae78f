"""The task and sensor steps: run a `Task` once, poke a `Sensor` until it passes or gives up.

A sensor's wait ends early when the run is cancelled (`cancel`); its outcome "skipped" (a soft
fail) skips the run, which the executor decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etlkit.errors import RunCancelledError

if TYPE_CHECKING:
    import threading

    from etlkit.model.nodes import Context, Sensor, Task
    from etlkit.model.sensors import WaitOutcome


def run_task(node: Task, ctx: Context) -> None:
    node.run(ctx)


def poke(node: Sensor, ctx: Context, cancel: threading.Event) -> WaitOutcome:
    """Wait for the sensor's condition: "done", or "skipped" when it timed out softly."""
    from etlkit.model.sensors import wait

    outcome = wait(node, ctx, cancel=cancel)
    if cancel.is_set():
        raise RunCancelledError("run cancelled")
    return outcome
