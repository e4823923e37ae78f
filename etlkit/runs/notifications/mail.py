"""The email notifier: a plain-text message sent through an SMTP server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from etlkit.errors import ConfigError, NotificationError

if TYPE_CHECKING:
    from email.message import EmailMessage

    from etlkit.runs.notifications.context import NotificationContext


class EmailNotifier:
    """Sends a plain-text email through an SMTP server.

        EmailNotifier("smtp.hospital.example", 587, starttls=True, sender="etlkit@hospital.example",
                      recipients=["oncall@hospital.example"], username="etlkit", password=pw)

    Args:
        host, port: the SMTP server.
        sender: the From address.
        recipients: the To addresses.
        username, password: log in with these (when `username` is given).
        starttls: upgrade the connection with STARTTLS (certificate verified) before logging in.
        timeout: seconds for each network operation.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        recipients: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        problems = []
        if not host:
            problems.append("host is empty")
        if not 0 < port < 65536:
            problems.append(f"port {port} is not a TCP port")
        if not sender:
            problems.append("sender is empty")
        if isinstance(recipients, str) or not recipients:
            problems.append("recipients must be a non-empty list of addresses")
        if timeout <= 0:
            problems.append(f"timeout must be > 0, not {timeout}")
        if problems:
            raise ConfigError(f"Email notifier via {host}:{port}: {'; '.join(problems)}.")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = tuple(recipients)
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout = timeout

    @property
    def secret_values(self) -> tuple[str, ...]:
        """The password, if any."""
        return (self._password,) if self._password else ()

    def message(self, ctx: NotificationContext) -> EmailMessage:
        """The email sent for `ctx`."""
        from email.message import EmailMessage

        msg = EmailMessage()
        msg["Subject"] = f"[etlkit] {ctx.title} (run {ctx.run_id})"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg.set_content(ctx.text() + "\n")
        return msg

    def send(self, ctx: NotificationContext) -> None:
        """Send the email.

        Raises:
            NotificationError: the server could not be reached, refused the login, the sender
                or a recipient.
        """
        import smtplib
        import ssl

        where = f"SMTP server {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self._password or "")
                refused = smtp.send_message(self.message(ctx))
        except smtplib.SMTPAuthenticationError as exc:
            raise NotificationError(
                f"{where} refused the login of {self.username!r}: {_smtp_reply(exc)}. "
                "Check the username and the password (password_env)."
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise NotificationError(
                f"{where} refused every recipient: {', '.join(map(str, exc.recipients))}"
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise NotificationError(f"Email via {where} failed: {_smtp_reply(exc)}") from exc
        if refused:
            raise NotificationError(f"{where} refused recipients: {', '.join(sorted(refused))}")

    def __repr__(self) -> str:
        return f"EmailNotifier({self.host!r}, {self.port}, recipients={list(self.recipients)!r})"


def _smtp_reply(exc: Exception) -> str:
    import smtplib

    if isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
        return f"{exc.smtp_code} {text}"
    return str(exc) or type(exc).__name__
