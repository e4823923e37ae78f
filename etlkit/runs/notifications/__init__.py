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

`dispatch(callbacks, ctx, notifiers)` (`delivery`) calls each callback, a notifier's name or a
plain callable taking a `NotificationContext`. Notifying must never break a run: a callback that
fails is logged (secrets masked) and reported in the returned list, never raised.

The package holds what a notification says and how secrets are masked (`context`), the channels
(`webhook`, `mail`), delivery to callbacks (`delivery`) and reading notifiers from etlkit.toml
(`config`). It imports `etlkit.errors` and `etlkit.settings` only.
"""

from __future__ import annotations

from etlkit.errors import NotificationError as NotificationError
from etlkit.runs.notifications.config import load_notifiers as load_notifiers
from etlkit.runs.notifications.context import MAX_ERROR_CHARS as MAX_ERROR_CHARS
from etlkit.runs.notifications.context import MAX_PAYLOAD_ERROR_CHARS as MAX_PAYLOAD_ERROR_CHARS
from etlkit.runs.notifications.context import Callback as Callback
from etlkit.runs.notifications.context import NotificationContext as NotificationContext
from etlkit.runs.notifications.context import NotificationEvent as NotificationEvent
from etlkit.runs.notifications.context import Notifier as Notifier
from etlkit.runs.notifications.delivery import dispatch as dispatch
from etlkit.runs.notifications.mail import EmailNotifier as EmailNotifier
from etlkit.runs.notifications.webhook import WebhookNotifier as WebhookNotifier
