"""The web page at `/`, as a person meets it: Debian's Chromium, headless, driven by Playwright,
against the real server; every request the page makes is recorded and must stay on this server."""

import os
import shutil
from pathlib import Path

import pytest
import requests
import trimesh

from tests.images import png
from tests.live_server import LiveServer
from tests.pipeline_helpers import USER_KEY

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium calls Google's hosts at start; SwiftShader
# gives WebGL without a GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("IMAGE2MODEL_SCREENSHOTS", "test-screenshots"))
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real server with relief only (no FAL key) and one user key."""
    instance = tmp_path_factory.mktemp("page") / "instance"
    live = LiveServer(instance, env={"IMAGE2MODEL_API_KEYS": USER_KEY}).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian's package."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh page whose every request is recorded in `page.requested`."""
    # Playwright's waits evaluate strings, which the page's CSP forbids; the CSP is checked apart.
    context = browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 900}, bypass_csp=True
    )
    page = context.new_page()
    page.requested, page.errors = [], []
    page.on("request", lambda request: page.requested.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: print("console:", message.type, message.text))
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()
    assert page.errors == []
    foreign = [
        url for url in page.requested if not url.startswith((server.url("/"), "blob:", "data:"))
    ]
    assert foreign == [], "the page asked another host"


def screenshot(page, name):
    """Save a screenshot for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def enter_key(page, server):
    """Open the page and store the key as a newcomer does."""
    page.goto(server.url("/"))
    page.get_by_label("Your API key").fill(USER_KEY)
    page.get_by_role("button", name="Use this key").click()
    page.wait_for_selector("#model-type option[value=relief]", state="attached")


def test_a_photo_becomes_a_model_seen_in_the_viewer_and_downloaded(page, server, tmp_path):
    enter_key(page, server)
    assert page.locator("#model-type").input_value() == "relief"  # no FAL key: relief chosen
    photo = tmp_path / "chair.png"
    photo.write_bytes(png((96, 96)))
    page.get_by_label("Choose JPEG or PNG photos").set_input_files(str(photo))
    assert page.locator("#chosen li").inner_text().startswith("chair.png")
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector(".result[data-status=completed]")
    page.locator("model-viewer").scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('model-viewer')?.loaded === true")
    facts = page.locator(".result .facts").inner_text()
    assert "faces" in facts and ("KB" in facts or "MB" in facts)
    assert page.locator(".result .state").inner_text().startswith("completed, 100%")
    assert "building mesh" in page.locator(".result details pre").text_content()
    screenshot(page, "model-in-viewer")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download STL").click()
    stl = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(stl)
    assert stl.suffix == ".stl" and len(trimesh.load(stl).faces) > 100


def test_a_bad_file_gets_the_servers_message_next_to_it(page, server, tmp_path):
    enter_key(page, server)
    good, bad = tmp_path / "good.png", tmp_path / "notes.png"
    good.write_bytes(png((32, 32)))
    bad.write_text("not an image at all")
    page.get_by_label("Choose JPEG or PNG photos").set_input_files([str(good), str(bad)])
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector("#upload-error:has-text('VALIDATION_ERROR')")
    bad_item = page.locator("#chosen li[data-name='notes.png'] .error")
    assert bad_item.inner_text() != ""
    assert page.locator("#chosen li[data-name='good.png'] .error").inner_text() == ""
    assert page.locator("#progress-section").is_hidden()  # nothing started
    screenshot(page, "bad-file")


def test_a_wrong_key_is_refused_and_forget_key_clears_it(page, server):
    page.goto(server.url("/"))
    page.get_by_label("Your API key").fill("i2m_not_a_key_of_this_server_at_all_000000")
    page.get_by_role("button", name="Use this key").click()
    page.wait_for_selector("#key-error:has-text('not accepted')")
    assert page.evaluate("localStorage.getItem('image2model.apiKey')") is None
    enter_key(page, server)
    page.get_by_role("button", name="Forget key").click()
    assert page.evaluate("localStorage.getItem('image2model.apiKey')") is None
    assert page.get_by_label("Your API key").is_visible()


def test_on_a_phone_nothing_overflows_and_controls_have_labels(browser, server):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, bypass_csp=True
    )
    page = context.new_page()
    try:
        enter_key(page, server)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input, select')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                .map(el => el.id)"""
        )
        assert unlabelled == []
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement !== document.body")
        screenshot(page, "phone")
    finally:
        context.close()


def test_the_page_is_revalidated_by_etag_and_its_policy_allows_only_this_server(server):
    first = requests.get(server.url("/"), timeout=5)
    assert first.status_code == 200 and first.headers["Content-Type"].startswith("text/html")
    policy = first.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy
    assert "http" not in policy  # no other origin is allowed
    again = requests.get(
        server.url("/"), headers={"If-None-Match": first.headers["ETag"]}, timeout=5
    )
    assert again.status_code == 304
