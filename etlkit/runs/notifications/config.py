"""Notifiers from configuration: the `[notifiers.<name>]` tables of etlkit.toml, checked, built."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from etlkit.errors import ConfigError
from etlkit.runs.notifications.context import Notifier
from etlkit.runs.notifications.mail import EmailNotifier
from etlkit.runs.notifications.webhook import WebhookNotifier
from etlkit.settings.config import read_toml

_WEBHOOK_KEYS: Final = {"kind", "url", "url_env", "headers", "timeout"}
_EMAIL_KEYS: Final = {
    "kind",
    "host",
    "port",
    "sender",
    "recipients",
    "username",
    "password_env",
    "starttls",
    "timeout",
}
_KINDS: Final = {"webhook": _WEBHOOK_KEYS, "email": _EMAIL_KEYS}


def load_notifiers(
    project_dir: Path,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Notifier]:
    """The notifiers of the `[notifiers.<name>]` tables in etlkit.toml, by name.

    Args:
        project_dir: holds `etlkit.toml` by default.
        config_file: the TOML file to read; None reads `<project_dir>/etlkit.toml` if it exists.
        env: environment variables for `url_env` and `password_env`; None reads `os.environ`.

    Raises:
        ConfigError: an unreadable file, an unknown kind or key (with a did-you-mean), a value of
            the wrong type, or a `*_env` variable that is not set. The message names the table.
    """
    if config_file is None:
        default = Path(project_dir) / "etlkit.toml"
        if not default.is_file():
            return {}
        config_file = default
    path = Path(config_file).resolve()
    data = read_toml(path)
    tables = data.get("notifiers", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"'notifiers' in {path} must hold tables: [notifiers.<name>].")
    environ = os.environ if env is None else env
    return {
        name: _build(name, table, _Where(f"[notifiers.{name}] in {path}", environ))
        for name, table in tables.items()
    }


@dataclass(frozen=True)
class _Where:
    label: str
    env: Mapping[str, str]


def _build(name: str, table: object, where: _Where) -> Notifier:
    if not isinstance(table, dict):
        raise ConfigError(
            f"notifiers.{name} in {where.label} must be a table ([notifiers.{name}])."
        )
    kind = table.get("kind")
    if kind not in _KINDS:
        raise ConfigError(
            f"{where.label}: kind = {kind!r} is not a notifier kind; "
            f"use {' or '.join(repr(k) for k in _KINDS)}."
        )
    for key in table:
        if key not in _KINDS[kind]:
            close = difflib.get_close_matches(key, sorted(_KINDS[kind]), n=1)
            hint = (
                f"Did you mean '{close[0]}'?"
                if close
                else f"Known: {', '.join(sorted(_KINDS[kind]))}."
            )
            raise ConfigError(f"Unknown key '{key}' in {where.label} (kind {kind}). {hint}")
    timeout = _get(table, "timeout", (int, float), where, 10.0)
    if kind == "webhook":
        url = _secret(table, "url", where, required=True)
        headers = _get(table, "headers", (dict,), where, {})
        if not all(isinstance(v, str) for v in headers.values()):
            raise ConfigError(f"{where.label}: headers must map names to strings.")
        return WebhookNotifier(str(url), headers=headers, timeout=float(timeout))
    starttls = _get(table, "starttls", (bool,), where, False)
    recipients = _get(table, "recipients", (list,), where, None)
    if not recipients or not all(isinstance(r, str) for r in recipients):
        raise ConfigError(f"{where.label}: recipients must be a non-empty list of addresses.")
    username = _get(table, "username", (str,), where, "") or None
    password = _secret(table, "password", where, required=False)
    if password is not None and username is None:
        raise ConfigError(f"{where.label}: a password without a username; add username = ...")
    return EmailNotifier(
        _get(table, "host", (str,), where, None),
        _get(table, "port", (int,), where, 587 if starttls else 25),
        sender=_get(table, "sender", (str,), where, None),
        recipients=recipients,
        username=username,
        password=password,
        starttls=starttls,
        timeout=float(timeout),
    )


def _get(
    table: Mapping[str, Any], key: str, types: tuple[type, ...], where: _Where, default: Any
) -> Any:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where.label}: '{key}' is required.")
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        wanted = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{where.label}: '{key}' must be a {wanted}, not {value!r}.")
    return value


def _secret(table: Mapping[str, Any], key: str, where: _Where, *, required: bool) -> str | None:
    """`key` given as is, or read from the variable named by `<key>_env`."""
    given, env_key = table.get(key), f"{key}_env"
    variable = table.get(env_key)
    if given is not None and variable is not None:
        raise ConfigError(f"{where.label}: give '{key}' or '{env_key}', not both.")
    if variable is None:
        if given is None and required:
            raise ConfigError(f"{where.label}: '{key}' (or '{env_key}') is required.")
        return None if given is None else str(_get(table, key, (str,), where, None))
    if not isinstance(variable, str) or not variable:
        raise ConfigError(f"{where.label}: '{env_key}' must name an environment variable.")
    value = where.env.get(variable)
    if not value:
        raise ConfigError(f"{where.label}: {env_key} = {variable!r}, but {variable} is not set.")
    return value
