"""End-to-end tests of the web front end: real Chromium, real gateway, real services on 127.0.0.1.

The page is loaded from the gateway (``/ui/``) and only talks to the API through it, exactly as
in production. Screenshots of the main pages land in ``test-artifacts/web/``.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta

import httpx
import pytest

from web_stack import PNG, PNG_B64, sha1

TIMESTAMP = re.compile(r"^\d{2}-\d{2}-\d{4}:\d{2}-\d{2}-\d{2}$")


def expect(target):
    from playwright.sync_api import expect as playwright_expect
    return playwright_expect(target)


def sign_up(page, name: str, password: str = "s3cret!") -> None:
    page.goto("/ui/#/account")
    page.get_by_label("Username", exact=True).first.fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_test_id("signup-submit").click()
    expect(page.get_by_test_id("current-user")).to_have_text(f"Signed in as {name}")


def add_category(page, name: str) -> None:
    page.get_by_label("New category").fill(name)
    page.get_by_test_id("add-category-submit").click()
    expect(page.locator(f'[data-testid=category-item][data-category="{name}"]')).to_be_visible()


def captions(page) -> list[str]:
    return page.get_by_test_id("act-caption").all_inner_texts()


# ---------------------------------------------------------------- plain HTTP (no browser needed)

def test_service_serves_the_app_and_health_through_the_gateway(web_stack):
    with httpx.Client(base_url=web_stack.url, timeout=10) as http:
        health = http.get("/ui/_health")
        assert (health.status_code, health.json()) == (200, {})
        index = http.get("/ui/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert '<script src="app.js">' in index.text and 'href="style.css"' in index.text
        for path, kind in (("/ui/app.js", "javascript"), ("/ui/sha1.js", "javascript"), ("/ui/style.css", "text/css")):
            r = http.get(path)
            assert r.status_code == 200 and kind in r.headers["content-type"], path
            assert "script-src 'self'" in r.headers["content-security-policy"]
        bare = http.get("/ui")
        assert (bare.status_code, bare.headers["location"]) == (308, "/ui/")
        assert http.get("/ui/missing.js").status_code == 404
        # Nothing is fetched from another origin: no CDN, no web fonts (the machines are offline).
        for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
            assert not re.search(r"https?://", http.get(path).text), path


# ---------------------------------------------------------------- browser

def test_sha1_fallback_matches_hashlib(page, web_stack):
    """The pure-JS SHA-1 (used on plain-http origins without crypto.subtle) gives the digests the
    users API expects, at the padding boundaries and for non-ASCII text too."""
    page.goto("/ui/")
    samples = ["", "abc", "a" * 55, "a" * 56, "a" * 63, "a" * 64, "a" * 65, "héllo wörld ✓ 😀", "p" * 1000]
    got = page.evaluate("(xs) => xs.map(sha1HexFallback)", samples)
    assert got == [sha1(s) for s in samples]
    # The native path (127.0.0.1 is a secure context) agrees.
    assert page.evaluate("sha1Hex('abc')") == sha1("abc")


def test_sign_up_without_crypto_subtle(page, api):
    """On a plain-http LAN origin the browser hides crypto.subtle; signing up still works."""
    page.add_init_script("Object.defineProperty(Crypto.prototype, 'subtle', {get: () => undefined})")
    page.goto("/ui/")
    assert page.evaluate("window.crypto.subtle") is None
    assert page.evaluate("sha1Hex('pässword')") == sha1("pässword")
    sign_up(page, "carol")
    assert "carol" in api.get("/users").json()


def test_empty_states(page, api, artifacts):
    page.goto("/ui/")
    expect(page.get_by_test_id("categories-empty")).to_contain_text("No categories yet")
    page.goto("/ui/#/upload")
    expect(page.get_by_test_id("upload-no-categories")).to_be_visible()
    page.goto("/ui/#/c/Nowhere")
    expect(page.get_by_test_id("category-missing")).to_contain_text("There is no category called “Nowhere”")
    assert api.post("/categories", json=["Quiet"]).status_code == 201
    page.goto("/ui/#/c/Quiet")
    expect(page.get_by_test_id("acts-empty")).to_contain_text("No acts in this category yet")
    page.goto("/ui/#/no/such/view")
    expect(page.locator("h1")).to_have_text("Page not found")


def test_post_upvote_and_delete_a_good_deed(page, api, artifacts, tmp_path):
    """The main journey: sign up, create a category, upload a real PNG, upvote it, delete it."""
    sign_up(page, "alice")
    users = api.get("/users").json()
    assert "alice" in users

    add_category(page, "Nature")
    item = page.locator('[data-testid=category-item][data-category="Nature"]')
    expect(item.get_by_test_id("category-count")).to_have_text("0")
    # A duplicate is refused, with the API's own explanation on screen.
    page.get_by_label("New category").fill("Nature")
    page.get_by_test_id("add-category-submit").click()
    api_error = api.post("/categories", json=["Nature"]).json()["error"]
    expect(page.get_by_test_id("add-category-error")).to_contain_text(api_error)
    page.screenshot(path=artifacts / "home.png", full_page=True)

    # Upload: the username is remembered from sign-up; the category comes from the API.
    photo = tmp_path / "planting-a-tree.png"
    photo.write_bytes(PNG)
    page.get_by_test_id("nav-upload").click()
    expect(page.get_by_test_id("upload-username")).to_have_value("alice")
    page.get_by_label("Photo").set_input_files(str(photo))
    expect(page.get_by_test_id("upload-preview")).to_be_visible()
    page.get_by_label("Caption").fill("Planted a tree in the park")
    page.get_by_label("Category").select_option("Nature")
    page.screenshot(path=artifacts / "upload.png", full_page=True)
    before = datetime.now()
    page.get_by_test_id("upload-submit").click()

    # After the upload the page shows the category, the new act first with 0 upvotes.
    expect(page).to_have_url(re.compile(r"#/c/Nature$"))
    card = page.get_by_test_id("act-card").first
    expect(card.get_by_test_id("act-caption")).to_have_text("Planted a tree in the park")
    expect(card.get_by_test_id("act-author")).to_have_text("alice")
    expect(card.get_by_test_id("act-upvotes")).to_have_text("0")
    expect(page.get_by_test_id("act-total")).to_contain_text("1 act")

    # What reached the API is exactly what the course format asks for.
    [stored] = api.get("/categories/Nature/acts").json()
    assert stored["imgB64"] == PNG_B64
    assert TIMESTAMP.match(stored["timestamp"])
    uploaded_at = datetime.strptime(stored["timestamp"], "%d-%m-%Y:%S-%M-%H")
    assert before - timedelta(seconds=2) <= uploaded_at <= datetime.now() + timedelta(seconds=2)
    assert len(str(stored["actId"])) == 13 and abs(stored["actId"] - before.timestamp() * 1000) < 60_000
    assert card.get_attribute("data-act-id") == str(stored["actId"])
    # The image really decodes in the browser, and the time is shown human-readably.
    assert card.get_by_test_id("act-image").evaluate("img => img.complete && img.naturalWidth") == 96
    expect(card.get_by_test_id("act-time")).to_have_text(uploaded_at.strftime(f"{uploaded_at.day} %b %Y, %H:%M:%S"))

    # Upvote twice.
    card.get_by_test_id("act-upvote").click()
    expect(card.get_by_test_id("act-upvotes")).to_have_text("1")
    expect(card.locator(".votes")).to_have_text("1 upvote")
    card.get_by_test_id("act-upvote").click()
    expect(card.get_by_test_id("act-upvotes")).to_have_text("2")
    assert api.get("/categories/Nature/acts").json()[0]["upvotes"] == 2
    expect(page.get_by_test_id("view")).not_to_contain_text(re.compile(r"\b(null|undefined|NaN)\b"))
    page.screenshot(path=artifacts / "category.png", full_page=True)

    # The home page counts it.
    page.get_by_test_id("nav-home").click()
    expect(item.get_by_test_id("category-count")).to_have_text("1")

    # Delete the act (after a confirmation), then the category.
    item.get_by_test_id("category-link").click()
    page.get_by_test_id("act-delete").first.click()
    expect(page.get_by_test_id("acts-empty")).to_be_visible()
    assert page.dialogs.messages[-1].startswith("Delete this act?")
    assert api.get("/acts/count").json() == [0]
    page.get_by_test_id("nav-home").click()
    item.get_by_test_id("category-delete").click()
    expect(page.get_by_test_id("categories-empty")).to_be_visible()
    assert "Nature" in page.dialogs.messages[-1]
    assert api.get("/categories").status_code == 204

    # Finally remove the account; the page forgets the username.
    page.get_by_test_id("nav-account").click()
    page.get_by_test_id("remove-account").click()
    expect(page.get_by_test_id("current-user")).to_have_text("Not signed up")
    assert "alice" not in (api.get("/users").json() if api.get("/users").status_code == 200 else [])
    assert not page.console_messages, page.console_messages


def test_upload_by_unknown_user_shows_the_api_error(page, api, tmp_path):
    assert api.post("/categories", json=["Roads"]).status_code == 201
    photo = tmp_path / "pothole.png"
    photo.write_bytes(PNG)
    page.goto("/ui/#/upload/Roads")
    expect(page.get_by_test_id("upload-category")).to_have_value("Roads")  # preselected from the URL
    page.get_by_label("Photo").set_input_files(str(photo))
    page.get_by_label("Caption").fill("Filled a pothole")
    page.get_by_label("Username").fill("ghost")
    page.get_by_test_id("upload-submit").click()
    error = page.get_by_test_id("upload-error").get_by_role("alert")
    expect(error).to_be_visible()
    # Exactly the API's words for the same mistake.
    api_error = api.post("/acts", json={"actId": 1, "username": "ghost", "timestamp": "09-04-2019:00-30-14",
                                        "caption": "", "categoryName": "Roads", "imgB64": PNG_B64}).json()["error"]
    expect(error).to_contain_text(api_error)
    assert "ghost" in api_error or "user" in api_error.lower()
    assert api.get("/acts/count").json() == [0]
    expect(page).to_have_url(re.compile(r"#/upload/Roads$"))


def test_sign_up_with_a_taken_name_shows_the_api_error(page, api):
    taken = api.post("/users", json={"username": "bob", "password": sha1("x")})
    assert taken.status_code in (201, 400)
    page.goto("/ui/#/account")
    page.get_by_test_id("signup-username").fill("bob")
    page.get_by_test_id("signup-password").fill("whatever")
    page.get_by_test_id("signup-submit").click()
    api_error = api.post("/users", json={"username": "bob", "password": sha1("y")}).json()["error"]
    expect(page.get_by_test_id("signup-error")).to_contain_text(api_error)
    expect(page.get_by_test_id("current-user")).to_have_text("Not signed up")
    # "Already signed up?" remembers an existing name.
    page.get_by_test_id("existing-username").fill("bob")
    page.get_by_role("button", name="Use this username").click()
    expect(page.get_by_test_id("current-user")).to_have_text("Signed in as bob")


def seed_acts(api, category: str, n: int) -> None:
    """n acts a minute apart, captions "Act 001".."Act n" (so Act n is the newest)."""
    assert api.post("/users", json={"username": "seeder", "password": sha1("seed")}).status_code in (201, 400)
    assert api.post("/categories", json=[category]).status_code == 201
    start = datetime(2019, 4, 9, 8, 0, 0)
    for i in range(1, n + 1):
        at = start + timedelta(minutes=i)
        r = api.post("/acts", json={"actId": 1554800000000 + i, "username": "seeder",
                                    "timestamp": at.strftime("%d-%m-%Y:%S-%M-%H"), "caption": f"Act {i:03d}",
                                    "categoryName": category, "imgB64": PNG_B64})
        assert r.status_code == 201, r.text


def test_pages_through_a_large_category(page, api, artifacts):
    seed_acts(api, "Big", 120)
    assert api.get("/categories/Big/acts").status_code == 413  # why the page uses size + ranges

    page.goto("/ui/")
    expect(page.locator('[data-category="Big"] [data-testid=category-count]')).to_have_text("120")
    page.locator('[data-category="Big"] [data-testid=category-link]').click()
    expect(page.get_by_test_id("page-info")).to_have_text("1 / 6")
    expect(page.get_by_test_id("act-total")).to_have_text("120 acts · page 1 of 6")
    expect(page.get_by_test_id("act-card")).to_have_count(20)
    assert captions(page)[0] == "Act 120" and captions(page)[-1] == "Act 101"
    expect(page.get_by_test_id("page-prev")).to_be_disabled()
    expect(page.get_by_test_id("nav-home")).to_have_attribute("aria-current", "page")
    expect(page.get_by_test_id("act-time").first).to_have_text("9 Apr 2019, 10:00:00")

    page.get_by_test_id("page-next").click()
    expect(page.get_by_test_id("page-info")).to_have_text("2 / 6")
    assert page.evaluate("window.scrollY") == 0  # the next page is read from its top
    expect(page.get_by_test_id("act-caption").first).to_have_text("Act 100")
    assert captions(page)[-1] == "Act 081"

    page.screenshot(path=artifacts / "category-paged.png", full_page=True)

    page.get_by_test_id("page-last").click()
    expect(page.get_by_test_id("page-info")).to_have_text("6 / 6")
    expect(page.get_by_test_id("act-caption").first).to_have_text("Act 020")
    assert captions(page)[-1] == "Act 001"
    expect(page.get_by_test_id("page-next")).to_be_disabled()

    page.get_by_test_id("page-prev").click()
    expect(page.get_by_test_id("page-info")).to_have_text("5 / 6")
    expect(page.get_by_test_id("act-caption").first).to_have_text("Act 040")

    # Pages are in the URL: the back button and direct links work; too large a page is clamped.
    page.go_back()
    expect(page.get_by_test_id("page-info")).to_have_text("6 / 6")
    page.goto("/ui/#/c/Big/3")
    expect(page.get_by_test_id("act-caption").first).to_have_text("Act 080")
    page.goto("/ui/#/c/Big/99")
    expect(page.get_by_test_id("page-info")).to_have_text("6 / 6")

    page.get_by_test_id("page-first").click()
    expect(page.get_by_test_id("act-caption").first).to_have_text("Act 120")
    assert not page.console_messages, page.console_messages


def test_phone_width_layout(browser, web_stack, api, artifacts):
    """At 375 px nothing overflows sideways and the controls stay usable."""
    seed_acts(api, "Kindness", 3)
    context = browser.new_context(base_url=web_stack.url, viewport={"width": 375, "height": 740},
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        pg = context.new_page()
        pg.goto("/ui/")
        expect(pg.locator('[data-category="Kindness"]')).to_be_visible()
        pg.screenshot(path=artifacts / "phone-home.png", full_page=True)
        for hash_ in ("#/c/Kindness", "#/upload/Kindness", "#/account"):
            pg.goto("/ui/" + hash_)
            expect(pg.locator("h1")).to_be_visible()
            pg.wait_for_load_state("networkidle")
            width = pg.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"{hash_} is {width} px wide"
            unlabelled = pg.evaluate("""[...document.querySelectorAll('input, select, textarea, button')]
                .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.textContent.trim())
                .map((c) => c.outerHTML)""")
            assert unlabelled == [], f"controls without an accessible name on {hash_}: {unlabelled}"
            name = {"#/c/Kindness": "phone-category", "#/upload/Kindness": "phone-upload", "#/account": "phone-account"}[hash_]
            pg.screenshot(path=artifacts / f"{name}.png", full_page=True)
        pg.goto("/ui/#/c/Kindness")
        upvote = pg.get_by_test_id("act-upvote").first
        box = upvote.bounding_box()
        assert box["height"] >= 32 and box["x"] + box["width"] <= 375
    finally:
        context.close()


def test_image_helpers_and_timestamps(page, web_stack):
    """The page labels images by their first bytes, strips line breaks, and writes timestamps in
    the course's seconds-minutes-hours order."""
    page.goto("/ui/")
    wrapped = "\n".join(PNG_B64[i:i + 76] for i in range(0, len(PNG_B64), 76))
    assert page.evaluate("(b) => imageSource(b)", wrapped) == "data:image/png;base64," + PNG_B64
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 20).decode()
    gif = base64.b64encode(b"GIF89a" + b"\0" * 20).decode()
    assert page.evaluate("(xs) => xs.map(sniffImageType)", [jpeg, gif]) == ["image/jpeg", "image/gif"]
    assert page.evaluate("courseTimestamp(new Date(2019, 3, 9, 14, 30, 5))") == "09-04-2019:05-30-14"
    assert page.evaluate("readableTimestamp('09-04-2019:05-30-14').text") == "9 Apr 2019, 14:30:05"
    # Ids beyond 2^53 survive parsing exactly (upvote and delete must name the right act).
    assert page.evaluate("parseJson('[{\"actId\": 9223372036854775807}]')[0].actId") == "9223372036854775807"


@pytest.fixture
def gateway_without_replicas(tmp_path):
    """A real gateway whose only replica does not listen: it answers the API with its own 503."""
    from support.ports import free_port
    from support.processes import ModuleProcess

    port = free_port()
    gw = ModuleProcess("gateway-no-replica", "selfieless.gateway", [
        "--host", "127.0.0.1", "--port", str(port), "--no-replica-wait", "0.2",
        "--route", f"/api/v1=127.0.0.1:{free_port()}"], tmp_path)
    try:
        gw.wait_ok(f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}"
    finally:
        gw.stop()


def test_api_failure_shows_its_error_and_retry_recovers(page, api, gateway_without_replicas):
    """When the API fails (here: the real gateway's own 503 with no replica, relayed to the page
    as it is), the page says so in the API's words and offers a retry that works once the API is
    back."""
    api.post("/categories", json=["Recovered"])
    real = httpx.get(f"{gateway_without_replicas}/api/v1/categories", timeout=30)
    assert real.status_code == 503 and real.json()["error"]
    page.route("**/api/v1/categories", lambda route: route.fulfill(
        response=route.fetch(url=f"{gateway_without_replicas}/api/v1/categories")))
    page.goto("/ui/")
    error = page.get_by_test_id("categories").get_by_role("alert")
    expect(error).to_contain_text(real.json()["error"])
    page.unroute("**/api/v1/categories")
    error.get_by_role("button", name="Try again").click()
    expect(page.locator('[data-category="Recovered"]')).to_be_visible()
    # A network failure (nothing answering at all) gets a plain-language message too.
    page.route("**/api/v1/categories/Recovered/acts/size", lambda route: route.abort())
    page.goto("/ui/#/c/Recovered")
    expect(page.get_by_role("alert")).to_contain_text("Cannot reach the server")
