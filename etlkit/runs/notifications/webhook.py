"""The webhook notifier: Slack-compatible JSON POSTed with httpx."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from etlkit.errors import ConfigError, NotificationError
from etlkit.runs.notifications.context import redact

if TYPE_CHECKING:
    from etlkit.runs.notifications.context import NotificationContext


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
                f"Webhook URL {redact(url)!r} is not an http(s) URL with a host: "
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
        return redact(self.url)

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
