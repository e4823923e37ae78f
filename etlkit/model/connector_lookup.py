"""Connectors found by name: the `etlkit.connectors` entry points installed packages declare.

Pipelines import connector classes directly; `etlkit connectors` lists what is installed (etlkit's
own connectors and third-party packages alike) and `find_connector` loads one by name. Entry
points are read on each call, so a package installed meanwhile is found too.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Final

from etlkit.errors import ConnectorError, ConnectorNotFoundError, quoted
from etlkit.model.node import Node
from etlkit.model.nodes import Sink, Source, Transform

#: The entry-point group where installed packages (etlkit's own `connectors` too) name their
#: node classes, so that a connector is found by name: `csv = "connectors.files:CsvSource"`.
CONNECTOR_GROUP: Final = "etlkit.connectors"


def connector_names() -> list[str]:
    """The names of the connectors installed packages declare, sorted."""
    return sorted({point.name for point in entry_points(group=CONNECTOR_GROUP)})


def find_connector(name: str) -> type[Node]:
    """The node class installed under `name` in the `etlkit.connectors` entry points.

    Read on each call (no cache): a package installed meanwhile is found too.

    Raises:
        ConnectorNotFoundError: no installed package declares `name` (with the known names).
        ConnectorError: the entry point does not load, or names something that is not a node.
    """
    points = [point for point in entry_points(group=CONNECTOR_GROUP) if point.name == name]
    if not points:
        known = connector_names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConnectorNotFoundError(
            f"No connector is installed under the name '{name}'.{hint} Installed: "
            f"{quoted(known)}. A package declares one in its [project.entry-points."
            f'"{CONNECTOR_GROUP}"] table; install it, or import the node class directly.'
        )
    return _load(points[0])


def _load(point: EntryPoint) -> type[Node]:
    """The node class an entry point names.

    Raises:
        ConnectorError: it does not load, or names something that is not a node.
    """
    name = point.name
    try:
        found = point.load()
    except Exception as exc:  # a third party's import error of any kind
        raise ConnectorError(
            f"Connector '{name}' ({point.value}) could not be loaded: "
            f"{type(exc).__name__}: {exc}. Check that its package and extras are installed."
        ) from exc
    if not (isinstance(found, type) and issubclass(found, Node)):
        raise ConnectorError(
            f"Connector '{name}' ({point.value}) is not a node class but {found!r}; its "
            "package's entry point must name a Source, Transform or Sink subclass."
        )
    return found


@dataclass(frozen=True)
class InstalledConnector:
    """One entry point of the group: its name, what it names, and the node's role or why it
    cannot be loaded."""

    name: str
    target: str
    role: str
    summary: str


def installed_connectors() -> list[InstalledConnector]:
    """Every connector installed packages declare, sorted by name, each loaded to tell its role
    (source, sink, transform); one that does not load says why instead of failing the listing."""
    roles: dict[type[Node], str] = {Source: "source", Sink: "sink", Transform: "transform"}
    found = []
    for point in sorted(entry_points(group=CONNECTOR_GROUP), key=lambda p: (p.name, p.value)):
        try:
            node = _load(point)
        except ConnectorError as exc:
            found.append(InstalledConnector(point.name, point.value, "cannot load", str(exc)))
            continue
        role = next((r for base, r in roles.items() if issubclass(node, base)), "node")
        summary = (node.__doc__ or "").strip().split("\n", 1)[0]
        found.append(InstalledConnector(point.name, point.value, role, summary))
    return found
