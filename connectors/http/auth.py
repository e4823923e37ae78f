"""Credentials and secrets: the credential header of a named connection, and masking secrets
(and secret-looking URL parts) in every message."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from etlkit.connector import resolve
from etlkit.errors import ConnectorError

#: The shown text of a masked secret.
_MASK: Final = "***"
#: Query parameter names whose values are masked in messages (matched case-insensitively).
_SECRET_PARAM: Final = re.compile(
    r"token|secret|passw|pwd|api[-_]?key|apikey|access[-_]?key|signature|^sig$|^key$|auth"
    r"|session|credential",
    re.IGNORECASE,
)
#: A valid HTTP header name (RFC 9110 token).
HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class Auth:
    """The credential header for one read and the strings to mask in messages."""

    header: str
    value: str
    secrets: tuple[str, ...]


def resolve_auth(name: str, owner: str) -> Auth:
    """The credential header of the connection called `name`.

    The token is extra `token` if set, else the password. Extra `auth` picks the scheme:
    `bearer` or `basic` (login:token); without it a connection with a login uses Basic and one
    without uses Bearer, as `Connection.storage_options` does for http(s) files. Extra `header`
    sends the bare token in that header instead (`X-Api-Key`), unless `auth` is set.

    Raises:
        ConnectorError: the connection lacks what the chosen scheme needs.
        ConfigError: no connection has that name, or it is unusable (from `resolve`).
    """
    connection = resolve(name)
    extra = connection.extra
    password = connection.password.get_secret_value() if connection.password else ""
    token = (extra.get("token") or password).strip()
    scheme = extra.get("auth", "").strip().lower() or None
    header = extra.get("header", "Authorization").strip()
    where = f"{owner}: connection '{connection.name}' ({connection.source})"
    if scheme not in (None, "bearer", "basic"):
        raise ConnectorError(
            f"{where} has extra auth={extra['auth']!r}; HttpJsonSource knows 'bearer' and 'basic'."
        )
    if not HEADER_NAME.match(header):
        raise ConnectorError(f"{where} names an invalid header {header!r} in extra 'header'.")
    if not token:
        raise ConnectorError(
            f"{where} has neither a password nor an extra 'token'; HttpJsonSource sends it as "
            "the API token. Set one (from the environment or a secrets file)."
        )
    secrets = [*connection.secrets(), token]
    if scheme is None and header.lower() != "authorization":
        value = token
    elif scheme == "basic" or (scheme is None and connection.login):
        if not connection.login:
            raise ConnectorError(f"{where} asks for basic auth but has no login.")
        encoded = base64.b64encode(f"{connection.login}:{token}".encode()).decode("ascii")
        value = f"Basic {encoded}"
        secrets.append(encoded)
    else:
        value = f"Bearer {token}"
    if not valid_header_value(value):
        raise ConnectorError(
            f"{where}: its secret holds characters no HTTP header may carry (line breaks, "
            "control or non-Latin-1 characters); check the secret."
        )
    return Auth(header=header, value=value, secrets=tuple(secrets))


def valid_header_value(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any((ord(char) < 32 and char != "\t") or char == "\x7f" for char in value)


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (and its URL-quoted forms) replaced by `***`."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            for form in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
                text = text.replace(form, _MASK)
    return text


def mask_url(url: str, secrets: Iterable[str]) -> str:
    """`url` fit for a message: its password, secret-looking parameters and secrets masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{_MASK}@{host}"
    pairs = []
    for pair in parts.query.split("&") if parts.query else []:
        key, sep, _ = pair.partition("=")
        pairs.append(f"{key}={_MASK}" if sep and _SECRET_PARAM.search(key) else pair)
    shown = urlunsplit(parts._replace(netloc=netloc, query="&".join(pairs)))
    return mask(shown, secrets)
