"""In-run retries: whether a failed node is retried, and after how long."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etlkit.errors import (
    ConfigError,
    DataValidationError,
    PermanentError,
    RunCancelledError,
    RunTimeoutError,
)

if TYPE_CHECKING:
    from etlkit.engine.execution import RunResult
    from etlkit.runs.spec import RunSpec
    from etlkit.settings.config import Settings


def failed_node(result: RunResult) -> str:
    """The node a failed run's error names ("" when it names none)."""
    return str(getattr(result.error, "node", "") or "")


def _retryable(error: BaseException | None, retry_validation: bool) -> bool:
    if error is None or isinstance(error, RunTimeoutError | RunCancelledError):
        return False
    if isinstance(error, DataValidationError):
        return retry_validation
    cause = error.__cause__
    if isinstance(error, PermanentError) or isinstance(cause, PermanentError | ConfigError):
        return False
    return not isinstance(cause, DataValidationError) or retry_validation


def retry_delay(
    pipeline: RunSpec, settings: Settings, result: RunResult, retries: dict[str, int]
) -> float | None:
    """Seconds to wait before retrying the failed node, or None when it is not retried."""
    if result.state != "failed":
        return None
    name = failed_node(result)
    node = pipeline.graph().nodes.get(name)
    if node is None:
        return None
    options = node.run_options
    if not _retryable(result.error, options.retry_validation_errors):
        return None
    allowed = options.retries if options.retries is not None else settings.run.retries
    done = retries.get(name, 0)
    if done >= allowed:
        return None
    retries[name] = done + 1
    delay = options.retry_delay if options.retry_delay is not None else settings.run.retry_delay
    backoff = (
        options.retry_exponential_backoff
        if options.retry_exponential_backoff is not None
        else settings.run.retry_exponential_backoff
    )
    if backoff:
        delay *= 2**done
    cap = options.max_retry_delay or settings.run.max_retry_delay
    return min(delay, cap) if cap is not None else delay
