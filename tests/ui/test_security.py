"""Who may reach the UI: the token, loopback host names, the address `etlkit ui` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from etlkit.cli import main
from etlkit.errors import ConfigError, MissingDependencyError
from etlkit.ui import server
from etlkit.ui.app import TOKEN_COOKIE, UiConfig, create_app

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def guarded(ui_config: UiConfig) -> TestClient:
    ui_config.token = TOKEN
    return TestClient(create_app(ui_config), base_url="http://127.0.0.1")


def test_every_request_needs_the_token(guarded: TestClient) -> None:
    for path in ("/", "/api/pulse", "/runs/x", "/static/ui.js"):
        assert guarded.get(path).status_code == 401, path
    assert guarded.get("/", headers={"X-Etlkit-Token": "wrong-token-value"}).status_code == 401
    assert guarded.get("/", headers={"X-Etlkit-Token": TOKEN}).status_code == 200
    assert guarded.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_token_in_the_url_sets_a_cookie_once(guarded: TestClient) -> None:
    assert guarded.get("/?token=wrong-token-value").status_code == 401
    first = guarded.get(f"/pipelines/demo?token={TOKEN}", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/pipelines/demo"
    assert TOKEN_COOKIE in first.cookies
    assert guarded.get("/pipelines/demo").status_code == 200  # the cookie from now on


def test_loopback_ui_answers_only_loopback_host_names(ui_config: UiConfig) -> None:
    app = create_app(ui_config)
    assert TestClient(app, base_url="http://localhost:8765").get("/").status_code == 200
    # a page on another site whose name was rebound to 127.0.0.1
    assert TestClient(app, base_url="http://evil.example:8765").get("/").status_code == 400


def test_pages_forbid_foreign_scripts_and_framing(client: TestClient) -> None:
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_a_network_address_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="give a token"):
        server.check_address("0.0.0.0", None)
    server.check_address("0.0.0.0", TOKEN)
    server.check_address("127.0.0.1", None)
    server.check_address("::1", None)


def test_etlkit_ui_off_loopback_without_token_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ETLKIT_UI_TOKEN", raising=False)
    (tmp_path / "pipelines").mkdir()
    assert main(["--project", str(tmp_path), "ui", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "give a token" in capsys.readouterr().err


def test_missing_ui_libraries_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "REQUIRED", ("starlette", "etlkit_no_such_module"))
    with pytest.raises(MissingDependencyError, match=r'pip install "etlkit-framework\[ui\]"'):
        server.require()


def test_etlkit_ui_reads_its_token_from_etlkit_ui_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETLKIT_UI_TOKEN", "short")  # not an unknown setting: the UI's own
    (tmp_path / "pipelines").mkdir()
    assert main(["--project", str(tmp_path), "ui", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "token is too short" in capsys.readouterr().err
