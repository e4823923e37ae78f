"""A minimal SMTP server on the standard library, for notification tests.

    with SmtpServer.start(credentials=("etlkit", "s3cret")) as server:
        EmailNotifier("127.0.0.1", server.port, ...).send(ctx)
        server.messages[0].message["Subject"]

It listens on 127.0.0.1 on a free port, speaks enough SMTP for `smtplib` (EHLO/HELO, AUTH PLAIN,
MAIL, RCPT, DATA, RSET, NOOP, QUIT; no STARTTLS) and keeps every accepted message in `messages`
before answering the end of its data, so a message is there once `send_message` returned.
`reject` makes it answer MAIL FROM with that error code. Leaving the `with` block closes it.
"""

from __future__ import annotations

import base64
import email
import email.policy
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import cast


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: the envelope, the login used (if any) and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    login: tuple[str, str] | None
    message: EmailMessage


@dataclass
class SmtpServer:
    """A running server: its port and what it received."""

    port: int
    credentials: tuple[str, str] | None = None
    reject: int | None = None
    messages: list[ReceivedMessage] = field(default_factory=list)

    @classmethod
    @contextmanager
    def start(
        cls, *, credentials: tuple[str, str] | None = None, reject: int | None = None
    ) -> Iterator[SmtpServer]:
        """Serve on 127.0.0.1 (a free port) until the block ends.

        Args:
            credentials: a (user, password) pair: AUTH is offered and must match (535 if not).
            reject: answer MAIL FROM with this code (e.g. 550) instead of accepting.
        """
        tcp = _Server(("127.0.0.1", 0), _Handler)
        server = cls(port=tcp.server_address[1], credentials=credentials, reject=reject)
        tcp.state = server
        thread = threading.Thread(target=tcp.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield server
        finally:
            tcp.shutdown()
            tcp.server_close()
            thread.join()


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True
    state: SmtpServer


class _Handler(socketserver.StreamRequestHandler):
    timeout = 10

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        state = cast("_Server", self.server).state
        self.reply("220 127.0.0.1 test SMTP ready")
        login: tuple[str, str] | None = None
        mail_from = ""
        rcpts: list[str] = []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                extensions = ["250-127.0.0.1"]
                if state.credentials is not None:
                    extensions.append("250-AUTH PLAIN")
                self.reply("\r\n".join([*extensions, "250 8BITMIME"]))
            elif verb == "HELO":
                self.reply("250 127.0.0.1")
            elif verb == "AUTH":
                mechanism, _, initial = arg.partition(" ")
                if mechanism.upper() != "PLAIN" or state.credentials is None:
                    self.reply("504 unrecognized authentication type")
                    continue
                if not initial:
                    self.reply("334 ")
                    initial = self.rfile.readline().decode().strip()
                try:
                    _, user, password = base64.b64decode(initial).decode().split("\0")
                except ValueError:
                    self.reply("501 cannot decode the credentials")
                    continue
                if (user, password) != state.credentials:
                    self.reply("535 5.7.8 authentication credentials invalid")
                    continue
                login = (user, password)
                self.reply("235 2.7.0 authentication successful")
            elif verb == "MAIL":
                if state.reject is not None:
                    self.reply(f"{state.reject} sender rejected by the test server")
                    continue
                if state.credentials is not None and login is None:
                    self.reply("530 5.7.0 authentication required")
                    continue
                mail_from = arg.partition(":")[2].strip().strip("<>").split(">")[0]
                rcpts = []
                self.reply("250 OK")
            elif verb == "RCPT":
                rcpts.append(arg.partition(":")[2].strip().strip("<>").split(">")[0])
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end data with <CR><LF>.<CR><LF>")
                data = bytearray()
                while True:
                    chunk = self.rfile.readline()
                    if not chunk or chunk in (b".\r\n", b".\n"):
                        break
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                parsed = email.message_from_bytes(bytes(data), policy=email.policy.default)
                state.messages.append(ReceivedMessage(mail_from, tuple(rcpts), login, parsed))
                self.reply("250 OK queued")
            elif verb == "RSET":
                mail_from, rcpts = "", []
                self.reply("250 OK")
            elif verb == "NOOP":
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 command not implemented")
