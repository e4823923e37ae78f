"""Which template fields a command line may hold, and where, so that no value becomes code.

A shell script (`shell=True`, or the argument of `sh -c`) gets every value shell-quoted, so a
field written inside quotes is refused; an interpreter's code (`python -c`, `perl -e`, ...)
refuses params, whose values would become code. `Command` checks its arguments with these when
it is declared; `etlkit import-airflow` reads shell quoting with `quote_state`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from etlkit.model.context import TEMPLATE_NAMES

#: Programs whose `-c` argument is a shell script: its template values are shell-quoted.
_SHELLS: Final = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"})
#: Interpreters and the option whose argument is code (a version suffix is ignored: python3.11).
_INTERPRETERS: Final = {"python": "c", "pypy": "c", "perl": "e", "ruby": "e", "node": "e"}


def script_index(argv: Sequence[str], *, shell: bool) -> int | None:
    """Which argument a shell parses: the command string with `shell`, else the one after
    `-c` (or `-lc`, `-ec`, ...) when the program is a shell (`["sh", "-c", "..."]`); None if
    none is."""
    if shell:
        return 0
    if Path(argv[0]).name not in _SHELLS:
        return None
    return _code_index(argv, "c")


def _code_index(argv: Sequence[str], flag: str) -> int | None:
    """The index of the argument after the first short option holding `flag`, if any."""
    for i, arg in enumerate(argv[1:-1], start=1):
        if re.fullmatch(rf"-[A-Za-z]*{flag}[A-Za-z]*", arg):
            return i + 1
    return None


def param_code_fields(argv: Sequence[str]) -> list[str]:
    """Problems with an interpreter's code argument (`python -c`, `perl -e`, ...) that uses a
    param: its value would become code. Built-in names (`{ds}`, `{run_id}`) have safe forms."""
    flag = _INTERPRETERS.get(re.sub(r"[0-9.]+$", "", Path(argv[0]).name))
    index = _code_index(argv, flag) if flag else None
    if index is None:
        return []
    try:
        parsed = list(string.Formatter().parse(argv[index]))
    except ValueError:
        return []  # reported when rendered
    safe = TEMPLATE_NAMES - {"params"}
    return [
        f"the code of `{Path(argv[0]).name} -{flag}` uses {{{field}}}: a param's value would "
        f"become code; pass it as an argument (`sys.argv[1]`) or in env instead"
        for _, field, _, _ in parsed
        if field is not None and re.split(r"[.\[!:]", field, maxsplit=1)[0] not in safe
    ]


def quoted_fields(script: str) -> list[str]:
    """Problems with a shell script template: fields inside quotes, where a quoted value
    would end the user's quotes (`'{x}'`) or still be expanded (`"$(...)"`)."""
    try:
        parsed = list(string.Formatter().parse(script))
    except ValueError as exc:
        return [f"command {script!r} is malformed ({exc}); write literal braces as '{{{{' '}}}}'"]
    problems = []
    state = ""  # the quote the shell is inside: '', "'" or '"'
    for literal, field, _, _ in parsed:
        state = quote_state(literal, state)
        if field is not None and state:
            problems.append(
                f"in shell command {script!r}, {{{field}}} is inside {state}quotes{state}: "
                "values are shell-quoted for you, write {" + field + "} without quotes"
            )
    return problems


def quote_state(text: str, state: str) -> str:
    """The shell's quoting state after `text`, starting in `state` ('', "'" or '"')."""
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif state == "'":
            state = "" if char == "'" else state
        elif char == "\\":
            escaped = True
        elif char == state:
            state = ""
        elif not state and char in "'\"":
            state = char
    return state
