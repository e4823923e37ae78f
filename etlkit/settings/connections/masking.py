"""Masking: every known secret (raw and URL-encoded) becomes `***` in text and log records.

Also the rows `etlkit connections list` prints: masked URIs only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TypeAlias
from urllib.parse import quote, quote_plus

from etlkit.settings.connections.model import Connection
from etlkit.settings.connections.secrets import MASK

#: Connections by name (as `load_connections` returns them) or just the connections.
Connections: TypeAlias = Mapping[str, Connection] | Iterable[Connection]


def _connections(connections: Connections) -> list[Connection]:
    if isinstance(connections, Mapping):
        return list(connections.values())
    return list(connections)


def _secret_forms(connections: Connections) -> list[str]:
    """Every secret, raw and URL-encoded, longest first (so no secret is half-masked)."""
    forms: set[str] = set()
    for conn in _connections(connections):
        for secret in conn.secrets():
            forms.update({secret, quote(secret, safe=""), quote(secret), quote_plus(secret)})
    return sorted(forms, key=lambda form: (-len(form), form))


def _mask_with(text: str, forms: Iterable[str]) -> str:
    for form in forms:
        text = text.replace(form, MASK)
    return text


def mask(text: str, connections: Connections) -> str:
    """`text` with every secret of `connections` (raw and URL-encoded) replaced by `***`."""
    return _mask_with(text, _secret_forms(connections))


class SecretMaskingFilter(logging.Filter):
    """Masks the connections' secrets in log records: message, arguments and traceback.

    A record that holds a secret has its message formatted and masked (its `args` emptied);
    other records pass unchanged.
    """

    def __init__(self, connections: Connections) -> None:
        super().__init__()
        self._forms = _secret_forms(connections)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._forms:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format
            message = f"{record.msg} {record.args}"
        masked = _mask_with(message, self._forms)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            masked = _mask_with(text, self._forms)
            if masked != text:
                record.exc_text = masked  # formatters use it instead of formatting exc_info
        if record.stack_info:
            record.stack_info = _mask_with(record.stack_info, self._forms)
        return True


def install_log_masking(connections: Connections) -> logging.Filter:
    """A logging filter masking the connections' secrets; add it to every handler.

    It attaches itself nowhere (the library adds no handlers): the CLI does
    `handler.addFilter(install_log_masking(connections))`.
    """
    return SecretMaskingFilter(connections)


def list_rows(connections: Connections) -> list[tuple[str, str, str, str]]:
    """`(name, kind, masked uri, source)` per connection, sorted by name (`connections list`).

    A connection with a problem has it appended to its source.
    """
    rows = []
    for conn in sorted(_connections(connections), key=lambda c: c.name):
        source = f"{conn.source} (unusable: {conn.problem})" if conn.problem else conn.source
        rows.append((conn.name, conn.kind, conn.masked_uri, source))
    return rows
