"""Which process owns a run: `host|pid|start` names one process, and tells when it is gone.

A pid alone is not enough (pids are reused after a kill), so the process start time read from
`/proc` goes with it. Used to fail runs whose process was killed and to reclaim pool slots and
scheduler rows of processes that are gone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def process_start(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot, or None where unknown.

    Together with the pid it names one process: a pid reused after a kill has another start.
    Read from `/proc/<pid>/stat` (field 22; fields 3 on follow the command's closing ')').
    """
    try:
        text = Path(f"/proc/{pid:d}/stat").read_text()
    except (OSError, UnicodeDecodeError):
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def owner_of(pid: int | None) -> str | None:
    """`host|pid|start` naming process `pid` of this host (None for no pid)."""
    if pid is None:
        return None
    return f"{socket.gethostname()}|{pid:d}|{process_start(pid) or ''}"


def owner_gone(owner: str | None) -> str | None:
    """Why the owner process is gone (None: alive, on another host, or unknown)."""
    host, _, rest = (owner or "").partition("|")
    pid_text, _, start = rest.partition("|")
    if not pid_text.isdigit() or host != socket.gethostname():
        return None
    pid = int(pid_text)
    if not pid_alive(pid):
        return f"its process {pid} on {host} is gone"
    now_start = process_start(pid)
    if start and now_start is not None and now_start != start:
        return f"its process {pid} on {host} is gone (that pid now belongs to another process)"
    return None


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists on this host (it may belong to someone else)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
