"""Telling people about runs: webhooks (Slack-compatible) and email, on failure, retry, success.

Notifiers are configured by name in `etlkit.toml`, and pipelines name them in their callbacks:

```toml
[notifiers.slack]
kind = "webhook"
url_env = "SLACK_WEBHOOK_URL"        # or url = "https://..." (a webhook URL is a secret)

[notifiers.oncall]
kind = "email"
host = "smtp.hospital.example"
port = 587
starttls = true
sender = "etlkit@hospital.example"
recipients = ["data-oncall@hospital.example"]
username = "etlkit"
password_env = "SMTP_PASSWORD"
```

`dispatch(callbacks, ctx, notifiers)` calls each callback, a notifier's name or a plain callable
taking a `NotificationContext`. Notifying must never break a run: a callback that fails is logged
(secrets masked) and reported in the returned list, never raised.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import quote, urlsplit

from etlkit.errors import ConfigError
from etlkit.errors import NotificationError as NotificationError
from etlkit.settings.config import read_toml

if TYPE_CHECKING:
    from email.message import EmailMessage

logger = logging.getLogger(__name__)

NotificationEvent = Literal["failure", "retry", "success"]
Callback = str | Callable[["NotificationContext"], None]

#: The error is cut to this many characters in a message's text (the payload keeps more).
MAX_ERROR_CHARS: Final = 2000
MAX_PAYLOAD_ERROR_CHARS: Final = 20_000
_MASK: Final = "***"


@dataclass(frozen=True)
class NotificationContext:
    """What a notification says about a run.

    Attributes:
        event: "failure", "retry" or "success".
        pipeline: the pipeline's name.
        run_id: the run's id.
        logical_date: the date the run is for.
        node: the node concerned ("" for the run as a whole).
        error: the error's message, secrets already masked (None on success).
        attempt: the run's (or node's, for retries) attempt number.
        log_path: where the run's log is; `etlkit logs RUN` shows it too.
        state: the run's state ("failed", "running", "success", ...).
        started_at: when the run started.
        finished_at: when the run finished (None while it runs).
    """

    event: NotificationEvent
    pipeline: str
    run_id: str
    logical_date: datetime
    node: str = ""
    error: str | None = None
    attempt: int = 1
    log_path: str = ""
    state: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def title(self) -> str:
        """One line: `etlkit: monthly_report failed (node monthly)`."""
        what = {
            "failure": "failed",
            "retry": f"failed, retrying (attempt {self.attempt})",
            "success": "succeeded",
        }[self.event]
        node = f" (node {self.node})" if self.node else ""
        return f"etlkit: {self.pipeline} {what}{node}"

    def text(self) -> str:
        """The message as plain text: title, run, date, node, error and where the logs are."""
        lines = [
            self.title,
            f"run: {self.run_id} (attempt {self.attempt}{', ' + self.state if self.state else ''})",
            f"logical date: {self.logical_date.isoformat()}",
        ]
        if self.node:
            lines.append(f"node: {self.node}")
        if self.started_at is not None and self.finished_at is not None:
            secs = (self.finished_at - self.started_at).total_seconds()
            lines.append(f"duration: {secs:.1f}s")
        if self.error:
            lines.append(f"error: {_cut(self.error, MAX_ERROR_CHARS)}")
        where = f"{self.log_path} (or `etlkit logs {self.run_id}`)" if self.log_path else ""
        lines.append(f"logs: {where or f'`etlkit logs {self.run_id}`'}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (datetimes in ISO 8601)."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        if self.error is not None:
            data["error"] = _cut(self.error, MAX_PAYLOAD_ERROR_CHARS)
        return data


class Notifier(Protocol):
    """Something that delivers a notification (see `WebhookNotifier`, `EmailNotifier`)."""

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Strings to mask in anything logged about this notifier (passwords, webhook URLs)."""
        ...

    def send(self, ctx: NotificationContext) -> None:
        """Deliver the notification; raise NotificationError when it could not be delivered."""
        ...


class WebhookNotifier:
    """POSTs Slack-compatible JSON: `{"text": "...", "etlkit": {...the context's fields}}`.

        WebhookNotifier("https://hooks.slack.com/services/T0/B0/XXXX")

    Any non-2xx answer is an error. The URL's path and query are treated as secret (a Slack
    webhook URL is its own credential), and so are the headers' values.
    """

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"Webhook URL {_redact(url)!r} is not an http(s) URL with a host: "
                "write https://host/path."
            )
        if timeout <= 0:
            raise ConfigError(f"Webhook timeout must be > 0, not {timeout}.")
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout

    @property
    def target(self) -> str:
        """The URL with its path hidden: `https://hooks.slack.com/***`."""
        return _redact(self.url)

    @property
    def secret_values(self) -> tuple[str, ...]:
        """The URL, its path and query, and the headers' values."""
        parts = urlsplit(self.url)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        return tuple(v for v in (self.url, tail, *self.headers.values()) if len(v) > 1)

    def payload(self, ctx: NotificationContext) -> dict[str, Any]:
        """The JSON body sent for `ctx`."""
        return {"text": ctx.text(), "etlkit": ctx.as_dict()}

    def send(self, ctx: NotificationContext) -> None:
        """POST the payload.

        Raises:
            NotificationError: the server answered with an error status or could not be reached.
        """
        import ssl

        import httpx  # the mail and HTTP modules load when a notifier sends

        # httpx logs each request's URL at INFO, and a webhook URL is its own credential
        if logging.getLogger("httpx").level == logging.NOTSET:
            logging.getLogger("httpx").setLevel(logging.WARNING)
        body = json.dumps(self.payload(ctx)).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": "etlkit", **self.headers}
        try:
            # no redirects followed: a redirected POST turns into a GET and loses the payload
            with httpx.Client(timeout=self.timeout, verify=ssl.create_default_context()) as client:
                response = client.post(self.url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise NotificationError(
                f"Webhook {self.target} could not be reached: {str(exc) or type(exc).__name__}. "
                "Check the URL and the network (proxy settings come from HTTPS_PROXY)."
            ) from exc
        if not response.is_success:
            detail = response.content[:300].decode("utf-8", "replace").strip()
            raise NotificationError(
                f"Webhook {self.target} answered HTTP {response.status_code} "
                f"{response.reason_phrase}" + (f": {detail}" if detail else "")
            )

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.target!r})"


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


def dispatch(
    callbacks: Sequence[Callback],
    ctx: NotificationContext,
    notifiers: Mapping[str, Notifier],
) -> list[str]:
    """Call every callback for `ctx`; never raise: return the problems (and log them, ERROR).

    Args:
        callbacks: names of configured notifiers, or callables taking the context.
        ctx: what to tell.
        notifiers: the configured notifiers by name (see `load_notifiers`).

    Returns:
        One message per callback that failed or names no configured notifier, secrets masked.
    """
    secrets = [v for notifier in notifiers.values() for v in getattr(notifier, "secret_values", ())]
    problems = []
    for callback in callbacks:
        if isinstance(callback, str):
            label = f"notifier '{callback}'"
            notifier = notifiers.get(callback)
            if notifier is None:
                close = difflib.get_close_matches(callback, list(notifiers), n=1)
                known = ", ".join(sorted(notifiers)) or "none"
                hint = f"Did you mean '{close[0]}'?" if close else f"Configured: {known}."
                problem = (
                    f"Unknown notifier '{callback}' for the {ctx.event} of run {ctx.run_id}: "
                    f"add [notifiers.{callback}] to etlkit.toml. {hint}"
                )
                logger.error("%s", problem)
                problems.append(problem)
                continue
            send: Callable[[NotificationContext], None] = notifier.send
        else:
            label = f"callback {getattr(callback, '__qualname__', repr(callback))}"
            send = callback
        try:
            send(ctx)
        # A notification must never break the run, whatever user callbacks raise: this is
        # the boundary where their errors are handled (logged and reported).
        except Exception as exc:
            problem = _mask(
                f"{label} failed for the {ctx.event} of run {ctx.run_id} "
                f"(pipeline {ctx.pipeline}): {exc}",
                secrets,
            )
            logger.error("%s", problem)
            if not isinstance(exc, NotificationError):
                logger.debug("%s", _mask("".join(traceback.format_exception(exc)), secrets))
            problems.append(problem)
        else:
            logger.info("%s notified of the %s of run %s", label, ctx.event, ctx.run_id)
    return problems


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


def _mask(text: str, secrets: Iterable[str]) -> str:
    values = {v for secret in secrets if secret for v in (secret, quote(secret, ""))}
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, _MASK)
    return text


def _redact(url: str) -> str:
    """The URL's scheme and host; its credentials, path and query (secrets, often) hidden."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    hidden = parts.path.strip("/") or parts.query or parts.username or parts.password
    return f"{parts.scheme}://{host}" + (f"/{_MASK}" if hidden else "")


def _cut(text: str, limit: int) -> str:
    return (
        text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"
    )


def _smtp_reply(exc: Exception) -> str:
    import smtplib

    if isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
        return f"{exc.smtp_code} {text}"
    return str(exc) or type(exc).__name__
