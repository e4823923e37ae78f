"""The secrets a run needs on the Dask workers: the named connections its nodes use, and the
staging root's storage options (credentials of an s3:// root), shipped and made current there.

A local run's node threads see the connections its caller activated (a context variable of
`etlkit.settings.connections`); a worker process has none. The coordinator resolves the
connections the plan's nodes name (`conn=`; only those, never every one it knows) and sends
their fields, with the staging's options, as JSON inside a `Sealed` value, whose `repr` and
`str` show `***`: Dask logs a failed task's arguments (`Compute Failed ... Task: ...`), and
the run's JSON spec, which has no secret, may be printed anywhere. Each
task makes them current around its work (`current`), in its own thread's context, as the
local executor's threads have them, and masks their secrets out of the failures it returns
(`masked`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from etlkit.settings.connections import (
    Connection,
    SecretStr,
    activate,
    active_connections,
    mask,
)

if TYPE_CHECKING:
    from etlkit.model.graph import Graph


class Sealed:
    """JSON text that holds secrets: shown as `Sealed(***)`, read with `reveal`.

    It crosses to the workers in Dask's own task message (the run's connections are
    configuration, not data), and never in a spec, log line or error message.
    """

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def __repr__(self) -> str:
        return "Sealed(***)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[Sealed], tuple[str]]:
        return (Sealed, (self._text,))

    def reveal(self) -> str:
        """The JSON text, for the worker that makes the connections current."""
        return self._text


def named(graph: Graph) -> list[str]:
    """The connection names the graph's nodes use (`conn=`), lower case, sorted."""
    found = {getattr(node, "conn", None) for node in graph.nodes.values()}
    return sorted({n.strip().lower() for n in found if isinstance(n, str) and n.strip()})


def seal(graph: Graph, storage_options: Mapping[str, Any]) -> Sealed:
    """The connections of this context the graph's nodes name, and the staging's
    `storage_options` (JSON-able), for the workers.

    None activated here: the workers have none either (a node using one fails there as it
    would here, with the same message). A name not defined here is left out: the worker's
    `resolve` then fails naming it, with how to define it.
    """
    known = active_connections()
    shipped = {name: _fields(known[name]) for name in named(graph) if name in known}
    value = {
        "connections": shipped if known else None,  # None: `resolve` says to activate them
        "storage_options": dict(storage_options),
    }
    return Sealed(json.dumps(value, sort_keys=True))


def _fields(conn: Connection) -> dict[str, Any]:
    password = conn.password.get_secret_value() if conn.password is not None else None
    return {
        "name": conn.name,
        "kind": conn.kind,
        "host": conn.host,
        "port": conn.port,
        "login": conn.login,
        "password": password,
        "database": conn.database,
        "extra": dict(conn.extra),
        "source": conn.source,
        "problem": conn.problem,
    }


def unsealed(sealed: Sealed) -> dict[str, Connection] | None:
    """The connections `seal` shipped (None: the coordinator had none activated)."""
    value = json.loads(sealed.reveal())["connections"]
    if value is None:
        return None
    found = {}
    for name, fields in value.items():
        password = fields.pop("password")
        secret = SecretStr(password) if password is not None else None
        found[name] = Connection(**fields, password=secret)
    return found


def staging_options(sealed: Sealed) -> dict[str, Any]:
    """The staging root's storage options `seal` shipped (empty for a local root)."""
    found: dict[str, Any] = json.loads(sealed.reveal())["storage_options"]
    return found


@contextlib.contextmanager
def current(sealed: Sealed) -> Iterator[Mapping[str, Connection]]:
    """Make the shipped connections the ones `resolve(name)` finds in this thread's
    context while the block runs; the ones before are current again after it."""
    connections = unsealed(sealed)
    previous = activate(connections)
    try:
        yield connections or {}
    finally:
        activate(previous)


def masked(text: str, connections: Mapping[str, Connection]) -> str:
    """`text` with the connections' secrets replaced by `***`."""
    return mask(text, connections) if connections else text
