"""What a notification says about a run (`NotificationContext`), the `Notifier` protocol, and how
secrets are kept out of what is sent and logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol
from urllib.parse import quote, urlsplit

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
            lines.append(f"error: {cut(self.error, MAX_ERROR_CHARS)}")
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
            data["error"] = cut(self.error, MAX_PAYLOAD_ERROR_CHARS)
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


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret, raw or URL-encoded, replaced by `***` (longest first)."""
    values = {v for secret in secrets if secret for v in (secret, quote(secret, ""))}
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, _MASK)
    return text


def redact(url: str) -> str:
    """The URL's scheme and host; its credentials, path and query (secrets, often) hidden."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    hidden = parts.path.strip("/") or parts.query or parts.username or parts.password
    return f"{parts.scheme}://{host}" + (f"/{_MASK}" if hidden else "")


def cut(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a note of how many more there were."""
    return (
        text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"
    )
