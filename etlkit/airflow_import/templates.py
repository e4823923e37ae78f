"""Airflow's Jinja templates translated to etlkit's `{name}` templates.

`{{ ds }}` becomes `{ds}`, `{{ params.x }}` the param `{x}`, `{{ var.value.x }}` a param `{x}`
too (etlkit has no variables store: a value passed with `--param`). Literal braces are doubled,
so a shell's `${HOME}` stays as it is. Anything else between `{{ }}` or `{% %}` (macros,
filters, XCom pulls, control blocks) is not translated: the caller reports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from etlkit.model.command_lines import quote_state

#: Airflow template names -> etlkit template names.
NAMES: Final = {
    "ds": "ds",
    "ds_nodash": "ds_nodash",
    "data_interval_start": "data_interval_start",
    "data_interval_end": "data_interval_end",
    "logical_date": "logical_date",
    "execution_date": "logical_date",
    "ts": "logical_date",
    "run_id": "run_id",
}
_EXPRESSION: Final = re.compile(r"\{\{(.*?)\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


@dataclass(frozen=True)
class Translation:
    """A translated template.

    Attributes:
        text: the etlkit template.
        params: params it uses (from `params.x` and `var.value.x`).
        variables: Airflow Variables it used (now params of the same name).
        untranslated: Jinja expressions left as they were (the text is then not a template).
    """

    text: str
    params: tuple[str, ...] = ()
    variables: tuple[str, ...] = ()
    untranslated: tuple[str, ...] = field(default=())


def translate(template: str, *, shell: bool = False) -> Translation:
    """Translate one Airflow template string.

    With `shell`, a field inside shell quotes closes them around itself (`"data/{{ ds }}.csv"`
    becomes `"data/"{ds}".csv"`), since etlkit shell-quotes every value and refuses a field
    inside quotes.
    """
    out: list[str] = []
    params: list[str] = []
    variables: list[str] = []
    untranslated: list[str] = []
    state = ""
    last = 0
    for match in _EXPRESSION.finditer(template):
        literal = template[last : match.start()]
        out.append(_escape(literal))
        state = quote_state(literal, state) if shell else ""
        last = match.end()
        name = _field(match.group(1) or "")
        if name is None:
            untranslated.append(match.group(0))
            out.append(_escape(match.group(0)))
            continue
        field_name, kind = name
        if kind == "param":
            params.append(field_name)
        elif kind == "variable":
            variables.append(field_name)
            params.append(field_name)
        out.append(f"{state}{{{field_name}}}{state}")
    tail = template[last:]
    out.append(_escape(tail))
    return Translation(
        "".join(out),
        tuple(dict.fromkeys(params)),
        tuple(dict.fromkeys(variables)),
        tuple(untranslated),
    )


def _field(expression: str) -> tuple[str, str] | None:
    """The etlkit field for a Jinja expression, and its kind (builtin, param, variable)."""
    text = expression.strip()
    if text in NAMES:
        return NAMES[text], "builtin"
    match = re.fullmatch(r"params\.([A-Za-z_][A-Za-z0-9_]*)", text) or re.fullmatch(
        r"params\[['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]\]", text
    )
    if match:
        return match.group(1), "param"
    match = re.fullmatch(r"var\.value\.([A-Za-z_][A-Za-z0-9_]*)", text)
    if match:
        return match.group(1), "variable"
    return None


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
