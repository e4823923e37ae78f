"""The node roles a pipeline is made of: Source, Transform, Sink, Sql and Lazy, and their Context.

Each role has one small base class with one required method:

- `Source.read(ctx)` yields `pyarrow.RecordBatch` chunks.
- `Transform[In, Out].process(batch, ctx)` maps one polars DataFrame chunk to another.
- `Sink.write(batches, ctx)` consumes an iterator of record batches and returns a `WriteResult`.
- `Sql(query)` runs DuckDB SQL over its inputs' staged outputs, inputs named in braces.
- `Lazy[Out].query(ctx, *frames)` builds a polars LazyFrame over its inputs' staged outputs,
  executed by polars' streaming engine.

Node names are the attribute names on the pipeline class. Inputs are other nodes (or node names,
resolved when the pipeline's graph is built).
"""

from __future__ import annotations

import difflib
import json
import re
import string
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Literal, Self, TypeVar

from etlkit.errors import (
    ConfigError,
    ConnectorError,
    ConnectorNotFoundError,
    PipelineDefinitionError,
    quoted,
)

if TYPE_CHECKING:
    import pandera.polars as pdp
    import polars as pl
    import pyarrow as pa

    from etlkit.storage.formats import FileFormat

    Model = type[pdp.DataFrameModel]
else:
    Model = type

InT = TypeVar("InT")
OutT = TypeVar("OutT")

Kind = Literal["source", "transform", "sink", "sql", "lazy", "sensor", "task"]

#: Names usable in path and SQL templates besides params; no node may be called one of these.
TEMPLATE_NAMES: frozenset[str] = frozenset(
    {
        "ds",
        "ds_nodash",
        "logical_date",
        "data_interval_start",
        "data_interval_end",
        "run_id",
        "pipeline",
        "node",
        "params",
    }
)


@dataclass(frozen=True)
class Context:
    """What a node knows about the run it is part of.

    Attributes:
        pipeline: the pipeline's name (its class name in snake_case).
        run_id: the run's unique, sortable, path-safe id.
        node: the name of the node being run ('' outside a node).
        logical_date: the date the run is for (`--date`), timezone-aware.
        params: `--param key=value` pairs.
        chunk_rows: the preferred number of rows per chunk (a hint for sources).
        data_interval_start: start of the data interval the run covers.
        data_interval_end: end of the data interval the run covers.
        cursors: per node, the last cursor value an incremental source loaded (as text).
        store_path: the run store's path, for nodes that look at other runs (sensors).
        cancelled: returns True once the run is being cancelled (poll it in long waits).
    """

    pipeline: str
    run_id: str
    logical_date: datetime
    node: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    chunk_rows: int = 131_072
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    cursors: Mapping[str, str] = field(default_factory=dict)
    store_path: str | None = None
    cancelled: Callable[[], bool] = field(default=lambda: False, compare=False, repr=False)

    @property
    def cursor(self) -> str | None:
        """The last cursor value this (incremental) node loaded, or None on its first run."""
        return self.cursors.get(self.node)

    @property
    def load_id(self) -> str:
        """This node's load in this run: `pipeline/run_id/node`, the same on every retry.

        Sinks record it with what they commit, so a retry after a kill between the
        destination's commit and the run store's finds the load and does not repeat it.
        """
        return f"{self.pipeline}/{self.run_id}/{self.node}"

    @property
    def ds(self) -> str:
        """The logical date as `YYYY-MM-DD`."""
        return self.logical_date.strftime("%Y-%m-%d")

    @property
    def ds_nodash(self) -> str:
        """The logical date as `YYYYMMDD`."""
        return self.logical_date.strftime("%Y%m%d")

    def template_values(self) -> dict[str, Any]:
        """The names a path or SQL template may use: `{ds}`, `{run_id}`, params by name, ..."""
        values: dict[str, Any] = dict(self.params)
        values.update(
            ds=self.ds,
            ds_nodash=self.ds_nodash,
            logical_date=self.logical_date.isoformat(),
            data_interval_start=(self.data_interval_start or self.logical_date).isoformat(),
            data_interval_end=(self.data_interval_end or self.logical_date).isoformat(),
            run_id=self.run_id,
            pipeline=self.pipeline,
            node=self.node,
            params=dict(self.params),
        )
        return values

    def render(
        self,
        template: str,
        extra: Mapping[str, str] | None = None,
        *,
        quote: Callable[[str], str] | None = None,
    ) -> str:
        """Fill `template`'s `{name}` fields from the context (and `extra`).

        `quote`, if given, is applied to the whole text of every field once it is formatted
        (`{x}`, `{params[x]}`, `{x!r}`, `{x:>8}` alike), as a shell needs each value quoted.

        Raises:
            ConfigError: the template names a field the context does not have.
        """
        values = self.template_values()
        if extra:
            values.update(extra)
        try:
            if quote is not None:
                return _QuotingFormatter(quote).vformat(template, (), values)
            return template.format_map(values)
        except KeyError as exc:
            raise ConfigError(
                f"Node '{self.node}' in pipeline '{self.pipeline}': template {template!r} "
                f"uses {{{exc.args[0]}}}, which is neither a built-in name "
                f"({', '.join(sorted(TEMPLATE_NAMES - {'params'}))}) nor a --param "
                f"(params: {quoted(sorted(self.params))})."
            ) from exc
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise ConfigError(
                f"Node '{self.node}' in pipeline '{self.pipeline}': template {template!r} "
                f"is malformed ({exc}); write literal braces as '{{{{' and '}}}}'."
            ) from exc

    def for_node(self, node: str) -> Context:
        """This context, for the named node."""
        # not `replace`, which re-runs __init__, nor `copy.copy` (its reduce protocol costs
        # more than this): one per node adds up on graphs of quick nodes
        ctx = object.__new__(type(self))
        ctx.__dict__.update(self.__dict__, node=node)
        return ctx


class _QuotingFormatter(string.Formatter):
    """`str.format_map` that passes each field's formatted text through `quote`."""

    def __init__(self, quote: Callable[[str], str]) -> None:
        self.quote = quote

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):  # `{}` or `{0}`: a template has no positional values
            raise ValueError(f"field {{{key}}} has no name")
        return kwargs[key]

    def format_field(self, value: Any, format_spec: str) -> str:
        return self.quote(super().format_field(value, format_spec))


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


Policy = Literal["fail", "drop", "quarantine"]
POLICIES: tuple[Policy, ...] = ("fail", "drop", "quarantine")


@dataclass(frozen=True)
class Expectations:
    """Dataset-level checks on a node's output and its policy for invalid rows (see `expect`)."""

    min_rows: int | None = None
    max_rows: int | None = None
    unique: tuple[str, ...] = ()
    sql: tuple[str, ...] = ()
    on_invalid: Policy | None = None
    max_invalid_fraction: float | None = None

    @property
    def dataset_checks(self) -> bool:
        """Whether checks need the node's whole staged output (uniqueness, SQL assertions)."""
        return bool(self.unique or self.sql)


@dataclass(frozen=True)
class NodeOptions:
    """How a node runs: retries, timeout and pool (see `Node.options`); None means the default."""

    retries: int | None = None
    retry_delay: float | None = None
    retry_exponential_backoff: bool | None = None
    max_retry_delay: float | None = None
    retry_validation_errors: bool = False
    timeout: float | None = None
    pool: str | None = None


@dataclass(frozen=True)
class WriteResult:
    """What a sink wrote: the rows, where to (a URI or table name) and free-form facts."""

    rows: int
    uri: str
    extra: Mapping[str, Any] = field(default_factory=dict)


class Node:
    """Base of every node. Users subclass one of the roles below, never this directly.

    Attributes:
        name: the attribute name on the pipeline class (set when the class is created).
        inputs: upstream nodes, or node names resolved when the graph is built.
        input_model: the Pandera model this node expects from its inputs, if declared.
        output_model: the Pandera model of what this node produces, if declared.
        stage: whether the node's output is staged as Parquet (blocking consumers force it).
    """

    kind: ClassVar[Kind]
    input_model: Model | None = None
    output_model: Model | None = None

    def __init__(self, *inputs: Node | str, stage: bool = True) -> None:
        for item in inputs:
            if not isinstance(item, Node | str):
                raise PipelineDefinitionError(
                    "?",
                    [
                        f"{type(self).__name__} got an input of type {type(item).__name__}; "
                        "inputs are nodes (or node names)"
                    ],
                )
        self.inputs: tuple[Node | str, ...] = tuple(inputs)
        self.stage = stage
        self.name = ""
        self.expectations = Expectations()
        self.run_options = NodeOptions()
        self.cursor_column: str | None = None
        self.cursor_key: tuple[str, ...] = ()

    def incremental(self, cursor: str, *, primary_key: Sequence[str] = ()) -> Self:
        """Load only rows not loaded yet: those whose `cursor` column is at or above the
        largest value an earlier successful run loaded, less the rows it loaded at that value.

            visits = PostgresSource(conn="hospital_db", table="visits", schema=Visit)
            visits = visits.incremental("updated_at", primary_key=["visit_id"])

        The boundary is inclusive, as dlt's `incremental` is: rows arriving late with the
        same cursor value as the last loaded row are loaded, not skipped. The rows loaded at
        the largest value are remembered by a hash of their `primary_key` columns (of the
        whole row when none is given) and not loaded twice.

        The cursor is taken from the source's committed output, whichever attempt of the run
        committed it (an in-run retry, `etlkit retry RUN`), and stored per pipeline and node
        once the run succeeds: a failed run does not advance it. `etlkit state show/reset
        PIPELINE` inspects or resets it. Connectors that can push the predicate down read
        `ctx.cursor` (`column >= value`); every source is also filtered as it streams.
        """
        self.cursor_column = cursor
        self.cursor_key = tuple(primary_key)
        return self

    def options(
        self,
        *,
        retries: int | None = None,
        retry_delay: float | None = None,
        retry_exponential_backoff: bool | None = None,
        max_retry_delay: float | None = None,
        retry_validation_errors: bool = False,
        timeout: float | None = None,
        pool: str | None = None,
    ) -> Self:
        """Set how the node runs; returns the node. Unset values fall back to the pipeline's.

            load = PostgresSink(cleaned, conn="warehouse", table="t").options(
                retries=3, retry_delay=30, retry_exponential_backoff=True, pool="warehouse"
            )

        Args:
            retries: attempts after the first failure; a retried node restarts from its inputs'
                staged outputs (committed nodes are not recomputed).
            retry_delay: seconds before the first retry.
            retry_exponential_backoff: double the delay on each further retry.
            max_retry_delay: cap on the delay, in seconds.
            retry_validation_errors: retry data validation failures too (off: bad data rarely
                fixes itself).
            timeout: seconds the node may run; it is cancelled at the next chunk boundary, or
                abandoned if it does not yield.
            pool: a named pool (`[pools]` in etlkit.toml) whose slots bound how many nodes using
                it run at once, across runs.
        """
        problems = []
        for label, value in (("retries", retries), ("retry_delay", retry_delay)):
            if value is not None and value < 0:
                problems.append(f"{label} must be >= 0")
        for label, value in (("timeout", timeout), ("max_retry_delay", max_retry_delay)):
            if value is not None and value <= 0:
                problems.append(f"{label} must be > 0")
        if problems:
            raise PipelineDefinitionError(self.name or type(self).__name__, problems)
        self.run_options = NodeOptions(
            retries=retries,
            retry_delay=retry_delay,
            retry_exponential_backoff=retry_exponential_backoff,
            max_retry_delay=max_retry_delay,
            retry_validation_errors=retry_validation_errors,
            timeout=timeout,
            pool=pool,
        )
        return self

    def expect(
        self,
        *,
        min_rows: int | None = None,
        max_rows: int | None = None,
        unique: Sequence[str] = (),
        sql: Sequence[str] = (),
        on_invalid: Policy | None = None,
        max_invalid_fraction: float | None = None,
    ) -> Self:
        """Declare checks on the node's output and what to do with invalid rows; returns the node.

            patients = CsvSource("patients.csv", schema=RawPatient).expect(
                min_rows=1, unique=["patient_id"], on_invalid="quarantine"
            )

        Args:
            min_rows: fewer output rows fail the run (`min_rows=1`: "no data found").
            max_rows: more output rows fail the run.
            unique: columns whose combination must be unique across the whole output.
            sql: assertions as DuckDB queries over `{output}` returning the offending rows;
                any row returned fails the run.
            on_invalid: rows breaking the output model: `fail` the run (default), `drop` them
                (counted), or `quarantine` them in the `<node>_rejects` staged output.
            max_invalid_fraction: with drop or quarantine, fail the run anyway when more than
                this fraction of the rows is invalid.

        Dataset-level checks run over the node's whole staged output when it finishes.
        """
        problems = []
        if any(bound is not None and bound < 0 for bound in (min_rows, max_rows)):
            problems.append("min_rows and max_rows must be >= 0")
        if on_invalid is not None and on_invalid not in POLICIES:
            problems.append(f"on_invalid must be one of {quoted(POLICIES)}, not {on_invalid!r}")
        if max_invalid_fraction is not None and not 0 <= max_invalid_fraction <= 1:
            problems.append("max_invalid_fraction must be between 0 and 1")
        for query in sql:
            if "{output}" not in query:
                problems.append(f"SQL assertion {query!r} must select from {{output}}")
        if problems:
            raise PipelineDefinitionError(self.name or type(self).__name__, problems)
        self.expectations = Expectations(
            min_rows=min_rows,
            max_rows=max_rows,
            unique=tuple(unique),
            sql=tuple(sql),
            on_invalid=on_invalid,
            max_invalid_fraction=max_invalid_fraction,
        )
        return self

    def __set_name__(self, owner: type, name: str) -> None:
        if not self.name:
            self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or '(unnamed)'}>"

    @property
    def streaming(self) -> bool:
        """Whether the node consumes its inputs chunk by chunk (else it reads staged outputs)."""
        return self.kind in ("transform", "sink")


def _model_args(cls: type, base: type) -> tuple[Any, ...]:
    for orig in getattr(cls, "__orig_bases__", ()):
        if typing.get_origin(orig) is base:
            return typing.get_args(orig)
    return ()


def _as_model(arg: Any) -> Model | None:
    return arg if isinstance(arg, type) and hasattr(arg, "to_schema") else None


@dataclass(frozen=True)
class SourceFiles:
    """Immutable files a source would read, which staging may reference instead of copying.

    Files that describe themselves (Parquet, `format` `PARQUET`): a source that can describe
    its input this way (`Source.files`) is not copied into staging when only `Sql` and `Lazy`
    nodes read it: the staged output is a reference (these files, their sizes and footer
    checksums, which a resume verifies), validated in one pass; when it streams to other nodes
    it is validated chunk by chunk and still staged as the reference.

    Files parsed by fixed rules (`format` with a `schema`, such as connectors.files' CSV
    layout): when every consumer takes the source's chunks as they are read, the staged output
    is a reference to the files (sizes and the format's fingerprints, which a resume verifies);
    whoever reads it later (a resumed run, `etlkit query`) reads them again through the format,
    as the source did. `rows` is unknown then (0).

    `metadata`: what the source parsed of the files anyway (Parquet footers,
    `pyarrow.parquet.FileMetaData`, in `urls` order), so the format does not parse it again.
    """

    urls: tuple[str, ...]
    columns: tuple[str, ...]
    rows: int
    sizes: tuple[int, ...]
    checksums: tuple[str, ...]
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    format: FileFormat = field(default_factory=lambda: _parquet())
    metadata: tuple[Any, ...] = field(default=(), compare=False, repr=False)


def _parquet() -> FileFormat:
    """The Parquet format, imported on use: importing the model loads no pyarrow."""
    from etlkit.storage.parquet import PARQUET

    return PARQUET


_ORIGIN_KEY: Final = b"etlkit.origin"


@dataclass(frozen=True)
class Origin:
    """Where a source chunk's rows come from: a file, and each row's number in it.

    File sources attach it to each chunk they yield (`attach`), as schema metadata: nothing
    is computed per row unless rows fail validation, which then names the file and the row
    (`<node>_failures`, `<node>_rejects`, the error message). `first_row` counts the file's
    rows before the chunk's; `first_line` is the line of its first row in a text file
    (counting a header line); `jumps` are the rows (index in the chunk, line) after which
    lines were skipped (blank lines between rows).

        yield Origin("billing/2025-01.csv", first_row=0, first_line=2).attach(batch)
    """

    file: str
    first_row: int
    first_line: int | None = None
    jumps: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of_lines(cls, file: str, first_row: int, lines: Sequence[int]) -> Origin:
        """The origin of a chunk whose rows are on `lines` (increasing, maybe with gaps)."""
        jumps = tuple(
            (index, lines[index])
            for index in range(1, len(lines))
            if lines[index] != lines[index - 1] + 1
        )
        return cls(file, first_row, lines[0] if lines else None, jumps)

    def attach(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch carrying this origin (no copy of its data)."""
        metadata = dict(batch.schema.metadata or {})
        metadata[_ORIGIN_KEY] = json.dumps(
            [self.file, self.first_row, self.first_line, self.jumps]
        ).encode()
        return batch.replace_schema_metadata(metadata)

    @staticmethod
    def take(batch: pa.RecordBatch) -> tuple[Origin | None, pa.RecordBatch]:
        """The batch's origin, if any, and the batch without it (staged outputs do not keep
        it)."""
        metadata = batch.schema.metadata
        if not metadata or _ORIGIN_KEY not in metadata:
            return None, batch
        file, first_row, first_line, jumps = json.loads(metadata[_ORIGIN_KEY])
        rest = {k: v for k, v in metadata.items() if k != _ORIGIN_KEY}
        origin = Origin(file, first_row, first_line, tuple((i, n) for i, n in jumps))
        return origin, batch.replace_schema_metadata(rest or None)

    def row(self, index: int) -> int:
        """The row number in the file (from 1) of the chunk's row `index` (from 0)."""
        return self.first_row + index + 1

    def line(self, index: int) -> int | None:
        """The line in the file (from 1) of the chunk's row `index`; None without lines."""
        if self.first_line is None:
            return None
        start, line = 0, self.first_line
        for jump, jumped_to in self.jumps:
            if jump > index:
                break
            start, line = jump, jumped_to
        return line + index - start


class Source(Node):
    """Produces record batches from the outside world.

    Subclasses call `super().__init__(schema=...)` and implement `read`. The schema model is the
    source's projection: read only its columns, with its types.
    """

    kind = "source"
    #: Whether the files `files` describes are best read in place by `Sql` and `Lazy` consumers
    #: (Parquet, which DuckDB and polars read themselves), rather than the chunks `read` yields
    #: (CSV: a `Sql` node then scans the parsed chunks as they come).
    files_in_place: ClassVar[bool] = True

    def __init__(self, *, schema: Model | None = None, stage: bool = True) -> None:
        super().__init__(stage=stage)
        self.output_model = schema

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        """Yield the source's data, one record batch at a time."""
        raise NotImplementedError(f"{type(self).__name__} must implement read(ctx)")

    def files(self, ctx: Context) -> SourceFiles | None:
        """The immutable files `read` would read, if its output is those files as they are
        (Parquet), or parsed from them by fixed rules (CSV: `SourceFiles.format`).

        Optional: None (the default) means the source's output is always streamed and staged.
        """
        return None

    def estimate(self, ctx: Context) -> int | None:
        """About how many rows `read` will yield, when that is cheap to know (file sizes,
        Parquet footers), for the progress display's percentage and ETA.

        Optional: None (the default) means unknown. An estimate is never checked against the
        rows read; it must cost little next to the read itself.
        """
        return None


class Transform(Node, Generic[InT, OutT]):
    """Maps each chunk of its inputs to a chunk of output, in polars.

    Declare the models as type arguments; both are checked on every edge:

        class AddMonth(ek.Transform[RawBilling, Billing]):
            def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
                return batch.with_columns(month=pl.col("billed_at").dt.strftime("%Y-%m"))

    Several inputs are a union: chunks arrive in the order they are produced.
    """

    kind = "transform"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        args = _model_args(cls, Transform)
        if args:
            cls.input_model = _as_model(args[0])
            cls.output_model = _as_model(args[1])

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        """Return the output chunk for one input chunk (an empty frame drops it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement process(batch, ctx)")


class Sink(Node):
    """Writes its inputs' chunks to the outside world, atomically: all of it or nothing.

    Subclasses call `super().__init__(*inputs, schema=...)` and implement `write`, writing to a
    temporary location and committing only when the iterator is exhausted. When the run fails,
    the iterator raises `RunCancelledError` and the sink must discard what it wrote.

    A sink commits exactly once per run: a retry may run it again after a kill that came
    between the destination's commit and the run store's. A sink whose commit is not
    idempotent (an append) records `ctx.load_id` in the same transaction and implements
    `find_load`, which the engine asks before `write`. Temporary objects carry the run id in
    their names, and `discard_leftovers` removes those a dead attempt left behind (a retry
    calls it before `write`, `etlkit gc` for runs no process runs any more).
    """

    kind = "sink"

    def __init__(self, *inputs: Node | str, schema: Model | None = None) -> None:
        super().__init__(*inputs, stage=False)
        self.input_model = schema

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        """Consume `batches` and commit them; return what was written."""
        raise NotImplementedError(f"{type(self).__name__} must implement write(batches, ctx)")

    def find_load(self, ctx: Context) -> WriteResult | None:
        """What this run's load (`ctx.load_id`) wrote, if the destination already committed it.

        The default (None) suits sinks whose commit is idempotent: rewriting the same target.
        """
        return None

    def discard_leftovers(self, ctx: Context) -> list[str]:
        """Remove the temporary objects attempts of this run left behind; what was removed."""
        return []


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Sql(Node):
    """DuckDB SQL over the staged outputs of the nodes it names in braces.

        totals = ek.Sql("select month, sum(amount) as total from {monthly} group by month")

    Other brace fields (`{ds}`, params) become bound parameters, never SQL text: `{flt}` is
    `$flt` and a literal holding fields (`'{ds}'`) one value; see `bind_sql`. DuckDB runs
    out-of-core (memory limit and spill directory come from the settings) and the result streams
    out in chunks.
    A query over one input that streams (not a Parquet source read in place) scans its chunks as
    they arrive, while they are staged, unless its plan reads that input more than once.
    """

    kind = "sql"

    def __init__(self, query: str, *, schema: Model | None = None, stage: bool = True) -> None:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(query) if name]
        except ValueError as exc:
            raise PipelineDefinitionError(
                "?",
                [
                    f"SQL {query!r} is malformed ({exc}): node names and template fields go in "
                    "single braces, literal braces are written '{{' and '}}'"
                ],
            ) from exc
        referenced = [
            name
            for name in fields
            if _FIELD.fullmatch("{" + name + "}") and name not in TEMPLATE_NAMES
        ]
        super().__init__(*dict.fromkeys(referenced), stage=stage)
        self.query = query
        self.output_model = schema


class Lazy(Node, Generic[OutT]):
    """A polars lazy query over the staged outputs of its inputs, run by the streaming engine.

    class Joined(ek.Lazy[Report]):
        def query(self, ctx, billing: pl.LazyFrame, insurance: pl.LazyFrame) -> pl.LazyFrame:
            return billing.join(insurance, on="patient_id")

    joined = Joined(billing, insurance)
    """

    kind = "lazy"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        args = _model_args(cls, Lazy)
        if args:
            cls.output_model = _as_model(args[0])

    def query(self, ctx: Context, *frames: pl.LazyFrame) -> pl.LazyFrame:
        """Build the lazy query from one LazyFrame per input, in the order of the inputs."""
        raise NotImplementedError(f"{type(self).__name__} must implement query(ctx, *frames)")


class Sensor(Node):
    """Waits for a condition before the rest of the run starts (a file arrived, a run succeeded).

    Subclasses implement `poke(ctx) -> bool`. In a run, every sensor must pass before any other
    node starts; the scheduler pokes a due run's sensors itself and starts the run only when
    they pass, so a waiting sensor holds no process and no slot.

    Args:
        poke_interval: seconds between pokes.
        timeout: seconds to wait in all before failing (or skipping, with `soft_fail`).
        soft_fail: on timeout, skip the run instead of failing it.
    """

    kind = "sensor"

    def __init__(
        self, *, poke_interval: float = 60.0, timeout: float = 3600.0, soft_fail: bool = False
    ) -> None:
        super().__init__(stage=False)
        if poke_interval <= 0 or timeout <= 0:
            raise PipelineDefinitionError(
                type(self).__name__, ["poke_interval and timeout must be > 0"]
            )
        self.poke_interval = poke_interval
        self.timeout = timeout
        self.soft_fail = soft_fail

    def poke(self, ctx: Context) -> bool:
        """Whether the condition holds now. Must be quick and must not block."""
        raise NotImplementedError(f"{type(self).__name__} must implement poke(ctx)")

    def describe(self, ctx: Context) -> str:
        """What the sensor waits for, for messages (`file s3://b/billing/2025-03-01.csv`)."""
        return type(self).__name__


class Task(Node):
    """A step with no data output: runs after its inputs finished (sinks included).

        notify = Command(["python", "send_report.py", "{ds}"], after=[report])

    Subclasses implement `run(ctx)`; raising fails the node.
    """

    kind = "task"

    def __init__(self, *, after: Sequence[Node | str] = ()) -> None:
        super().__init__(*after, stage=False)

    def run(self, ctx: Context) -> None:
        """Do the step's work."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(ctx)")


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
    point = points[0]
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
