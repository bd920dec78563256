"""The page in headless Chromium (Playwright driving Debian's chromium): upload, bars, errors, raw JSON, no model,
the "Show why" heat map and the off-distribution banner."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import serve_support as images
from serve_support import threaded_server

from cifar10_classifier import CLASSES
from cifar10_classifier.serve import model as served_model
from cifar10_classifier.serve.app import create_app
from cifar10_classifier.serve.settings import Settings

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu"]
PHONE = {"width": 390, "height": 844}
# Set to a folder to keep the screenshots (the tests always take them, so a broken layout fails loudly too).
SCREENSHOT_DIR = os.environ.get("CIFAR10_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: `make browser` (scripts/install-browser.sh) installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def base_url(tiny_model):
    with threaded_server(create_app(Settings(model=tiny_model))) as url:
        yield url


def screenshot(page, tmp_path, name: str) -> None:
    folder = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def open_page(browser, url: str, viewport=None):
    page = browser.new_page(viewport=viewport or {"width": 1100, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(url)
    page.wait_for_selector("#model-info:has-text('model tiny-test-model')")
    return page, errors


def test_upload_shows_the_class_the_bars_and_the_timing(browser, base_url, tmp_path):
    page, errors = open_page(browser, base_url)
    page.set_input_files(
        "#file-input", files=[{"name": "cat.jpg", "mimeType": "image/jpeg", "buffer": images.jpeg((320, 240))}]
    )
    page.wait_for_selector("#result:not([hidden])")
    assert page.text_content("#answer-class") in CLASSES
    bars = page.locator("#bars .bar")
    assert bars.count() == 5
    assert page.locator("#bars .bar-top .bar-name").text_content() == page.text_content("#answer-class")
    widths = [
        float(bars.nth(i).locator(".bar-fill").evaluate("e => e.getBoundingClientRect().width")) for i in range(5)
    ]
    assert widths == sorted(widths, reverse=True) and widths[0] > 0
    assert "inference" in page.text_content("#timing")
    assert page.is_visible("#preview")
    assert page.is_hidden("#ood-banner")  # this server sends no in_distribution field: nothing is said
    assert page.is_hidden("#explain-canvas")
    page.click("#raw summary")
    assert '"class_index"' in page.text_content("#raw-json")
    screenshot(page, tmp_path, "page-desktop")
    assert not errors, errors


def test_a_bad_file_shows_a_clear_error_banner(browser, base_url, tmp_path):
    page, _ = open_page(browser, base_url)
    page.set_input_files("#file-input", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    page.wait_for_selector("#error-banner:not([hidden])")
    assert "not an image" in page.text_content("#error-banner")
    assert page.is_hidden("#result")
    screenshot(page, tmp_path, "page-error")


def test_a_hostile_file_name_is_shown_as_text(browser, base_url):
    page, _ = open_page(browser, base_url)
    name = '<img src=x onerror="window.pwned=1">.png'
    page.set_input_files("#file-input", files=[{"name": name, "mimeType": "image/png", "buffer": images.tile_png()}])
    page.wait_for_selector("#result:not([hidden])")
    assert name in page.text_content("#file-name")
    assert page.evaluate("window.pwned") is None
    assert page.locator("img").count() == 1  # only the preview


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_drop_and_paste_classify_too(browser, base_url, how):
    page, errors = open_page(browser, base_url)
    encoded = base64.b64encode(images.tile_png(8)).decode()
    page.evaluate(
        """([encoded, how]) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "tile.png", { type: "image/png" }));
            if (how === "drop") {
                document.getElementById("dropzone").dispatchEvent(
                    new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
            } else {
                document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true }));
            }
        }""",
        [encoded, how],
    )
    page.wait_for_selector("#result:not([hidden])")
    assert page.text_content("#answer-class") in CLASSES
    assert not errors, errors


def test_the_page_fits_a_phone_screen(browser, base_url, tmp_path):
    page, _ = open_page(browser, base_url, viewport=PHONE)
    page.set_input_files("#file-input", files=[{"name": "t.png", "mimeType": "image/png", "buffer": images.tile_png()}])
    page.wait_for_selector("#result:not([hidden])")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
    for selector in ("#dropzone", "#bars", "#timing"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], selector
    screenshot(page, tmp_path, "page-phone")


def test_without_a_model_the_page_says_how_to_get_one(browser, monkeypatch, tmp_path):
    monkeypatch.setattr(served_model, "bundled_model_path", lambda: tmp_path / "absent.onnx")
    with threaded_server(create_app(Settings(model=None))) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#status-banner:not([hidden])")
        assert "no model is bundled yet: run make bundled-model or pass --model" in page.text_content("#status-banner")
        page.set_input_files(
            "#file-input", files=[{"name": "t.png", "mimeType": "image/png", "buffer": images.tile_png()}]
        )
        page.wait_for_selector("#error-banner:not([hidden])")
        assert "make bundled-model" in page.text_content("#error-banner")
        screenshot(page, tmp_path, "page-no-model")


OOD_MESSAGE = (
    "This doesn't look like any of the 10 classes: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, "
    "truck."
)


def canvas_alpha(page) -> list[int]:
    return page.evaluate(
        """() => {
            const canvas = document.getElementById("explain-canvas");
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            return Array.from(data).filter((_, i) => i % 4 === 3);
        }"""
    )


def test_show_why_lays_the_heat_map_over_the_preview(browser, base_url, tmp_path):
    page, errors = open_page(browser, base_url)
    photo = images.jpeg((320, 240))
    page.set_input_files("#file-input", files=[{"name": "p.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    page.wait_for_selector("#result:not([hidden])")
    with page.expect_response("**/explain?*") as answer:
        page.check("#explain-toggle")
    explained = answer.value.json()
    page.wait_for_selector("#explain-canvas:not([hidden])")
    size = page.evaluate("() => { const c = document.getElementById('explain-canvas'); return [c.width, c.height]; }")
    assert size == [explained["grid"], explained["grid"]]
    # Each cell's opacity follows its value, so the drawn canvas is the server's map.
    expected = [round(255 * 0.6 * value) for row in explained["heatmap"] for value in row]
    assert canvas_alpha(page) == pytest.approx(expected, abs=1)
    assert max(expected) > 0
    canvas, preview = page.locator("#explain-canvas").bounding_box(), page.locator("#preview").bounding_box()
    assert all(abs(canvas[key] - preview[key]) < 1.5 for key in ("x", "y", "width", "height"))
    screenshot(page, tmp_path, "page-explain")
    page.uncheck("#explain-toggle")
    assert page.is_hidden("#explain-canvas")
    # The toggle stays on for the next image, and the map redraws for it.
    page.check("#explain-toggle")
    page.wait_for_selector("#explain-canvas:not([hidden])")
    with page.expect_response("**/explain?*"):
        page.set_input_files(
            "#file-input", files=[{"name": "t.png", "mimeType": "image/png", "buffer": images.tile_png(8)}]
        )
    page.wait_for_selector("#explain-canvas:not([hidden])")
    assert page.text_content("#answer-class") in CLASSES
    assert not errors, errors


def test_an_off_distribution_answer_shows_the_banner_above_the_bars(browser, base_url, tmp_path):
    page, errors = open_page(browser, base_url)
    flags = {"in_distribution": False}

    def add_the_field(route):
        response = route.fetch()
        body = {**response.json(), "in_distribution": flags["in_distribution"], "ood_score": 9.5}
        route.fulfill(response=response, body=json.dumps(body))

    page.route("**/predict?*", add_the_field)
    tile = images.tile_png()
    page.set_input_files("#file-input", files=[{"name": "t.png", "mimeType": "image/png", "buffer": tile}])
    page.wait_for_selector("#ood-banner:not([hidden])")
    assert page.text_content("#ood-banner").split() == OOD_MESSAGE.split()
    assert page.locator("#bars .bar").count() == 5  # the answer is still shown
    banner, bars = page.locator("#ood-banner").bounding_box(), page.locator("#bars").bounding_box()
    assert banner["y"] + banner["height"] <= bars["y"]
    screenshot(page, tmp_path, "page-off-distribution")
    flags["in_distribution"] = True
    with page.expect_response("**/predict?*"):
        page.set_input_files("#file-input", files=[{"name": "u.png", "mimeType": "image/png", "buffer": tile}])
    page.wait_for_selector("#result:not([hidden])")  # drawn from the second answer: it was hidden until then
    assert page.get_attribute("#ood-banner", "hidden") is not None
    assert not errors, errors
