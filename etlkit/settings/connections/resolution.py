"""The connections of the current context: `activate` them at the edge, `resolve(name)` in nodes.

One value per context (thread, run), never per process, so two runs in one process do not see
each other's connections.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from contextvars import ContextVar

from etlkit.errors import ConfigError, ConnectionNotFoundError
from etlkit.settings.connections.model import ENV_PREFIX, URI_SHAPE, Connection

#: The connections `resolve(name)` finds: one value per context (thread, run), not per process.
_active: ContextVar[Mapping[str, Connection] | None] = ContextVar(
    "etlkit_connections", default=None
)


def activate(connections: Mapping[str, Connection] | None) -> Mapping[str, Connection] | None:
    """Make `connections` the ones `resolve(name)` finds in this context; return the previous.

    Called once at the edge (the CLI, the scheduler, a run's child process) with the result of
    `load_connections`. The value belongs to the calling thread's context: a run started from
    it carries it to the run's node threads, and another thread (another run) activates its
    own. `activate(None)` forgets them. Nothing calls it at import.
    """
    previous = _active.get()
    _active.set(None if connections is None else dict(connections))
    return previous


def active_connections() -> Mapping[str, Connection]:
    """The connections `activate` made current in this context (empty when none were)."""
    return dict(_active.get() or {})


def resolve(name: str, *, connections: Mapping[str, Connection] | None = None) -> Connection:
    """The connection called `name` (any case), from `connections` or the activated ones.

    Raises:
        ConnectionNotFoundError: no such connection (with a did-you-mean and how to define
            one), or none are activated in this process.
        ConfigError: the connection is defined but unusable (its `problem`).
    """
    known = _active.get() if connections is None else connections
    if known is None:
        raise _not_found(name, [], loaded=False)
    conn = known.get(name.strip().lower())
    if conn is None:
        raise _not_found(name, known)
    if conn.problem:
        raise ConfigError(conn.problem)
    return conn


def _not_found(name: str, known: Iterable[str], *, loaded: bool = True) -> ConnectionNotFoundError:
    """The error for a connection `name` that is not among `known` (or none are `loaded`)."""
    names = sorted(known)
    key = name.strip().upper()
    define = (
        f"Define it with {ENV_PREFIX}{key}={URI_SHAPE} (URL-encode the password) or a "
        f"[connections.{name.strip().lower()}] table in etlkit.toml."
    )
    if not loaded:
        message = (
            f"Connection '{name}' cannot be resolved: no connections are loaded in this "
            "process, or not in this thread (connections belong to the thread that activated "
            "them and to the runs it starts). The etlkit CLI and scheduler load them; in your "
            "own code call etlkit.settings.connections.activate("
            "etlkit.settings.connections.load_connections(Path('.'))) "
            f"first, in the thread that starts the run. {define}"
        )
    else:
        close = difflib.get_close_matches(name.strip().lower(), names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        listed = ", ".join(names) if names else "none"
        message = f"Connection '{name}' is not defined.{hint} Known: {listed}. {define}"
    return ConnectionNotFoundError(message, name=name, known=names)
