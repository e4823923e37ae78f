"""The UI in a real browser: Playwright driving Debian's Chromium against `etlkit ui`.

Screenshots of every step land in the test's tmp_path (and in $UI_SCREENSHOTS when set,
which is how the README's pictures are made).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ui.project import make_project, run

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    *("--no-sandbox", "--disable-gpu", "--disable-background-networking"),
    *("--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"),
    "--disable-dev-shm-usage",
]
WAIT_MS = 60_000


@pytest.fixture
def ui_url(tmp_path: Path) -> Iterator[str]:
    """`etlkit ui --port 0` serving a project with one finished run; its URL."""
    settings = make_project(tmp_path)
    run(tmp_path, settings, "demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "etlkit", "ui", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"open (http://\S+)", line)
        assert found, f"etlkit ui printed {line!r}"
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(WAIT_MS)
        try:
            yield page
        finally:
            browser.close()


def _shot(page: object, tmp_path: Path, name: str) -> None:
    target = tmp_path / "screenshots" / f"{name}.png"
    target.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(target), full_page=True)  # type: ignore[attr-defined]
    keep = os.environ.get("UI_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(target, Path(keep) / target.name)


def test_trigger_a_run_watch_it_succeed_query_its_data_and_pause(
    ui_url: str, browser_page: object, tmp_path: Path
) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.goto(ui_url)
    demo = page.locator('tr[data-pipeline="demo"]')
    expect(demo).to_contain_text("@daily")
    _shot(page, tmp_path, "pipelines")

    demo.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(re.compile(r"/runs/\d{8}T\d{6}Z-"))
    expect(page.locator("#run-state")).to_have_text("success")  # live: no reload
    expect(page.locator("#node-labelled [data-field=rows_out]")).to_have_text("3")
    expect(page.locator('#dag text[data-from="numbers"]')).to_have_text("3")  # the edge
    expect(page.locator("a.data-link", has_text="labelled")).to_be_visible()
    _shot(page, tmp_path, "run")

    page.locator("a.data-link", has_text="labelled").first.click()
    expect(page.locator("#row-count")).to_have_text("3")
    page.locator("#sql").fill("select sum(x) as total, min(note) as note from labelled")
    page.locator("#run-sql").click()
    expect(page.locator("#sql-result")).to_contain_text("6")
    expect(page.locator("#sql-result")).to_contain_text("<script>alert('x')</script>")
    _shot(page, tmp_path, "data")

    page.goto(ui_url.split("?")[0])
    page.locator('tr[data-pipeline="demo"]').get_by_role("button", name="Pause").click()
    expect(page.locator('tr[data-pipeline="demo"]')).to_contain_text("paused")
    expect(page.locator('tr[data-pipeline="demo"]').get_by_role("button")).to_have_count(2)
    expect(
        page.locator('tr[data-pipeline="demo"]').get_by_role("button", name="Unpause")
    ).to_be_visible()
    _shot(page, tmp_path, "paused")

    page.locator('tr[data-pipeline="demo"] a', has_text="demo").click()
    expect(page.locator("table.grid tbody tr")).to_have_count(2)  # nodes by runs
    _shot(page, tmp_path, "grid")
    assert dialogs == []  # no script from a param or a data row ever ran
