"""Path safety for staging: which names may become a part of a staging path.

Pipeline names, run ids and node names become directories and files under a staging root (and
names of DuckDB views); `check_path_part` rejects any that could escape the root, and
`is_safe_name` filters directory listings, which may hold other entries.
"""

from __future__ import annotations

import re

from etlkit.errors import StagingError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_path_part(kind: str, value: str) -> str:
    """Reject names that could escape the staging root (`..`, `/`, empty, odd characters).

    Raises:
        StagingError: names the offending value.
    """
    if not _SAFE.fullmatch(value) or ".." in value:
        raise StagingError(
            f"{kind} {value!r} is not safe in a staging path: use letters, digits, '_', '-' "
            "and '.', starting with a letter or digit, without '..'"
        )
    return value


def is_safe_name(name: str) -> bool:
    """Whether `check_path_part` accepts `name` (directory listings may hold other entries)."""
    try:
        check_path_part("staged name", name)
    except StagingError:
        return False
    return True
