"""Importing `distributed` in this process without changing how exceptions pickle in it.

On import, `distributed` (and `dask` itself, in its recent versions) registers tblib's
reducers for every exception class loaded (`copyreg`): exceptions then pickle their causes
and tracebacks too, and one whose cause cannot be rebuilt from its `args` (a database
driver's error, say) no longer unpickles, anywhere in the process. The coordinator imports
it inside `pickling_kept`, which takes those registrations back; workers keep theirs (they
send tracebacks with them).
"""

from __future__ import annotations

import contextlib
import copyreg
from collections.abc import Iterator


@contextlib.contextmanager
def pickling_kept() -> Iterator[None]:
    """Import `distributed` in this block (see the module docstring): the reducers tblib
    registered in it are taken back at its end."""
    before = dict(copyreg.dispatch_table)
    try:
        yield
    finally:
        for kind, reducer in list(copyreg.dispatch_table.items()):
            function = getattr(reducer, "func", reducer)  # tblib registers partials too
            if str(getattr(function, "__module__", "")).startswith("tblib"):
                if kind in before:
                    copyreg.dispatch_table[kind] = before[kind]
                else:
                    del copyreg.dispatch_table[kind]
