"""The dashboard in a real headless browser (Debian's chromium driven by Playwright),
against a real `cronwork up` started as `make run` starts it: no URLs, the shipped
schedules.yaml, the login URL it prints.

The screenshot of the schedules page it takes is the README's (docs/dashboard.png):
written there when CRONWORK_UPDATE_SCREENSHOT=1 or when it is missing, so that ordinary
test runs leave the working tree clean.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "docs" / "dashboard.png"
#: Flags that keep Debian's chromium quiet and offline in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOGIN_URL = re.compile(r"http://127\.0\.0\.1:\d+/login\?token=[\w-]+")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`cronwork up` in a fresh folder with the shipped schedules; yields its login URL."""
    shutil.copy(REPO / "schedules.yaml", tmp_path / "schedules.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWORK_")}
    env.update(
        PYTHONPATH=str(REPO),
        CRONWORK_HTTP_HOST="127.0.0.1",
        CRONWORK_HTTP_PORT=str(free_port()),
        CRONWORK_RESEND_AFTER="1",
    )
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services", "up"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            found = wait_for(
                lambda: LOGIN_URL.search(log_path.read_text(errors="replace")),
                timeout=60,
                what="the printed login URL",
            )
            assert isinstance(found, re.Match)
            yield found.group(0), log_path
        finally:
            proc.terminate()
            proc.wait(30)
    text = log_path.read_text(errors="replace")
    # The token is printed once, on purpose, and never logged anywhere else.
    token = LOGIN_URL.search(text).group(0).rsplit("=", 1)[1]  # type: ignore[union-attr]
    assert text.count(token) == 1, "the dashboard token leaked into the log"


def test_log_in_watch_pause_and_trigger_in_a_browser(up: tuple[str, Path]) -> None:
    require(CHROMIUM.exists(), f"Debian's chromium at {CHROMIUM} (.ci/run installs it)")
    from playwright.sync_api import expect, sync_playwright

    login_url, _ = up
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 470})
        blocked: list[str] = []
        page.on(
            "console",
            lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before actions
        try:
            page.goto(login_url)
            # The token is gone from the address bar: the login answered with a redirect.
            expect(page).to_have_url(re.compile(r"/$"))
            rows = page.locator("tr.schedule-row")
            expect(rows).to_have_count(5)
            expect(page.locator("text=Leader")).to_be_visible(timeout=20_000)

            # A fire appears without anyone reloading: the page refreshes its live part.
            heartbeat = page.locator('tr.schedule-row[data-name="heartbeat"] .strip .cell')
            expect(heartbeat.first).to_be_visible(timeout=40_000)
            newest = heartbeat.last.get_attribute("href")
            expect(heartbeat.last).not_to_have_attribute("href", newest or "", timeout=40_000)
            expect(heartbeat.last).to_have_class(re.compile("s-succeeded"), timeout=20_000)

            # Pause a schedule, with a reason.
            page.click('a.name:text-is("weekly-digest")')
            expect(page).to_have_url(re.compile(r"/schedules/weekly-digest$"))
            pause = page.locator('form[action$="/pause"]')
            pause.locator('input[name="reason"]').fill("mail provider migration")
            pause.locator('input[name="until"]').fill("2h")
            pause.locator("button").click()
            expect(page.locator("section.state .s-paused")).to_be_visible()
            audit = page.locator("tr.audit-row")
            expect(audit.first).to_contain_text("pause")
            expect(audit.first).to_contain_text("mail provider migration")

            # Trigger one now: the new fire and its audit row show up.
            page.goto(login_url.split("/login")[0] + "/schedules/cleanup-expired-sessions")
            trigger = page.locator('form[action$="/trigger"]')
            trigger.locator('input[name="reason"]').fill("clean up before the release")
            trigger.locator("button").click()
            expect(audit.first).to_contain_text("trigger")
            expect(audit.first).to_contain_text("clean up before the release")
            fire = page.locator("tr.fire-row").first
            expect(fire).to_contain_text("manual")
            # Without a reload, the manual fire runs and the page says so.
            expect(fire.locator(":scope > td > .badge")).to_have_text("succeeded", timeout=30_000)
            fire_link = audit.first.locator('a[href^="/fires/"]').get_attribute("href")
            assert fire_link == fire.locator('a[href^="/fires/"]').first.get_attribute("href")

            # Back on the schedules page: the pause and its reason are listed.
            page.click("header nav >> text=Schedules")
            paused = page.locator('tr.schedule-row[data-name="weekly-digest"]')
            expect(paused).to_contain_text("paused until")
            expect(paused).to_contain_text("mail provider migration")
            ran = page.locator('tr.schedule-row[data-name="cleanup-expired-sessions"] .cell')
            expect(ran).to_have_count(1)
            page.screenshot(path=str(_screenshot_path(up[1])))
        finally:
            browser.close()
    assert blocked == [], f"the CSP blocked something the page needs: {blocked}"


def _screenshot_path(tmp: Path) -> Path:
    if os.environ.get("CRONWORK_UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        return SCREENSHOT
    return tmp.parent / "dashboard.png"
