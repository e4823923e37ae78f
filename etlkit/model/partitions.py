"""`Partition`: one piece of a source that can be read on its own, as plain JSON-able data.

A source that can be split (a glob of files, a Parquet file's row groups, a PostgreSQL key
range) returns its partitions from `Source.partitions(ctx)` and reads one with
`Source.read_partition(ctx, partition)`, maybe in another process or on another machine: a
partition crosses as JSON (`to_json`, `from_json`), never pickled.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from etlkit.errors import ConnectorError

#: A partition id: path-safe (a staging folder or file name), not hidden (no leading `.` or
#: `_`, which file readers skip), bounded in length.
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
#: Characters of a label kept in an id made by `Partition.labelled`, before its digest.
_LABEL_CHARS: Final = 80


@dataclass(frozen=True)
class Partition:
    """One piece of a source's data: an `id` and the `data` the source needs to read it.

    `id` is stable across runs while the partition reads the same thing (a file, a file's row
    groups, a key range), unique among the source's partitions, and path-safe: letters,
    digits, `.`, `_` and `-`, starting with a letter or digit, at most 128 characters.
    `data` is JSON-able (strings, numbers, booleans, None, lists, string-keyed objects); it is
    kept as JSON gives it back (tuples become lists), so a partition equals its JSON round
    trip.

        Partition.labelled("2025-01.csv", {"path": "/data/billing/2025-01.csv"})

    Raises:
        ConnectorError: the id is not path-safe, or `data` is not JSON-able.
    """

    id: str
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ConnectorError(
                f"partition id {self.id!r} is not path-safe: use letters, digits, '.', '_' "
                "and '-', starting with a letter or digit, at most 128 characters "
                "(Partition.labelled makes one from any label)."
            )
        object.__setattr__(self, "data", json.loads(_dumps(self.id, self.data)))

    @classmethod
    def labelled(cls, label: str, data: Mapping[str, Any]) -> Partition:
        """A partition whose id is `label` made path-safe, then a digest of `data`:
        `billing_2025-01.csv-3fa2c1d09b7e`, the same for the same label and data in every run.
        """
        slug = _UNSAFE.sub("_", label).lstrip("._-")[-_LABEL_CHARS:].lstrip("._-")
        digest = hashlib.blake2b(_dumps(label, data).encode(), digest_size=6).hexdigest()
        return cls(f"{slug}-{digest}" if slug else digest, data)

    def to_json(self) -> str:
        """The partition as JSON text, to send to another process."""
        return json.dumps({"id": self.id, "data": self.data}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Partition:
        """The partition `to_json` gave.

        Raises:
            ConnectorError: the text is not a partition's JSON.
        """
        try:
            value = json.loads(text)
            ok = isinstance(value, dict) and isinstance(value.get("id"), str)
            ok = ok and isinstance(value.get("data"), dict)
        except ValueError:
            ok = False
        if not ok or set(value) != {"id", "data"}:
            raise ConnectorError(
                f"not a partition's JSON (an object of 'id' and 'data'): {text[:200]!r}"
            )
        return cls(value["id"], value["data"])


def _dumps(id: str, data: Mapping[str, Any]) -> str:
    if not isinstance(data, Mapping):
        raise ConnectorError(f"partition {id!r}: data must be a mapping, not {type(data)}.")
    try:
        return json.dumps(dict(data), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConnectorError(
            f"partition {id!r}: data must be JSON-able (strings, numbers, booleans, None, lists "
            f"and string-keyed objects): {exc}"
        ) from exc
