"""SQL templates filled so that no value ever becomes SQL: `bind_sql` and what it returns.

Input names become quoted identifiers; dates, params and other template fields become bound
parameters (or, for drivers that cannot bind a literal's type, constants no value can end).
`Sql` nodes and connectors that run their own SQL (`etlkit.connector.bind_sql`) use it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from etlkit.errors import ConfigError, quoted
from etlkit.model.context import TEMPLATE_NAMES, Context

#: Typed literals whose text a bound value replaces as a cast: `date '{ds}'`.
_TYPED_LITERAL = re.compile(r"\b(date|timestamptz|timestamp|time|interval)\s*$", re.IGNORECASE)
_IDENTIFIER_TEXT = re.compile(r"[A-Za-z0-9_]+")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_$]")


@dataclass(frozen=True)
class BoundSql:
    """A SQL template with its param fields turned into placeholders, and their values.

    Attributes:
        text: the SQL; each param field is a placeholder (`$ds`), or a constant.
        params: placeholder name -> value, in the order of first use.
    """

    text: str
    params: dict[str, str]


def bind_sql(
    template: str,
    ctx: Context,
    identifiers: Mapping[str, str] | None = None,
    *,
    constant: Callable[[str], str] | None = None,
) -> BoundSql:
    """Fill a SQL template so that no param's text ever becomes SQL.

    - `{name}` in `identifiers` (a node's input) becomes that identifier, double-quoted.
    - Any other field (`{ds}`, `{flt}`, `{params[flt]}`) becomes a bound parameter: `$flt`,
      which DuckDB types by where it stands, as it types a literal. Glued to a name
      (`sales_{region}`) it is refused: a name built from a value goes in double quotes.
    - A string literal with fields (`'{ds}'`, `'{ds} 00:00'`, `'%{name}%'`) becomes one bound
      parameter holding the literal's text with the values filled in; after a type keyword
      (`date '{ds}'`) it becomes `CAST($p AS DATE)`.
    - Inside a double-quoted identifier (`"sales_{region}"`) a value is pasted only if it is
      letters, digits and underscores.
    - In comments, fields are left out.

    `constant`, for a driver that cannot bind a value as a literal's unknown type (ADBC's
    PostgreSQL driver binds text), writes each value as the constant it returns instead, which
    no value can end (a dollar-quoted string with a tag the value does not hold).

    Raises:
        ConfigError: an unknown field, a value not fit for an identifier, or a malformed
            template.
    """
    binder = _SqlBinder(template, ctx, identifiers or {}, constant=constant)
    return BoundSql(binder.bind(), binder.params)


class _SqlBinder:
    """One pass over a SQL template's text, tracking where each field stands."""

    def __init__(
        self,
        template: str,
        ctx: Context,
        identifiers: Mapping[str, str],
        *,
        constant: Callable[[str], str] | None,
    ) -> None:
        self.template = template
        self.ctx = ctx
        self.identifiers = identifiers
        self.constant = constant
        self.values = ctx.template_values()
        self.params: dict[str, str] = {}
        self.out: list[str] = []
        self.state = ""  # '', "'" (string), '"' (identifier), '--' or '/*' (comments)
        self.literal: list[str] = []  # the current string literal's text, values filled in
        self.literal_raw: list[str] = []  # its text as written
        self.literal_fields: list[tuple[str, str]] = []  # its fields: base name, text
        self.bound_field = ""  # the field just bound, if the template goes on right after it

    def bind(self) -> str:
        try:
            parts = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            problem = f"is malformed ({exc}); write literal braces as '{{{{' and '}}}}'"
            raise self.error(problem) from exc
        for literal, name, spec, conversion in parts:
            self.scan(literal)
            if name is not None:
                self.field(name, spec or "", conversion)
        if self.state == "'":
            self.close_literal()  # unterminated: DuckDB says so
        return "".join(self.out)

    def scan(self, text: str) -> None:
        if self.bound_field and _WORD_CHAR.fullmatch(text[:1]):
            raise self.in_name(self.bound_field)
        self.bound_field = ""
        i = 0
        while i < len(text):
            char, ahead = text[i], text[i + 1 : i + 2]
            state = self.state
            if state == "'":
                if char == "'" and ahead == "'":
                    self.literal.append("'")
                    self.literal_raw.append("''")
                    i += 2
                    continue
                if char == "'":
                    self.state = ""
                    self.close_literal()
                else:
                    self.literal.append(char)
                    self.literal_raw.append(char)
                i += 1
                continue
            self.out.append(char)
            if (state == '"' and char == '"') or (state == "--" and char == "\n"):
                self.state = ""
            elif state == "/*" and char == "*" and ahead == "/":
                self.out.append(ahead)
                self.state = ""
                i += 1
            elif not state and char == "'":
                self.out.pop()
                self.state = "'"
                self.literal, self.literal_raw, self.literal_fields = [], [], []
            elif not state and char == '"':
                self.state = '"'
            elif not state and char + ahead in ("--", "/*"):
                self.out.append(ahead)
                self.state = char + ahead
                i += 1
            i += 1

    def close_literal(self) -> None:
        if not self.literal_fields:
            self.out.append("'" + "".join(self.literal_raw) + "'")
            return
        text = "".join(self.literal)
        only = [base for base, value in self.literal_fields if value == text]
        base = only[0] if len(self.literal_fields) == 1 and only else "literal"
        placeholder = self.placeholder(base, text)
        before = "".join(self.out)
        typed = _TYPED_LITERAL.search(before)
        if typed:
            self.out = [before[: typed.start()], f"CAST({placeholder} AS {typed[1].upper()})"]
        else:
            self.out.append(placeholder)

    def field(self, field: str, spec: str, conversion: str | None) -> None:
        if "{" in spec:
            raise self.error(f"nests a field in the format of {{{field}}}, which SQL cannot use")
        plain = field in self.identifiers and not spec and conversion is None
        if self.state in ("--", "/*"):
            return
        if self.state == "'":
            text = field if plain else self.text(field, spec, conversion)
            self.literal_fields.append((_base_name(field), text))
            self.literal.append(text)
            self.literal_raw.append(text.replace("'", "''"))
        elif self.state == '"':
            text = field if plain else self.text(field, spec, conversion)
            if not _IDENTIFIER_TEXT.fullmatch(text):
                raise self.error(
                    f"puts {{{field}}} = {text!r} in a quoted identifier; there a value may "
                    "hold only letters, digits and underscores"
                )
            self.out.append(text)
        elif plain:
            self.out.append('"' + self.identifiers[field].replace('"', '""') + '"')
        else:
            text = self.text(field, spec, conversion)
            if self.out and _WORD_CHAR.fullmatch(self.out[-1][-1:]):
                raise self.in_name(field)
            self.out.append(self.placeholder(_base_name(field), text))
            self.bound_field = field

    def text(self, field: str, spec: str, conversion: str | None) -> str:
        formatter = string.Formatter()
        try:
            value, _ = formatter.get_field(field, (), self.values)
            return str(formatter.format_field(formatter.convert_field(value, conversion), spec))
        except KeyError as exc:
            raise self.error(
                f"uses {{{exc.args[0]}}}, which is neither an input, a built-in name "
                f"({', '.join(sorted(TEMPLATE_NAMES - {'params'}))}) nor a --param "
                f"(params: {quoted(sorted(self.ctx.params))})"
            ) from exc
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise self.error(f"cannot fill {{{field}}}: {exc}") from exc

    def placeholder(self, base: str, value: str) -> str:
        if self.constant is not None:
            return self.constant(value)
        name = base if base.isidentifier() and base.isascii() else "param"
        if (name in self.params and self.params[name] != value) or name == "literal":
            name = next(
                f"{name}_{n}"
                for n in range(1, len(self.params) + 2)
                if self.params.get(f"{name}_{n}", value) == value
            )
        self.params[name] = value
        return f"${name}"

    def in_name(self, field: str) -> ConfigError:
        return self.error(
            f"uses {{{field}}} as part of a name; a value is bound, never pasted into SQL: to "
            f'build a name from it, write the name in double quotes ("sales_{{{field}}}"), '
            "where a value may hold only letters, digits and underscores"
        )

    def error(self, problem: str) -> ConfigError:
        return ConfigError(
            f"Node '{self.ctx.node}' in pipeline '{self.ctx.pipeline}': SQL {self.template!r} "
            f"{problem}."
        )


def _base_name(field: str) -> str:
    """A placeholder's name for a field: `flt` for `{flt}`, `{params[flt]}` or `{flt!r}`."""
    key = re.fullmatch(r"params\[([A-Za-z_][A-Za-z0-9_]*)\]", field)
    return key[1] if key else re.split(r"[.\[]", field, maxsplit=1)[0]
