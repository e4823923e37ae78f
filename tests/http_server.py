"""A local JSON API for connector tests: one in-memory dataset, served in every pagination style.

    server = ApiServer(records=[{"id": 1}, {"id": 2}], page_size=10)
    server.start()
    server.url("/pages")                  # http://127.0.0.1:<port>/pages
    server.fail("/pages", status=503, times=2)
    ...
    server.stop()

Endpoints (GET; unknown query parameters are ignored, every request is recorded in `requests`):

- `/items`: every record, as a bare JSON list (no pagination).
- `/pages?page=N&per_page=M`: numbered pages from 1, `{"data": {"items": [...]}, "page": N}`.
- `/offset?offset=N&limit=M`: `{"items": [...], "total": T}`.
- `/cursor?cursor=C`: `{"results": [...], "meta": {"next_cursor": C2 or null}}`.
- `/next?start=N`: `{"items": [...], "links": {"next": "/next?start=N2" or null}}` (relative).
- `/link?start=N`: a bare list, the next page in a `Link: <absolute url>; rel="next"` header.
- `/redirect?to=URL`: a 302 to `URL` (a path or a full URL).
- any path given to `respond`: that fixed JSON answer.

Failures are injected per path with `fail` (an error status with headers and body, a dropped
connection, a hang until the server stops, or a raw body such as invalid JSON), and `auth`
makes every request need one header value (401 otherwise).

It speaks HTTP/1.1 and keeps connections alive, as APIs do; `connections` counts the TCP
connections accepted, so tests see whether a client reuses them. `start(tls=...)` serves HTTPS
(`self_signed` makes a certificate for 127.0.0.1).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

#: How long a `hang` fault holds a request at most (the server's stop releases it sooner).
_HANG_SECONDS = 10.0


@dataclass
class Fault:
    """One injected failure, applied to the next `times` matching requests."""

    status: int = 503
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    times: int = 1
    drop: bool = False
    hang: bool = False
    query: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Seen:
    """One request the server received: its path, query and headers (names lower-cased)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


def self_signed(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 in `folder` (a PEM file a client may trust) and
    a server context presenting it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return cert_file, context


def _jsonable(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class ApiServer:
    """A paginated JSON API on 127.0.0.1 (a free port), in a background thread."""

    def __init__(self, records: list[dict[str, Any]] | None = None, page_size: int = 10) -> None:
        self.records: list[dict[str, Any]] = list(records or [])
        self.page_size = page_size
        self.requests: list[Seen] = []
        self.connections = 0
        self.scheme = "http"
        self.auth: tuple[str, str] | None = None
        self._faults: dict[str, list[Fault]] = {}
        self._fixed: dict[str, tuple[int, Any, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, tls: ssl.SSLContext | None = None) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
            self.scheme = "https"
        server.daemon_threads = True
        server.block_on_close = True  # stop() joins the request threads
        self._server = server
        # A short poll: stop() returns within one poll interval.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="api-server"
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return int(self._server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """The full URL of `path` on this server."""
        return f"{self.scheme}://{host}:{self.port}{path}"

    # ------------------------------------------------------------ programming

    def fail(
        self,
        path: str,
        *,
        status: int = 503,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        drop: bool = False,
        hang: bool = False,
        query: Mapping[str, str] | None = None,
    ) -> None:
        """Make the next `times` requests to `path` (whose query has `query`) fail.

        `drop` closes the connection without an answer; `hang` holds the request until the
        server stops, so the client times out; otherwise the answer is `status` with `headers`
        and `body` (a 200 with a raw body serves invalid JSON).
        """
        fault = Fault(status, dict(headers or {}), body, times, drop, hang, query)
        with self._lock:
            self._faults.setdefault(path, []).append(fault)

    def respond(
        self, path: str, body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer every request to `path` with this JSON `body`."""
        self._fixed[path] = (status, body, dict(headers or {}))

    def paths(self) -> list[str]:
        """The path and query of every request received, in order (`/pages?page=2`)."""
        return [
            seen.path + ("?" + "&".join(f"{k}={v}" for k, v in seen.query.items()))
            if seen.query
            else seen.path
            for seen in self.requests
        ]

    # ------------------------------------------------------------ serving

    def _take_fault(self, path: str, query: Mapping[str, str]) -> Fault | None:
        with self._lock:
            for fault in self._faults.get(path, []):
                matches = fault.query is None or all(
                    query.get(k) == v for k, v in fault.query.items()
                )
                if fault.times > 0 and matches:
                    fault.times -= 1
                    return fault
        return None

    def _answer(
        self, path: str, query: Mapping[str, str]
    ) -> tuple[int, Any, dict[str, str]] | None:
        """The status, JSON body and headers for a request; None for an unknown path."""
        if path in self._fixed:
            return self._fixed[path]
        records = self.records
        if path == "/items":
            return 200, records, {}
        if path == "/pages":
            size = int(query.get("per_page", self.page_size))
            page = int(query.get("page", "1"))
            chunk = records[(page - 1) * size : page * size]
            return 200, {"data": {"items": chunk}, "page": page}, {}
        if path == "/offset":
            offset = int(query.get("offset", "0"))
            limit = int(query.get("limit", self.page_size))
            return 200, {"items": records[offset : offset + limit], "total": len(records)}, {}
        if path == "/cursor":
            start = int(query["cursor"].removeprefix("c")) if "cursor" in query else 0
            end = start + self.page_size
            cursor = f"c{end}" if end < len(records) else None
            return 200, {"results": records[start:end], "meta": {"next_cursor": cursor}}, {}
        if path in ("/next", "/link"):
            start = int(query.get("start", "0"))
            end = start + self.page_size
            more = end < len(records)
            if path == "/next":
                links = {"next": f"/next?start={end}" if more else None}
                return 200, {"items": records[start:end], "links": links}, {}
            headers = {"Link": f'<{self.url("/link")}?start={end}>; rel="next"'} if more else {}
            return 200, records[start:end], headers
        if path == "/redirect":
            return 302, {"moved": True}, {"Location": query["to"]}
        return None


def _handler(api: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
        timeout = _HANG_SECONDS  # an idle kept-alive connection does not hold stop() forever

        def setup(self) -> None:
            super().setup()
            with api._lock:
                api.connections += 1

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            headers = {name.lower(): value for name, value in self.headers.items()}
            with api._lock:
                api.requests.append(Seen(parts.path, query, headers))
            fault = api._take_fault(parts.path, query)
            if fault is not None:
                if fault.hang:
                    api._stopping.wait(_HANG_SECONDS)
                if fault.drop or fault.hang:
                    self.close_connection = True
                    return
                self._send(fault.status, fault.body, dict(fault.headers))
                return
            if api.auth is not None:
                name, value = api.auth
                if headers.get(name.lower()) != value:
                    body = json.dumps({"error": "missing or wrong credentials"}).encode()
                    self._send(401, body, {"Content-Type": "application/json"})
                    return
            answer = api._answer(parts.path, query)
            if answer is None:
                body = json.dumps({"error": f"no route {parts.path}"}).encode()
                self._send(404, body, {"Content-Type": "application/json"})
                return
            status, payload, extra = answer
            body = json.dumps(payload, default=_jsonable).encode()
            self._send(status, body, {"Content-Type": "application/json", **extra})

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read `requests` instead."""

    return Handler
