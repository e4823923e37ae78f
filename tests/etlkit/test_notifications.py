"""Notifications: webhook and email notifiers against local servers, dispatch, configuration."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.errors import ConfigError
from etlkit.runs.notifications import (
    EmailNotifier,
    NotificationContext,
    NotificationError,
    Notifier,
    WebhookNotifier,
    dispatch,
    load_notifiers,
)
from etlkit.storage.store import RunStore
from etlkit.testing import MemorySink, MemorySource
from tests.smtp_server import SmtpServer
from tests.webhook_server import WebhookServer, unused_url

SMTP_PASSWORD = "smtp-S3cr3t-pw"


def failure(**changes: str | None) -> NotificationContext:
    values: dict[str, str | None] = {
        "node": "monthly",
        "error": "column 'billed_at' not found",
        **changes,
    }
    return NotificationContext(
        event="failure",
        pipeline="monthly_report",
        run_id="20250301T020000Z-7f3a2c",
        logical_date=datetime(2025, 3, 1, tzinfo=UTC),
        node=values["node"] or "",
        error=values["error"],
        attempt=2,
        log_path="/srv/etlkit/logs/monthly_report/20250301T020000Z-7f3a2c.jsonl",
        state="failed",
        started_at=datetime(2025, 3, 1, 2, 0, tzinfo=UTC),
        finished_at=datetime(2025, 3, 1, 2, 1, 30, tzinfo=UTC),
    )


# -- the message ----------------------------------------------------------------------------------


def test_text_names_pipeline_run_node_error_date_and_logs() -> None:
    text = failure().text()
    assert text.splitlines()[0] == "etlkit: monthly_report failed (node monthly)"
    for part in (
        "run: 20250301T020000Z-7f3a2c (attempt 2, failed)",
        "logical date: 2025-03-01T00:00:00+00:00",
        "node: monthly",
        "duration: 90.0s",
        "error: column 'billed_at' not found",
        "logs: /srv/etlkit/logs/monthly_report/20250301T020000Z-7f3a2c.jsonl",
        "`etlkit logs 20250301T020000Z-7f3a2c`",
    ):
        assert part in text


def test_titles_of_retry_and_success() -> None:
    date = datetime(2025, 3, 1, tzinfo=UTC)
    retry = NotificationContext("retry", "p", "r", date, node="load", attempt=3)
    assert retry.title == "etlkit: p failed, retrying (attempt 3) (node load)"
    success = NotificationContext("success", "p", "r", date)
    assert success.title == "etlkit: p succeeded"
    assert "error" not in success.text()


def test_long_errors_are_cut_in_the_text() -> None:
    text = failure(error="x" * 5000).text()
    assert "(3000 more characters)" in text


# -- webhook --------------------------------------------------------------------------------------


def test_webhook_posts_slack_compatible_json() -> None:
    with WebhookServer.start() as server:
        WebhookNotifier(server.url("/services/T0/B0/token"), headers={"X-Team": "data"}).send(
            failure()
        )
    (request,) = server.requests
    assert request.path == "/services/T0/B0/token"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-team"] == "data"
    assert request.json["text"] == failure().text()
    fields = request.json["etlkit"]
    assert fields["event"] == "failure"
    assert fields["pipeline"] == "monthly_report"
    assert fields["run_id"] == "20250301T020000Z-7f3a2c"
    assert fields["node"] == "monthly"
    assert fields["error"] == "column 'billed_at' not found"
    assert fields["logical_date"] == "2025-03-01T00:00:00+00:00"
    assert fields["attempt"] == 2
    assert fields["finished_at"] == "2025-03-01T02:01:30+00:00"


def test_webhook_error_status_raises_without_the_url_path() -> None:
    with WebhookServer.start(status=500) as server:
        notifier = WebhookNotifier(server.url("/services/T0/B0/token"))
        with pytest.raises(NotificationError, match="answered HTTP 500") as caught:
            notifier.send(failure())
    assert "token" not in str(caught.value)
    assert f"127.0.0.1:{server.port}/***" in str(caught.value)


def test_webhook_rejects_non_http_urls() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        WebhookNotifier("file:///etc/passwd")


# -- email ----------------------------------------------------------------------------------------


def test_email_is_sent_as_plain_text_with_login() -> None:
    with SmtpServer.start(credentials=("etlkit", SMTP_PASSWORD)) as server:
        notifier = EmailNotifier(
            "127.0.0.1",
            server.port,
            sender="etlkit@hospital.example",
            recipients=["oncall@hospital.example", "data@hospital.example"],
            username="etlkit",
            password=SMTP_PASSWORD,
        )
        notifier.send(failure())
    (received,) = server.messages
    assert received.login == ("etlkit", SMTP_PASSWORD)
    assert received.mail_from == "etlkit@hospital.example"
    assert received.rcpt_tos == ("oncall@hospital.example", "data@hospital.example")
    message = received.message
    assert message["Subject"] == (
        "[etlkit] etlkit: monthly_report failed (node monthly) (run 20250301T020000Z-7f3a2c)"
    )
    assert message.get_content_type() == "text/plain"
    assert "error: column 'billed_at' not found" in message.get_content()
    assert SMTP_PASSWORD not in repr(notifier)


def test_email_wrong_password_is_reported_without_the_password() -> None:
    with SmtpServer.start(credentials=("etlkit", "the-right-one")) as server:
        notifier = EmailNotifier(
            "127.0.0.1",
            server.port,
            sender="etlkit@hospital.example",
            recipients=["oncall@hospital.example"],
            username="etlkit",
            password=SMTP_PASSWORD,
        )
        with pytest.raises(NotificationError, match="refused the login of 'etlkit'") as caught:
            notifier.send(failure())
    assert SMTP_PASSWORD not in str(caught.value)
    assert server.messages == []


def test_email_rejected_sender_is_an_error() -> None:
    with SmtpServer.start(reject=550) as server:
        notifier = EmailNotifier("127.0.0.1", server.port, sender="a@b.c", recipients=["d@e.f"])
        with pytest.raises(NotificationError, match="550"):
            notifier.send(failure())


def test_email_needs_recipients() -> None:
    with pytest.raises(ConfigError, match="recipients"):
        EmailNotifier("smtp", 25, sender="a@b.c", recipients=[])


# -- dispatch -------------------------------------------------------------------------------------


def test_dispatch_calls_named_notifiers_and_callables_in_order() -> None:
    seen: list[NotificationContext] = []
    with WebhookServer.start() as server:
        notifiers: dict[str, Notifier] = {"slack": WebhookNotifier(server.url())}
        problems = dispatch(["slack", seen.append], failure(), notifiers)
    assert problems == []
    assert len(server.requests) == 1
    assert seen == [failure()]


def test_a_failing_webhook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[NotificationContext] = []
    with WebhookServer.start(status=500) as server:
        notifiers: dict[str, Notifier] = {"slack": WebhookNotifier(server.url("/T0/B0/token"))}
        problems = dispatch(["slack", seen.append], failure(), notifiers)
    assert len(problems) == 1
    assert problems[0].startswith("notifier 'slack' failed for the failure of run 2025")
    assert "HTTP 500" in problems[0]
    assert seen == [failure()], "a failing notifier must not stop the others"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == problems
    assert "token" not in caplog.text


def test_an_unreachable_webhook_is_reported() -> None:
    notifiers: dict[str, Notifier] = {"slack": WebhookNotifier(unused_url(), timeout=5)}
    (problem,) = dispatch(["slack"], failure(), notifiers)
    assert "could not be reached" in problem


def test_a_failing_email_is_reported_with_the_password_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Leaky(Exception):
        pass

    def leaky(ctx: NotificationContext) -> None:
        raise Leaky(f"login with {SMTP_PASSWORD} failed")

    with SmtpServer.start(credentials=("etlkit", "other")) as server:
        email = EmailNotifier(
            "127.0.0.1",
            server.port,
            sender="a@b.c",
            recipients=["d@e.f"],
            username="etlkit",
            password=SMTP_PASSWORD,
        )
        problems = dispatch(["oncall", leaky], failure(), {"oncall": email})
    assert len(problems) == 2
    assert "refused the login" in problems[0]
    assert problems[1].endswith("login with *** failed")
    assert "leaky" in problems[1]
    assert SMTP_PASSWORD not in caplog.text


def test_an_unknown_notifier_name_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    notifiers: dict[str, Notifier] = {"slack": WebhookNotifier("https://hooks.example/x")}
    (problem,) = dispatch(["slak"], failure(), notifiers)
    assert "Unknown notifier 'slak'" in problem
    assert "Did you mean 'slack'?" in problem
    assert "[notifiers.slak]" in problem
    assert problem in caplog.text


# -- configuration --------------------------------------------------------------------------------


def write_toml(tmp_path: Path, text: str) -> Path:
    (tmp_path / "etlkit.toml").write_text(text)
    return tmp_path


def test_load_notifiers_builds_webhooks_and_emails(tmp_path: Path) -> None:
    project = write_toml(
        tmp_path,
        """
[run]
retries = 1

[notifiers.slack]
kind = "webhook"
url_env = "SLACK_WEBHOOK_URL"
headers = { "X-Team" = "data" }

[notifiers.oncall]
kind = "email"
host = "smtp.hospital.example"
starttls = true
sender = "etlkit@hospital.example"
recipients = ["oncall@hospital.example"]
username = "etlkit"
password_env = "SMTP_PASSWORD"
""",
    )
    env = {"SLACK_WEBHOOK_URL": "https://hooks.example/T0/B0/x", "SMTP_PASSWORD": SMTP_PASSWORD}
    notifiers = load_notifiers(project, env=env)
    slack, oncall = notifiers["slack"], notifiers["oncall"]
    assert isinstance(slack, WebhookNotifier)
    assert slack.url == "https://hooks.example/T0/B0/x"
    assert slack.headers == {"X-Team": "data"}
    assert isinstance(oncall, EmailNotifier)
    assert (oncall.host, oncall.port, oncall.starttls) == ("smtp.hospital.example", 587, True)
    assert oncall.recipients == ("oncall@hospital.example",)
    assert oncall.secret_values == (SMTP_PASSWORD,)


def test_load_notifiers_without_a_file_is_empty(tmp_path: Path) -> None:
    assert load_notifiers(tmp_path, env={}) == {}


def test_an_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    project = write_toml(
        tmp_path,
        '[notifiers.oncall]\nkind = "email"\nhost = "h"\nsender = "a@b.c"\n'
        'recipients = ["d@e.f"]\nrecipient = "x"\n',
    )
    with pytest.raises(
        ConfigError, match=r"Unknown key 'recipient' in \[notifiers.oncall\].*'recipients'"
    ):
        load_notifiers(project, env={})


def test_an_unknown_kind_is_a_config_error(tmp_path: Path) -> None:
    project = write_toml(tmp_path, '[notifiers.pager]\nkind = "sms"\n')
    with pytest.raises(ConfigError, match=r"kind = 'sms' is not a notifier kind"):
        load_notifiers(project, env={})


def test_a_missing_password_variable_is_a_config_error(tmp_path: Path) -> None:
    project = write_toml(
        tmp_path,
        '[notifiers.oncall]\nkind = "email"\nhost = "h"\nsender = "a@b.c"\n'
        'recipients = ["d@e.f"]\nusername = "u"\npassword_env = "SMTP_PASSWORD"\n',
    )
    with pytest.raises(ConfigError, match="SMTP_PASSWORD is not set"):
        load_notifiers(project, env={})


def test_a_webhook_needs_a_url(tmp_path: Path) -> None:
    project = write_toml(tmp_path, '[notifiers.slack]\nkind = "webhook"\n')
    with pytest.raises(ConfigError, match=r"'url' \(or 'url_env'\) is required"):
        load_notifiers(project, env={})


# -- runs notify their end, with its times, once per failed attempt ------------------------------


class Boom(ek.Transform[None, None]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        raise ValueError("no luck")


def test_a_failed_run_notifies_once_per_attempt_with_its_start_and_finish(
    settings: ek.Settings, tmp_path: Path
) -> None:
    received: list[NotificationContext] = []

    class Failing(ek.Pipeline):
        on_failure = (received.append,)
        numbers = MemorySource(pa.table({"x": [1, 2, 3]}))
        broken = Boom(numbers)
        out = MemorySink(broken)

    with RunStore(settings.paths.store) as store:
        result = Failing.run(date="2025-03-01", settings=settings, store=store)
        Failing.retry(result.run_id, settings=settings, store=store)
        record = store.get_run(result.run_id)
        kinds = [e.kind for e in store.events(result.run_id)]

    assert [(c.event, c.run_id, c.attempt, c.node) for c in received] == [
        ("failure", result.run_id, 1, "broken"),
        ("failure", result.run_id, 2, "broken"),
    ]
    last = received[-1]
    assert (last.started_at, last.finished_at) == (record.started_at, record.finished_at)
    assert last.started_at is not None
    assert last.finished_at is not None
    assert last.started_at <= last.finished_at
    assert kinds.count("notified") == 2
