"""`etlkit ui`: check the optional dependencies, refuse an unsafe address, serve the app."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from etlkit.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from etlkit.ui.app import UiConfig

#: The modules the UI needs, from the `ui` extra.
REQUIRED: Final = ("starlette", "uvicorn", "jinja2")
INSTALL: Final = 'pip install "etlkit-framework[ui]"'


def require() -> None:
    """Check that the UI's libraries are installed.

    Raises:
        MissingDependencyError: names the missing ones and the line to install them.
    """
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"The web UI needs {', '.join(missing)}, which are not installed: {INSTALL}"
        )


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_address(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token.

    Raises:
        ConfigError: `host` is not loopback and no token is set.
    """
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"etlkit ui --host {host} would let anyone on the network run and read your "
            "pipelines: give a token (--token or ETLKIT_UI_TOKEN), or keep the default "
            "--host 127.0.0.1"
        )
    if token is not None and len(token) < 16:
        raise ConfigError("The UI token is too short: use at least 16 characters")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one).

    Raises:
        ConfigError: the address cannot be bound (in use, not an address of this machine).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"etlkit ui cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(128)
    return sock


def url(host: str, port: int, token: str | None, path: str = "/") -> str:
    """The address to open in a browser (with the token, which then sets a cookie)."""
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    query = f"?token={token}" if token else ""
    return f"http://{shown}:{port}{path}{query}"


def serve(
    config: UiConfig, host: str, port: int, *, announce: Callable[[str], None] | None = None
) -> None:
    """Serve the UI until interrupted; `announce` receives its URL once it listens.

    Raises:
        ConfigError: an unsafe or unusable address.
    """
    import uvicorn

    from etlkit.ui.app import create_app

    check_address(host, config.token)
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    if announce is not None:
        announce(url(host, actual, config.token))
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), log_level="warning", access_log=False)
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
