"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium driven by playwright).

Screenshots go to test-artifacts/admin/ at the repository root. Without Chromium or the playwright
package these tests skip and say how to get them.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from admin_support import RunningStack

CHROMIUM = Path(os.environ.get("SELFIELESS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "admin"
TOKEN = "dash-token"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (Debian package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install playwright (never `playwright install`)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def stack(browser, tmp_path_factory):
    # A token on loopback too: the page must ask for it and send it as a bearer header.
    s = RunningStack(tmp_path_factory.mktemp("dash"), token=TOKEN)
    yield s
    s.close()


@pytest.fixture
def page(browser, stack):
    # The test's own wait_for_function predicates are evaluated as strings, which the dashboard's
    # Content-Security-Policy forbids; test_dashboard_runs_under_its_content_security_policy
    # checks the page itself with the policy enforced.
    ctx = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 800}, bypass_csp=True)
    ctx.set_default_timeout(15_000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    ctx.close()


def authed(page):
    page.add_init_script(f"sessionStorage.setItem('selfieless-token', {TOKEN!r})")
    page.goto("/")
    page.wait_for_selector("[data-testid=service-acts]")
    return page


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def cards(page, service="acts"):
    return page.eval_on_selector_all(
        f"[data-testid=replicas-{service}] li",
        "els => els.map(e => ({id: e.dataset.testid.slice(8), port: +e.dataset.port, "
        "health: e.dataset.health, state: e.dataset.state}))")


def test_asks_for_the_token(page, stack):
    page.goto("/")
    page.wait_for_selector("[data-testid=token-form]", state="visible")
    assert page.locator("[data-testid=service-acts]").count() == 0
    page.fill("[data-testid=token-input]", "wrong")
    page.click("[data-testid=token-submit]")
    page.wait_for_selector("[data-testid=token-form]", state="visible")
    assert page.locator("[data-testid=service-acts]").count() == 0
    page.fill("[data-testid=token-input]", TOKEN)
    page.click("[data-testid=token-submit]")
    page.wait_for_selector("[data-testid=service-acts]")
    assert page.locator("[data-testid=token-form]").is_hidden()
    assert page.errors == []


def test_services_replicas_chart_and_events(page, stack):
    authed(page)
    page.wait_for_function("document.querySelector('[data-testid=replicas-acts] li.health-green') !== null")
    c = cards(page)
    st = stack.lt.call(stack.orch.status)
    rep = st["services"]["acts"]["replicas"][0]
    assert c == [{"id": rep["id"], "port": rep["port"], "health": "green", "state": "ready"}]
    assert page.text_content("[data-testid=desired-acts]") == "1"
    assert page.text_content("[data-testid=actual-acts]") == "1"
    assert page.text_content("[data-testid=stack-name]") == st["stack"]
    assert page.locator("[data-testid=events] li").count() >= 2

    # Traffic shows up in the requests/s figure and chart (computed from successive polls).
    stop = threading.Event()

    def traffic():
        with httpx.Client(base_url=stack.gateway_url, timeout=10) as cl:
            while not stop.is_set():
                cl.get("/api/v1/categories")
                time.sleep(0.04)

    th = threading.Thread(target=traffic, daemon=True)
    th.start()
    try:
        page.wait_for_function("parseFloat(document.querySelector('[data-testid=rps-acts]').textContent) > 5",
                               timeout=20_000)
        time.sleep(2.5)
        shot(page, "dashboard-traffic.png")
    finally:
        stop.set()
        th.join(10)
    assert page.errors == []


def test_crashed_replica_turns_red_and_is_replaced(page, stack):
    authed(page)
    page.wait_for_function("document.querySelector('[data-testid=replicas-acts] li.health-green') !== null")
    old = cards(page)[0]
    shot(page, "dashboard-before-crash.png")
    r = httpx.post(f"http://127.0.0.1:{old['port']}/api/v1/_crash", timeout=10)
    assert r.status_code == 200
    page.wait_for_selector(f"[data-testid='replica-{old['id']}'][data-health=red]", timeout=20_000)
    shot(page, "dashboard-crashed.png")
    # A new replica (new id) on the same port turns green.
    page.wait_for_function(
        """([port, oldId]) => [...document.querySelectorAll('[data-testid=replicas-acts] li')]
             .some(e => +e.dataset.port === port && e.dataset.health === 'green' && e.dataset.testid !== 'replica-' + oldId)""",
        arg=[old["port"], old["id"]], timeout=30_000)
    shot(page, "dashboard-replaced.png")
    now = cards(page)
    new = [c for c in now if c["id"] != old["id"]]
    assert len(new) == 1 and new[0]["port"] == old["port"] and new[0]["health"] == "green"
    # The failure and the replacement are in the events feed.
    feed = page.text_content("[data-testid=events]")
    assert old["id"] in feed and "replaced" in feed
    assert page.errors == []


def test_plus_and_minus_buttons_scale(page, stack):
    authed(page)
    stack.wait(lambda: stack.orch.converged(), 30, "converged")
    page.wait_for_function("document.querySelector('[data-testid=desired-acts]').textContent === '1'")
    page.click("[data-testid=scale-up-acts]")
    page.wait_for_function("document.querySelector('[data-testid=desired-acts]').textContent === '2'")
    assert stack.lt.call(lambda: stack.orch.services["acts"].desired) == 2
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=replicas-acts] li.health-green:not(.ghost)').length === 2",
        timeout=30_000)
    page.wait_for_function("document.querySelector('[data-testid=actual-acts]').textContent === '2'")
    shot(page, "dashboard-scaled-up.png")
    page.click("[data-testid=scale-down-acts]")
    page.wait_for_function("document.querySelector('[data-testid=desired-acts]').textContent === '1'")
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=replicas-acts] li:not(.ghost)').length === 1", timeout=30_000)
    assert stack.lt.call(lambda: stack.orch.services["acts"].desired) == 1
    feed = page.text_content("[data-testid=events]")
    assert "scaled acts 1\u21922: manual scale (admin API)" in feed and "scaled acts 2\u21921" in feed
    assert page.errors == []


def test_fresh_page_shows_recent_history_title_and_policy(browser, stack):
    # Traffic first, with no page open: the charts of a page opened afterwards start from it.
    with httpx.Client(base_url=stack.gateway_url, timeout=10) as cl:
        t_end = time.monotonic() + 12
        while time.monotonic() < t_end:
            cl.get("/api/v1/categories")
            time.sleep(0.03)
    time.sleep(1.5)
    ctx = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 800}, bypass_csp=True)
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        opened = time.monotonic()
        authed(page)
        page.wait_for_function("+document.querySelector('[data-testid=chart-acts]').dataset.points >= 10")
        # Ten or more points within a few seconds of opening: they came from the admin API's history,
        # not from this page's own polls (one a second).
        assert time.monotonic() - opened < 8
        chart = page.locator("[data-testid=chart-acts]")
        assert float(chart.get_attribute("data-peak")) > 5
        shot(page, "dashboard-fresh-with-history.png")
        name = stack.orch.stack.name
        assert page.title() == f"stack {name} · selfieless dashboard"
        assert page.text_content("header h1").split() == ["selfieless", "dashboard", "stack", name]
        policy = page.text_content("[data-testid=service-acts] .policy")
        assert policy.startswith("autoscale: none (scaled by hand) · ports "), policy
        assert errors == []
    finally:
        ctx.close()


def test_dashboard_runs_under_its_content_security_policy(browser, stack):
    """With the admin API's CSP enforced, the page renders, polls and draws with no violation."""
    ctx = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        authed(page)
        page.wait_for_selector("[data-testid=replicas-acts] li[data-health=green]")
        page.wait_for_selector("[data-testid=chart-acts]")
        time.sleep(2.5)  # a few polls and redraws
        assert errors == []
    finally:
        ctx.close()
