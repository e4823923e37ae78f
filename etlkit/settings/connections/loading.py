"""Loading connections: `load_connections` reads `etlkit.toml` and `ETLKIT_CONN_*` variables.

Layers the file and the environment field by field (and `extra` key by key), checks names,
fields, URIs, ports and pool slots, and says where a bad definition came from without showing
its password.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from etlkit.errors import ConfigError
from etlkit.settings.config import read_toml
from etlkit.settings.connections.model import (
    ENV_PREFIX,
    PATH_KINDS,
    URI_SHAPE,
    Connection,
    check_pool_slots,
)
from etlkit.settings.connections.secrets import SecretStr

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)

_NAME: Final = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_KIND: Final = re.compile(r"[a-z][a-z0-9+.-]*")
_KIND_ALIASES: Final[dict[str, str]] = {"postgres": "postgresql", "s3a": "s3"}
_FIELDS: Final = ("kind", "host", "port", "login", "password", "database")
_TOML_KEYS: Final = (*_FIELDS, "uri", "password_env", "extra")


@dataclass
class _Draft:
    """A connection being assembled from layers; later `put`s win."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    password_env: tuple[str, str] | None = None  # (variable, where it was named)

    def put(self, values: Mapping[str, Any], extra: Mapping[str, str], source: str) -> None:
        self.values.update(values)
        self.extra.update(extra)
        if "password" in values:
            self.password_env = None
        if source not in self.sources:
            self.sources.append(source)


def load_connections(
    project_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> dict[str, Connection]:
    """Read every connection defined in `etlkit.toml` and the environment, by name.

    Args:
        project_dir: holds `etlkit.toml` by default; relative file/duckdb paths resolve here.
        env: environment variables; `None` reads `os.environ`.
        config_file: TOML file to read; `None` reads `<project_dir>/etlkit.toml` if it exists.

    A password written in the TOML file is accepted with a WARNING (secrets belong in the
    environment); `password_env = "VAR"` reads it from the environment instead. A missing
    `VAR` does not fail here: the connection's `problem` says so, and `resolve` raises it.

    Raises:
        ConfigError: an unknown field (with a did-you-mean), a malformed URI, port or
            pool_slots, a bad name, a connection without a kind, or an unreadable file. The
            message names the connection and where it was defined; it never shows a password.
    """
    project = Path(project_dir).resolve()
    environ = os.environ if env is None else env
    drafts: dict[str, _Draft] = {}

    def draft(name: str) -> _Draft:
        return drafts.setdefault(name, _Draft(name))

    if config_file is None and (project / "etlkit.toml").is_file():
        config_file = project / "etlkit.toml"
    if config_file is not None:
        path = config_file.resolve()
        source = f"{path.name} ({path})"
        for raw_name, spec in _read_table(path, source).items():
            name = _check_name(raw_name, f"[connections.{raw_name}] in {source}")
            _apply_toml(draft(name), spec, source)

    uris: list[tuple[str, str, str]] = []
    fields: list[tuple[str, str, str, str]] = []
    for var, value in sorted(environ.items()):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        head, sep, tail = upper[len(ENV_PREFIX) :].partition("__")
        name = _check_name(head.lower(), f"environment variable {var}")
        if sep:
            fields.append((name, tail, value, var))
        else:
            uris.append((name, value, var))
    for name, value, var in uris:  # a URI sets the fields it has; the others stay
        parsed, extra = _parse_uri(value, f"Connection '{name}' (env {var})")
        given = {key: value for key, value in parsed.items() if value is not None}
        draft(name).put(given, extra, f"env {var}")
    for name, tail, value, var in fields:
        _apply_env_field(draft(name), tail, value, var)

    return {name: _finish(d, project, environ) for name, d in sorted(drafts.items())}


def _read_table(path: Path, source: str) -> dict[str, Any]:
    data = read_toml(path)
    table = data.get("connections", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"'connections' in {source} must be a table of connections "
            '([connections.<name>] with uri = "..." or kind/host/port/...).'
        )
    return table


def _check_name(name: str, where: str) -> str:
    normal = name.strip().lower()
    if not _NAME.fullmatch(normal):
        raise ConfigError(
            f"Connection name {name!r} ({where}) is not valid: use letters, digits and single "
            "underscores, starting with a letter (it must also work as ETLKIT_CONN_<NAME>)."
        )
    return normal


def _apply_toml(draft: _Draft, spec: object, source: str) -> None:
    where = f"Connection '{draft.name}' in {source}"
    if isinstance(spec, str):  # `hospital_db = "postgresql://..."` under [connections]
        spec = {"uri": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table ([connections.{draft.name}]) or a URI string.")
    for key in spec:
        if key not in _TOML_KEYS:
            close = difflib.get_close_matches(key, _TOML_KEYS, n=1)
            hint = f"Did you mean '{close[0]}'?" if close else f"Known: {', '.join(_TOML_KEYS)}."
            raise ConfigError(f"{where}: unknown field '{key}'. {hint}")
    values: dict[str, Any] = {}
    extra: dict[str, str] = {}
    if "uri" in spec:
        values, extra = _parse_uri(_toml_str(spec["uri"], "uri", where), where)
    for key in _FIELDS:
        if key in spec:
            text = _toml_str(spec[key], key, where, numbers=key == "port")
            values[key] = _field_value(key, text, where)
    raw_extra = spec.get("extra", {})
    if not isinstance(raw_extra, dict):
        raise ConfigError(f"{where}: 'extra' must be a table (extra = {{ key = \"value\" }}).")
    for key, value in raw_extra.items():
        extra[key] = _toml_str(value, f"extra.{key}", where, numbers=True)
    if values.get("password") is not None:
        logger.warning(
            "connection %s has its password in %s; secrets belong in the environment: set "
            '%s%s__PASSWORD, or password_env = "VAR" in the file',
            draft.name,
            source,
            ENV_PREFIX,
            draft.name.upper(),
        )
    draft.put(values, extra, source)
    if "password_env" in spec:
        if "password" in spec:
            raise ConfigError(f"{where}: give either 'password' or 'password_env', not both.")
        draft.password_env = (_toml_str(spec["password_env"], "password_env", where), source)


def _toml_str(value: object, key: str, where: str, *, numbers: bool = False) -> str:
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, bool):
        return "true" if value else "false"
    if numbers and isinstance(value, int | float):
        return str(value)
    kind = "a string or a number" if numbers else "a string"
    raise ConfigError(f"{where}: '{key}' must be {kind}, not {type(value).__name__}.")


def _apply_env_field(draft: _Draft, tail: str, value: str, var: str) -> None:
    where = f"Connection '{draft.name}' (env {var})"
    if tail.startswith("EXTRA__") and len(tail) > len("EXTRA__"):
        draft.put({}, {tail[len("EXTRA__") :].lower(): value}, f"env {var}")
        return
    key = tail.lower()
    if key not in _FIELDS:
        names = [f.upper() for f in _FIELDS] + ["EXTRA__<KEY>"]
        close = difflib.get_close_matches(tail, names, n=1)
        hint = f"Did you mean __{close[0]}?" if close else f"Known: __{', __'.join(names)}."
        raise ConfigError(f"{where}: unknown field '{tail}'. {hint}")
    draft.put({key: _field_value(key, value, where)}, {}, f"env {var}")


def _field_value(key: str, text: str, where: str) -> Any:
    """One field's value from text; an empty text unsets it."""
    if text == "":
        return None
    if key == "port":
        try:
            port = int(text)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ConfigError(f"{where}: port {text!r} is not a number between 0 and 65535.")
        return port
    if key == "kind":
        return _kind(text, where)
    return text


def _kind(text: str, where: str) -> str:
    kind = text.strip().lower()
    if not _KIND.fullmatch(kind):
        raise ConfigError(f"{where}: kind {text!r} is not a URI scheme (postgresql, s3, ...).")
    return _KIND_ALIASES.get(kind, kind)


def _parse_uri(text: str, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A URI's fields and query parameters. Messages never echo the URI (it holds secrets)."""
    parts = urlsplit(text.strip())
    if not parts.scheme or "://" not in text:
        raise ConfigError(f"{where}: the value is not a URI of the form {URI_SHAPE}.")
    if parts.fragment:
        raise ConfigError(
            f"{where}: the URI has a '#' fragment; URL-encode '#' in the password as %23 "
            "('@' as %40, ':' as %3A, '/' as %2F)."
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(
            f"{where}: the URI's port is not a number between 0 and 65535 (if the password "
            "holds ':', '/' or '@', URL-encode them as %3A, %2F, %40)."
        ) from exc
    values: dict[str, Any] = {
        "kind": _kind(parts.scheme, where),
        "host": parts.hostname or None,
        "port": port,
        "login": unquote(parts.username) if parts.username is not None else None,
        "password": unquote(parts.password) if parts.password is not None else None,
        "database": unquote(parts.path[1:] if parts.path.startswith("/") else parts.path) or None,
    }
    return values, dict(parse_qsl(parts.query, keep_blank_values=True))


def _finish(draft: _Draft, project: Path, environ: Mapping[str, str]) -> Connection:
    source = ", ".join(draft.sources)
    values = draft.values
    kind = values.get("kind")
    if not kind:
        key = draft.name.upper()
        raise ConfigError(
            f"Connection '{draft.name}' ({source}) has no kind: set {ENV_PREFIX}{key}__KIND="
            f"postgresql (or s3, http, ...), or define it by URI: {ENV_PREFIX}{key}={URI_SHAPE}."
        )
    problem = None
    password = values.get("password")
    if draft.password_env is not None:
        var, where = draft.password_env
        password = environ.get(var)
        if password is None:
            problem = (
                f"Connection '{draft.name}' takes its password from the environment variable "
                f"{var} (password_env in {where}), which is not set: export {var}=..., or set "
                f"{ENV_PREFIX}{draft.name.upper()}__PASSWORD."
            )
    database = values.get("database")
    if kind in PATH_KINDS and database and "://" not in database:
        database = str(project / database)  # an absolute path stays as it is
    if "pool_slots" in draft.extra:
        check_pool_slots(draft.extra["pool_slots"], draft.name, source)
    return Connection(
        name=draft.name,
        kind=kind,
        host=values.get("host"),
        port=values.get("port"),
        login=values.get("login"),
        password=SecretStr(password) if password is not None else None,
        database=database,
        extra=dict(draft.extra),
        source=source,
        problem=problem,
    )
