"""Fixtures for the web UI: a project with runs, and the app behind Starlette's TestClient."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from etlkit.settings.config import Settings
from etlkit.ui.app import UiConfig, create_app
from tests.ui.project import make_project, run


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_project(tmp_path)


@pytest.fixture
def ui_config(tmp_path: Path, settings: Settings) -> UiConfig:
    return UiConfig(project_dir=tmp_path, settings=settings, pipelines_dir=tmp_path / "pipelines")


@pytest.fixture
def client(ui_config: UiConfig) -> Iterator[TestClient]:
    with TestClient(create_app(ui_config), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def demo_run(tmp_path: Path, settings: Settings) -> str:
    return run(tmp_path, settings, "demo")


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)
