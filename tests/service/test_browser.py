"""The web page in a real browser: Debian's chromium driven by Playwright.

Start a download and watch its bar move, cancel one, read the error for a
model that does not exist, delete a model from the inventory, use an API key,
and check the layout on a phone-sized screen. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .conftest import ARTIFACTS

CHROMIUM = os.environ.get("MODELPULL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MB = 1_000_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"service-{name}.png"), full_page=True)


def _repo(olah: Any, repo_id: str, size: int) -> None:
    olah.make_repo(repo_id, {"config.json": b'{"model_type": "demo"}', "model.safetensors": os.urandom(size)})


def _start(page: Page, provider: str, model: str) -> None:
    page.select_option("#provider", provider)
    page.fill("#model", model)
    page.click("#start")


def _job(page: Page, model: str) -> Any:
    return page.locator("#jobs .job", has=page.locator(".name", has_text=model))


def test_download_cancel_error_and_delete_in_the_browser(page, service, olah, hf_front, repo_id):
    moving, cancelled = repo_id + "-a", repo_id + "-b"
    _repo(olah, moving, 2 * MB)
    _repo(olah, cancelled, 2 * MB)
    hf_front.throttle(500_000, repo_id=moving, path="model.safetensors")
    hf_front.throttle(200_000, repo_id=cancelled, path="model.safetensors")

    page.goto(service.url + "/")
    expect(page.locator("#conn")).to_have_text("Connected")
    expect(page.locator("#provider option")).not_to_have_count(0)
    expect(page.locator("#inventory-notes")).to_contain_text("No models downloaded yet")
    shot(page, "1-empty")

    # 1. start a download and watch the bar move
    _start(page, "huggingface", moving)
    card = _job(page, moving)
    expect(card).to_have_attribute("data-state", "running")
    seen: list[float] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        value = float(card.locator(".bar").get_attribute("aria-valuenow") or 0)
        if not seen or value != seen[-1]:
            seen.append(value)
        if 30 < value < 90 and not (ARTIFACTS / "service-2-downloading.png").exists():
            shot(page, "2-downloading")
        if card.get_attribute("data-state") != "running":
            break
        time.sleep(0.1)
    expect(card).to_have_attribute("data-state", "complete")
    midway = [v for v in seen if 0 < v < 100]
    assert len(midway) >= 3, f"the bar did not move step by step: {seen}"
    assert seen == sorted(seen), f"the bar went backwards: {seen}"
    expect(card.locator(".stats")).to_contain_text("2.0 MB / 2.0 MB")
    expect(card.locator(".badge")).to_have_text("complete")

    # 2. cancel a second one
    _start(page, "huggingface", cancelled)
    second = _job(page, cancelled)
    expect(second.locator(".stats")).to_contain_text("/s")  # speed shown while it runs
    expect(second.locator(".stats")).to_contain_text("left")  # and the ETA
    second.get_by_role("button", name="Cancel").click()
    expect(second).to_have_attribute("data-state", "cancelled")
    expect(second.locator(".msg")).to_contain_text("cancelled")
    expect(second.get_by_role("button", name="Remove")).to_be_visible()

    # 3. a model that does not exist: the error in words
    _start(page, "huggingface", "svc/no-such-model-anywhere")
    missing = _job(page, "svc/no-such-model-anywhere")
    expect(missing).to_have_attribute("data-state", "error")
    expect(missing.locator(".msg")).to_contain_text("Error: model 'svc/no-such-model-anywhere' was not found")
    # and a name that is not a repo id is refused before any job exists
    _start(page, "huggingface", "not a repo")
    expect(page.locator("#form-error")).to_contain_text("invalid Hugging Face repo id")
    expect(page.locator("#form-error")).to_contain_text("invalid_model")
    shot(page, "3-cancel-and-errors")

    # 4. the finished download is in the inventory; delete it
    model = page.locator("#models .model", has=page.locator(".name", has_text=moving))
    expect(model).to_have_count(1)
    expect(model.locator(".sub")).to_contain_text("Transformers · 2.0 MB")  # config + safetensors: not MLX
    shot(page, "4-inventory")
    page.once("dialog", lambda dialog: dialog.accept())
    model.get_by_role("button", name="Delete").click()
    expect(model).to_have_count(0)
    assert not (service.dirs["hf"] / f"models--{moving.replace('/', '--')}").exists()

    # removing a finished job from the list
    second.get_by_role("button", name="Remove").click()
    expect(second).to_have_count(0)


def test_page_on_a_phone(browser, service, ollama_emulator):
    ollama_emulator.add_model("phone-sized-model:1b", [3 * MB, 100], bytes_per_sec=600_000)
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(service.url + "/")
        page.select_option("#provider", "ollama")
        expect(page.locator("#model")).to_have_attribute("placeholder", "gemma3:1b")
        page.fill("#model", "phone-sized-model:1b")
        page.tap("#start")
        card = _job(page, "phone-sized-model:1b")
        expect(card.locator(".stats")).to_contain_text("left")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
        box = page.locator("#start").bounding_box()
        assert box is not None and box["height"] >= 40 and box["width"] > 300  # a thumb-sized button
        shot(page, "5-phone")
        card.get_by_role("button", name="Cancel").tap()
        expect(card).to_have_attribute("data-state", "cancelled")
    finally:
        context.close()


def test_page_asks_for_the_api_key(page, start_service, ollama_emulator):
    service = start_service(api_key="browser-test-key", ollama_url=ollama_emulator.base_url)
    ollama_emulator.add_model("keyed:1b", [50_000], bytes_per_sec=1e7)
    page.goto(service.url + "/")
    expect(page.locator("#auth")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("API key needed")
    page.fill("#api-key", "browser-test-key")
    page.click("#auth-form button")
    expect(page.locator("#auth")).to_be_hidden()
    expect(page.locator("#conn")).to_have_text("Connected")
    _start(page, "ollama", "keyed:1b")
    expect(_job(page, "keyed:1b")).to_have_attribute("data-state", "complete")
    shot(page, "6-api-key")
    # the key stays in this tab only, never in the URL
    assert page.evaluate("sessionStorage.getItem('modelpull-api-key')") == "browser-test-key"
    assert "browser-test-key" not in page.url
    assert "browser-test-key" not in service.log_text()
