"""Fixtures for the web front-end tests: the real stack behind a gateway, and headless Chromium.

Chromium is Debian's (/usr/bin/chromium) driven by the playwright Python package; playwright's
own browser downloads are never used (the machines have no internet). Without either, the
browser tests skip and say how to get them; the plain HTTP tests still run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from web_stack import WebStack  # noqa: E402

# Debian's path; SELFIELESS_TEST_CHROMIUM points elsewhere (another distribution's build).
CHROMIUM = Path(os.environ.get("SELFIELESS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
MISSING_CHROMIUM = "install Debian's chromium: scripts/provision chromium"
MISSING_PLAYWRIGHT = "pip install playwright (in the project's test extra); never `playwright install`"


@pytest.fixture(scope="session")
def web_stack(tmp_path_factory):
    stack = WebStack(tmp_path_factory.mktemp("web-stack")).start()
    yield stack
    stack.stop()


@pytest.fixture
def api(web_stack):
    """An httpx client on the gateway's /api/v1, with every category (and so every act) removed
    first, so each test starts from the empty state through the public API only."""
    client = httpx.Client(base_url=web_stack.url + "/api/v1", timeout=30)
    r = client.get("/categories")
    for name in (r.json() if r.status_code == 200 else {}):
        assert client.delete(f"/categories/{name}").status_code == 200
    yield client
    client.close()


@pytest.fixture(scope="module")
def browser():
    # Module scope, not session: playwright's sync API keeps an event loop running on this thread
    # while it is open, and the asyncio tests that run after this module need the thread free.
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: {MISSING_CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"the playwright package is missing: {MISSING_PLAYWRIGHT}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Dialogs:
    """Accepts every confirm() and remembers its text (the tests check what was asked)."""

    def __init__(self, page):
        self.messages: list[str] = []
        page.on("dialog", self._accept)

    def _accept(self, dialog):
        self.messages.append(dialog.message)
        dialog.accept()


@pytest.fixture
def page(browser, web_stack, request):
    """A fresh browser context (empty localStorage) on the gateway's origin. Script errors and
    console errors (CSP violations included) are collected in ``page.console_messages``."""
    context = browser.new_context(base_url=web_stack.url, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(10_000)
    pg = context.new_page()
    console = []
    # Expected API refusals (400s the tests provoke) also log "Failed to load resource": not bugs.
    pg.on("console", lambda m: console.append(f"{m.type}: {m.text}")
          if m.type in ("error", "warning") and not m.text.startswith("Failed to load resource") else None)
    pg.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    pg.dialogs = Dialogs(pg)
    pg.console_messages = console
    yield pg
    if console:
        print("browser console:\n" + "\n".join(console))
    context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
