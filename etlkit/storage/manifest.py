"""The manifest of a committed output: what it holds, how it was made, and its JSON.

A manifest lists an output's parts (`StagedFile`: name, rows, bytes, footer checksum), its
columns, and how it was made. Staging writes it into the footer of the committed
`<node>.parquet` (key `MANIFEST_KEY`); runs staged in the older directory layout keep it in
`<node>/_manifest.json` (`LEGACY_MANIFEST`). A reference to a source's own files (instead of a
copy) records in its manifest the columns read, their casts and the format the files are read
in: `reference_details` writes that record, `Manifest.reference_select` and
`Manifest.reference_format` read it back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from etlkit.storage.formats import FileFormat, file_format

#: The footer key holding a committed output's manifest (JSON).
MANIFEST_KEY: Final = "etlkit.manifest"
#: The manifest file of the layout before markers (`<node>/_manifest.json`), still read.
LEGACY_MANIFEST: Final = "_manifest.json"


@dataclass(frozen=True)
class StagedFile:
    """One committed Parquet part of a node's output.

    `checksum` is the CRC-32 of the part's Parquet footer (which holds every column chunk's
    offsets, sizes and statistics): with the byte size, it detects a truncated, replaced or
    rewritten part without reading the data again.
    """

    name: str
    rows: int
    bytes: int
    checksum: str = ""


@dataclass(frozen=True)
class Manifest:
    """What a node's committed output holds and how it was made.

    `files` are the parts in order, named relative to the run's directory (a reference to a
    source's own files lists their URLs instead). The last part of most outputs is the committed
    `<node>.parquet` itself: its entry has no checksum (the manifest is inside that file's footer)
    and its byte size is filled in when the manifest is read.
    """

    pipeline: str
    run_id: str
    node: str
    rows: int
    bytes: int
    files: tuple[StagedFile, ...]
    schema: tuple[tuple[str, str], ...]
    committed_at: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The manifest as JSON text."""
        data = {
            "format_version": 2,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "node": self.node,
            "rows": self.rows,
            "bytes": self.bytes,
            "files": [
                {"name": f.name, "rows": f.rows, "bytes": f.bytes, "checksum": f.checksum}
                for f in self.files
            ],
            "schema": [list(pair) for pair in self.schema],
            "committed_at": self.committed_at,
            "extra": dict(self.extra),
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def reference_select(self) -> list[tuple[str, str | None]] | None:
        """For a reference to a source's own files: the columns read and their SQL casts."""
        reference = self.extra.get("reference")
        if not isinstance(reference, Mapping):
            return None
        return [(str(c), t) for c, t in reference.get("select", [])]

    @property
    def reference_format(self) -> FileFormat | None:
        """For a reference to a source's own files: the format they are read in (None for
        staged parts). References staged before formats were named hold a `csv` layout, or
        nothing for Parquet files.

        Raises:
            StagingError: no installed package provides the format.
        """
        reference = self.extra.get("reference")
        if not isinstance(reference, Mapping):
            return None
        if reference.get("csv") is not None:
            return file_format("csv", reference["csv"])
        return file_format(str(reference.get("format", "parquet")), reference.get("options"))

    def select_sql(self, *, omit: str | None = None) -> str:
        """The SELECT list that reads this output's files as its node yields it: `*` for staged
        parts; for a reference to a source's own files, only the columns it reads, cast to its
        model's types. `omit`: a column left out, if the output has it.
        """
        select = self.reference_select
        if select is None:
            if omit is not None and omit in (c for c, _ in self.schema):
                return f"* EXCLUDE ({_quote(omit)})"
            return "*"
        return ", ".join(
            f"CAST({_quote(c)} AS {t}) AS {_quote(c)}" if t else _quote(c)
            for c, t in select
            if c != omit
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest written by `to_json` (or by the older, directory layout)."""
        data = json.loads(text)
        data.pop("format_version", None)
        data["files"] = tuple(StagedFile(**f) for f in data["files"])
        data["schema"] = tuple(tuple(pair) for pair in data["schema"])
        return cls(**data)

    def with_marker_size(self, marker: str, size: int) -> Manifest:
        """This manifest with the committed file `marker`'s byte size filled in."""
        files = tuple(
            StagedFile(f.name, f.rows, size, f.checksum) if f.name == marker else f
            for f in self.files
        )
        return Manifest(  # not `replace`, which re-runs __init__: once per staged node
            pipeline=self.pipeline,
            run_id=self.run_id,
            node=self.node,
            rows=self.rows,
            bytes=sum(f.bytes for f in files),
            files=files,
            schema=self.schema,
            committed_at=self.committed_at,
            extra=self.extra,
        )


def reference_details(
    select: Sequence[tuple[str, str | None]],
    read_as: FileFormat,
    extra: Mapping[str, Any] | None,
) -> tuple[tuple[tuple[str, str], ...], dict[str, Any]]:
    """The columns and the `extra` of the manifest of a reference to a source's own files.

    `select` lists the columns read and the SQL type each is cast to (None: as stored, or as
    `read_as` parses it); `extra["reference"]` records them with the format and its options,
    as `Manifest.reference_select` and `Manifest.reference_format` read them back.
    """
    reference: dict[str, Any] = {
        "select": [list(pair) for pair in select],
        "format": read_as.name,
        "options": read_as.to_json(),
    }
    stored = {c: "as stored" for c, _ in select}
    if read_as.schema is not None:
        stored = {f.name: str(f.type) for f in read_as.schema}
    details = {"reference": reference, **dict(extra or {})}
    return tuple((c, t or stored[c]) for c, t in select), details


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
