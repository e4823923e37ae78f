"""A local HTTP server capturing POSTed JSON, for webhook notification tests.

    with WebhookServer.start(status=200) as server:
        WebhookNotifier(server.url("/hooks/T0/B0/secret")).send(ctx)
        server.requests[0].json["text"]

It listens on 127.0.0.1 on a free port and answers every POST with `status` (after recording
the request). `unused_url()` gives a URL on which nothing listens (connection refused).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST: its path, headers (lower-case names) and JSON body."""

    path: str
    headers: Mapping[str, str]
    json: Any


@dataclass
class WebhookServer:
    """A running server: its port, the status it answers with and what it received."""

    port: int
    status: int = 200
    requests: list[ReceivedRequest] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        """The URL of `path` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    @classmethod
    @contextmanager
    def start(cls, *, status: int = 200) -> Iterator[WebhookServer]:
        """Serve on 127.0.0.1 (a free port) until the block ends."""
        http = _Server(("127.0.0.1", 0), _Handler)
        server = cls(port=http.server_address[1], status=status)
        http.state = server
        thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield server
        finally:
            http.shutdown()
            http.server_close()
            thread.join()


def unused_url(path: str = "/hook") -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just freed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    state: WebhookServer


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        state = cast("_Server", self.server).state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        state.requests.append(ReceivedRequest(self.path, headers, json.loads(body or b"null")))
        answer = b"ok" if state.status < 400 else b"internal failure (test server)"
        self.send_response(state.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass
