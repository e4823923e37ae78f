"""Delivering a notification to its callbacks: configured notifiers by name, or callables.

Notifying must never break a run: a callback that fails is logged (secrets masked) and reported
in the returned list, never raised.
"""

from __future__ import annotations

import difflib
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence

from etlkit.errors import NotificationError
from etlkit.runs.notifications.context import Callback, NotificationContext, Notifier, mask

logger = logging.getLogger(__name__)


def dispatch(
    callbacks: Sequence[Callback],
    ctx: NotificationContext,
    notifiers: Mapping[str, Notifier],
) -> list[str]:
    """Call every callback for `ctx`; never raise: return the problems (and log them, ERROR).

    Args:
        callbacks: names of configured notifiers, or callables taking the context.
        ctx: what to tell.
        notifiers: the configured notifiers by name (see `load_notifiers`).

    Returns:
        One message per callback that failed or names no configured notifier, secrets masked.
    """
    secrets = [v for notifier in notifiers.values() for v in getattr(notifier, "secret_values", ())]
    problems = []
    for callback in callbacks:
        if isinstance(callback, str):
            label = f"notifier '{callback}'"
            notifier = notifiers.get(callback)
            if notifier is None:
                close = difflib.get_close_matches(callback, list(notifiers), n=1)
                known = ", ".join(sorted(notifiers)) or "none"
                hint = f"Did you mean '{close[0]}'?" if close else f"Configured: {known}."
                problem = (
                    f"Unknown notifier '{callback}' for the {ctx.event} of run {ctx.run_id}: "
                    f"add [notifiers.{callback}] to etlkit.toml. {hint}"
                )
                logger.error("%s", problem)
                problems.append(problem)
                continue
            send: Callable[[NotificationContext], None] = notifier.send
        else:
            label = f"callback {getattr(callback, '__qualname__', repr(callback))}"
            send = callback
        try:
            send(ctx)
        # A notification must never break the run, whatever user callbacks raise: this is
        # the boundary where their errors are handled (logged and reported).
        except Exception as exc:
            problem = mask(
                f"{label} failed for the {ctx.event} of run {ctx.run_id} "
                f"(pipeline {ctx.pipeline}): {exc}",
                secrets,
            )
            logger.error("%s", problem)
            if not isinstance(exc, NotificationError):
                logger.debug("%s", mask("".join(traceback.format_exception(exc)), secrets))
            problems.append(problem)
        else:
            logger.info("%s notified of the %s of run %s", label, ctx.event, ctx.run_id)
    return problems
