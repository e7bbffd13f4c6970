"""The page's controls in a real browser (Debian's chromium, Playwright), against the real service.

Check shows the plan before anything moves, with a quantization picker for GGUF repos;
job cards pause, resume, cancel and retry, show paused and cancelled as such (not as
failures), open a per-file breakdown, say how long a download took and how fast it went,
copy the path; "Clear finished" empties the list of finished jobs; a banner and stale cards
while the service is stopped under the page, until it is back; the layout on a phone.
Every state is saved as a screenshot in test-artifacts/ (page-*.png).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import ARTIFACTS, free_port, serve_process, wait_for
from .test_browser import _job, browser  # noqa: F401  (fixture)

MB = 1_000_000
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1000, "height": 900},
                                  permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"page-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _weights(size: int, seed: str) -> bytes:
    block = (seed * 64).encode()[:64]
    return (block * (size // len(block) + 1))[:size]


def _hf_repo(olah: Any, repo_id: str, size: int) -> None:
    olah.make_repo(repo_id, {"config.json": b'{"model_type": "llama"}', "model.safetensors": _weights(size, repo_id)})


def _gguf_repo(olah: Any, repo_id: str) -> dict[str, int]:
    sizes = {"tiny-Q4_K_M.gguf": 300_000, "tiny-Q8_0.gguf": 500_000, "tiny-F16.gguf": 900_000,
             "mmproj-tiny-F16.gguf": 120_000}
    olah.make_repo(repo_id, {name: _weights(size, repo_id + name) for name, size in sizes.items()})
    return sizes


def _start(page: Page, provider: str, model: str) -> Any:
    page.select_option("#provider", provider)
    page.fill("#model", model)
    page.click("#start")
    return _job(page, model)


def _color(locator: Any, prop: str = "background-color") -> str:
    return str(locator.evaluate(f"e => getComputedStyle(e).getPropertyValue('{prop}')"))


def _error_color(page: Page) -> str:
    return str(page.evaluate(
        "() => { const d = document.createElement('div'); d.style.color = 'var(--err)';"
        " document.body.append(d); const c = getComputedStyle(d).color; d.remove(); return c; }"
    ))


def test_check_shows_the_plan_and_a_quantization_picker(page, service, olah, hf_front, repo_id):
    gguf = repo_id + "-GGUF"
    sizes = _gguf_repo(olah, gguf)
    page.goto(service.url + "/")
    expect(page.locator("#conn")).to_have_text("Connected")
    # the sources as people know them, with what they do and an example
    page.select_option("#provider", "gguf")
    expect(page.locator("#source-summary")).to_contain_text("One quantization of a GGUF repo")
    expect(page.locator("#source-example")).to_have_text("bartowski/Qwen_Qwen3-8B-GGUF:Q4_K_M")

    page.fill("#model", gguf)
    page.click("#check")
    plan = page.locator("#plan")
    expect(plan).to_be_visible()
    # the plan: files with sizes, what is on disk, the total to fetch, where it goes
    rows = page.locator("#plan-items tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("tiny-Q4_K_M.gguf")
    expect(rows.nth(0)).to_contain_text("300.0 kB")
    expect(rows.nth(1)).to_contain_text("mmproj-tiny-F16.gguf")
    expect(page.locator("#plan-total")).to_have_text("420.0 kB")
    expect(page.locator("#plan-present")).to_have_text("0 B")
    expect(page.locator("#plan-missing")).to_have_text("420.0 kB")
    expect(page.locator("#plan-dest")).to_contain_text(str(service.dirs["hf"]))
    # the picker: every quantization with its size, the default marked, the projector along
    quants = page.locator("#quants .quant")
    expect(quants).to_have_count(3)
    assert quants.locator(".qname").all_text_contents() == ["Q4_K_M", "Q8_0", "F16"]
    q4 = quants.nth(0)
    expect(q4.locator("input")).to_be_checked()
    expect(q4.locator(".tag")).to_have_text("default")
    expect(q4).to_contain_text("300.0 kB")
    expect(q4).to_contain_text("+ projector 120.0 kB")
    assert not hf_front.requests(method="GET", path_contains="/resolve/"), "Check downloaded something"
    shot(page, "1-plan-gguf")

    # picking another quantization changes the model and the plan
    quants.nth(1).click()
    expect(page.locator("#model")).to_have_value(f"{gguf}:Q8_0")
    expect(rows.nth(0)).to_contain_text("tiny-Q8_0.gguf")
    expect(page.locator("#plan-total")).to_have_text("620.0 kB")
    expect(quants.nth(1).locator("input")).to_be_checked()
    shot(page, "2-quant-picked")

    # download it, then Check again: everything is on disk, nothing to fetch
    page.click("#start")
    expect(page.locator("#plan")).to_be_hidden()
    expect(_job(page, f"{gguf}:Q8_0")).to_have_attribute("data-state", "complete")
    page.click("#check")
    expect(page.locator("#plan-missing")).to_have_text("0 B")
    expect(rows.nth(0)).to_contain_text("✓ on disk")
    expect(page.locator("#plan-present")).to_have_text("620.0 kB")
    shot(page, "3-plan-on-disk")

    # a quantization the repo does not have: said so, and the picker offers what it has
    page.fill("#model", f"{gguf}:Q4_K")
    page.click("#check")
    expect(page.locator("#plan-summary")).to_contain_text("has no 'Q4_K' quantization")
    expect(quants).to_have_count(3)
    expect(page.locator("#quants input:checked")).to_have_count(0)
    quants.nth(2).click()
    expect(page.locator("#model")).to_have_value(f"{gguf}:F16")
    expect(rows.nth(0)).to_contain_text("tiny-F16.gguf")
    assert sizes["tiny-F16.gguf"] == 900_000
    shot(page, "4-plan-missing-quant")

    # a Hub repo: its files; a bad name is refused in the form with the field named
    _hf_repo(olah, repo_id, 1 * MB)
    page.select_option("#provider", "huggingface")
    page.fill("#model", repo_id)
    page.click("#check")
    expect(page.locator("#quant-picker")).to_be_hidden()
    expect(page.locator("#plan-items tr")).to_have_count(2)
    expect(page.locator("#plan-total")).to_have_text("1.0 MB")
    page.fill("#model", "not a repo")
    page.click("#check")
    expect(page.locator("#plan")).to_be_hidden()
    expect(page.locator("#form-error")).to_contain_text("invalid Hugging Face repo id")
    expect(page.locator("#form-error")).to_contain_text("Check the Model field")
    expect(page.locator("#form-error .code")).to_have_text("invalid_model")


def test_pause_resume_cancel_retry_and_what_a_finished_card_says(page, service, olah, hf_front, repo_id):
    paused_repo, cancelled_repo = repo_id + "-p", repo_id + "-c"
    _hf_repo(olah, paused_repo, 2 * MB)
    _hf_repo(olah, cancelled_repo, 2 * MB)
    rules = [hf_front.throttle(250_000, repo_id=r, path="model.safetensors") for r in (paused_repo, cancelled_repo)]
    page.goto(service.url + "/")
    expect(page.locator("#conn")).to_have_text("Connected")

    # pause: the transfer stops, the card says paused (not an error), the partial stays
    card = _start(page, "huggingface", paused_repo)
    expect(card).to_have_attribute("data-state", "running")
    expect(card.get_by_role("button", name="Pause")).to_be_visible()
    wait_for(lambda: float(card.locator(".bar").get_attribute("aria-valuenow") or 0) > 20, timeout=30)
    card.get_by_role("button", name="Pause").click()
    expect(card).to_have_attribute("data-state", "paused")
    expect(card.locator(".badge")).to_have_text("paused")
    expect(card.locator(".msg")).to_contain_text("paused")
    expect(card.get_by_role("button", name="Resume")).to_be_visible()
    error = _error_color(page)
    assert _color(card.locator(".bar > div")) != error and _color(card.locator(".badge"), "color") != error
    assert _color(card.locator(".msg"), "color") != error
    paused_at = float(card.locator(".bar").get_attribute("aria-valuenow") or 0)
    assert 0 < paused_at < 100
    sent_before = hf_front.file_bytes_sent(paused_repo, "model.safetensors")
    shot(page, "5-paused")

    # resume: it goes on from where it stopped and completes
    hf_front.remove_rule(rules[0])
    card.get_by_role("button", name="Resume").click()
    expect(card).to_have_attribute("data-state", "complete")
    assert float(card.locator(".bar").get_attribute("aria-valuenow") or 0) == 100.0
    sent = hf_front.file_bytes_sent(paused_repo, "model.safetensors")
    assert sent - sent_before < 2 * MB * (1 - paused_at / 100) + 300_000, "resume fetched the file again"
    expect(card.locator(".stats")).to_contain_text("2.0 MB / 2.0 MB")
    # when done: how long it took, how fast on average, the path to copy
    expect(card.locator(".done-line")).to_contain_text("after it was first started (2 runs)")
    expect(card.locator(".done-line")).to_contain_text("average")
    expect(card.locator(".msg")).to_have_text(f"Downloaded {paused_repo}")
    path = card.locator(".where .path").text_content() or ""
    assert path.startswith(str(service.dirs["hf"])) and Path(path).is_dir()
    card.locator(".where").get_by_role("button", name="Copy").click()
    expect(card.locator(".where button")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == path
    # the per-file breakdown opens on click
    breakdown = card.locator(".files-box")
    expect(breakdown.locator("summary")).to_have_text("Files (2 of 2 done)")
    expect(breakdown.locator(".file-row")).to_have_count(0)
    breakdown.locator("summary").click()
    expect(breakdown.locator(".file-row")).to_have_count(2)
    expect(breakdown.locator(".file-row", has_text="model.safetensors")).to_contain_text("✓ 2.0 MB")
    shot(page, "6-complete-with-breakdown")

    # cancel: grey, not red; Retry runs it again under the same card
    other = _start(page, "huggingface", cancelled_repo)
    wait_for(lambda: float(other.locator(".bar").get_attribute("aria-valuenow") or 0) > 10, timeout=30)
    other.locator(".files-box summary").click()
    expect(other.locator(".file-row", has_text="model.safetensors")).to_contain_text("/ 2.0 MB")
    shot(page, "7-running-breakdown")
    other.get_by_role("button", name="Cancel").click()
    expect(other).to_have_attribute("data-state", "cancelled")
    expect(other.locator(".badge")).to_have_text("cancelled")
    assert _color(other.locator(".bar > div")) != error and _color(other.locator(".badge"), "color") != error
    assert "error" not in (other.get_attribute("class") or "").split()
    expect(other.get_by_role("button", name="Retry")).to_be_visible()
    expect(other.get_by_role("button", name="Remove from list")).to_be_visible()
    shot(page, "8-cancelled")
    job_id = other.get_attribute("data-id")
    hf_front.remove_rule(rules[1])
    other.get_by_role("button", name="Retry").click()
    expect(other).to_have_attribute("data-state", "complete")
    assert other.get_attribute("data-id") == job_id
    expect(page.locator("#jobs .job")).to_have_count(2)


def test_a_failed_job_names_the_fields_links_its_url_and_retries_with_a_token(page, service, olah, hf_front,
                                                                                 repo_id):
    _hf_repo(olah, repo_id, 200_000)
    token = "hf_PAGETOKEN" + repo_id[-6:]
    hf_front.gate(repo_id, allowed_tokens=[token])
    page.goto(service.url + "/")
    card = _start(page, "huggingface", repo_id)
    expect(card).to_have_attribute("data-state", "error")
    expect(card.locator(".badge")).to_have_text("failed")
    msg = card.locator(".msg")
    expect(msg).to_contain_text("is gated")
    expect(msg).to_contain_text("paste a token in the box below")
    expect(msg).not_to_contain_text("token=...")
    link = msg.locator("a")
    expect(link).to_have_attribute("href", f"{hf_front.endpoint}/{repo_id}")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    shot(page, "9-failed-gated")
    card.locator(".token-row input").fill(token)
    card.get_by_role("button", name="Retry with this token").click()
    expect(card).to_have_attribute("data-state", "complete")
    assert token not in page.content() and token not in service.log_text()

    # an unreachable source names the page's own field
    page.select_option("#provider", "ollama")
    page.locator("#more summary").click()
    page.fill("#base-url", f"http://127.0.0.1:{free_port()}")
    page.fill("#model", "gemma3:1b")
    page.click("#start")
    failed = _job(page, "gemma3:1b")
    expect(failed).to_have_attribute("data-state", "error")
    expect(failed.locator(".msg")).to_contain_text("Source address")


def test_clear_finished_removes_only_finished_jobs(page, service, olah, hf_front, ollama_emulator, repo_id):
    ollama_emulator.add_model("quick:1b", [40_000], bytes_per_sec=10 * MB)
    ollama_emulator.add_model("slow:1b", [3 * MB], bytes_per_sec=150_000)
    page.goto(service.url + "/")
    expect(page.locator("#clear-finished")).to_be_hidden()
    quick = _start(page, "ollama", "quick:1b")
    expect(quick).to_have_attribute("data-state", "complete")
    failed = _start(page, "huggingface", repo_id + "-missing")
    expect(failed).to_have_attribute("data-state", "error")
    slow = _start(page, "ollama", "slow:1b")
    expect(slow).to_have_attribute("data-state", "running")
    expect(page.locator("#clear-finished")).to_have_text("Clear finished from list (2)")
    shot(page, "10-before-clear")
    page.click("#clear-finished")
    expect(page.locator("#jobs .job")).to_have_count(1)
    expect(slow).to_have_attribute("data-state", "running")
    expect(page.locator("#clear-finished")).to_be_hidden()
    with service.client() as client:
        assert [j["model"] for j in client.get("/downloads").json()["jobs"]] == ["slow:1b"]
    shot(page, "11-after-clear")
    slow.get_by_role("button", name="Cancel").click()
    expect(slow).to_have_attribute("data-state", "cancelled")


def test_banner_and_stale_cards_while_the_service_is_away(page, tmp_path, olah, hf_front, repo_id):
    """Stop ``modelpull serve`` under the page, start it again on the same port and data folder."""
    _hf_repo(olah, repo_id, 2 * MB)
    rule = hf_front.throttle(200_000, repo_id=repo_id, path="model.safetensors")
    port = free_port()
    args = ["--port", str(port), "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "hf"),
            "--hf-endpoint", hf_front.endpoint, "--log-level", "info"]
    url = f"http://127.0.0.1:{port}"

    def serve(name: str) -> Any:
        proc = serve_process(args, tmp_path / f"{name}.log")
        wait_for(lambda: _answers(url), timeout=30)
        return proc

    proc = serve("first")
    try:
        page.goto(url + "/")
        card = _start(page, "huggingface", repo_id)
        wait_for(lambda: float(card.locator(".bar").get_attribute("aria-valuenow") or 0) > 5, timeout=30)
        _stop(proc)
        banner = page.locator("#lost")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Lost the connection to the service")
        expect(page.locator("#conn")).to_have_text("Reconnecting…")
        expect(card).to_have_class(_has("stale"))
        expect(card.locator(".stale-tag")).to_be_visible()
        expect(card.locator(".buttons button").first).to_be_disabled()
        # nothing the browser says on its own ("Failed to fetch")
        page.fill("#model", repo_id)
        page.click("#check")
        expect(page.locator("#form-error")).to_contain_text("The service is not answering")
        expect(page.locator("#form-error")).not_to_contain_text("Failed to fetch")
        shot(page, "12-connection-lost")

        hf_front.remove_rule(rule)
        proc = serve("second")
        expect(banner).to_be_hidden(timeout=30_000)
        expect(page.locator("#conn")).to_have_text("Connected")
        expect(card).not_to_have_class(_has("stale"))
        # the job came back with the service (its journal) and finishes
        expect(card).to_have_attribute("data-state", "complete", timeout=60_000)
        expect(page.locator("#jobs .job")).to_have_count(1)
        shot(page, "13-connection-back")
    finally:
        _stop(proc)


def test_phone_layout(browser, service, olah, hf_front, ollama_emulator, repo_id):  # noqa: F811
    gguf = repo_id + "-a-rather-long-repository-name-GGUF"
    _gguf_repo(olah, gguf)
    ollama_emulator.add_model("phone:1b", [3 * MB, 100], bytes_per_sec=400_000)
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(20_000)

    def no_sideways_scroll() -> None:
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"

    try:
        page.goto(service.url + "/")
        page.select_option("#provider", "gguf")
        page.fill("#model", gguf)
        page.tap("#check")
        expect(page.locator("#quants .quant")).to_have_count(3)
        no_sideways_scroll()
        for selector in ("#check", "#start"):
            box = page.locator(selector).bounding_box()
            assert box is not None and box["height"] >= 40 and box["width"] > 300, (selector, box)
        shot(page, "14-phone-plan")
        page.select_option("#provider", "ollama")
        page.fill("#model", "phone:1b")
        page.tap("#start")
        card = _job(page, "phone:1b")
        expect(card.locator(".stats")).to_contain_text("left")
        card.locator(".files-box summary").tap()
        expect(card.locator(".file-row").first).to_contain_text("MB")  # Ollama announces layers as it goes
        no_sideways_scroll()
        for name in ("Pause", "Cancel"):
            box = card.get_by_role("button", name=name).bounding_box()
            assert box is not None and box["height"] >= 36, (name, box)
        shot(page, "15-phone-downloading")
        card.get_by_role("button", name="Pause").tap()
        expect(card).to_have_attribute("data-state", "paused")
        no_sideways_scroll()
        shot(page, "16-phone-paused")
        card.get_by_role("button", name="Resume").tap()
        expect(card).to_have_attribute("data-state", "running")
        card.get_by_role("button", name="Cancel").tap()
        expect(card).to_have_attribute("data-state", "cancelled")
    finally:
        context.close()


def test_overview_screenshot_for_the_readme(page, start_service, olah, hf_front, ollama_emulator):
    """The page as the README shows it: a plan with its picker, a running, a paused and a finished job.

    ``MODELPULL_UPDATE_DOCS=1`` also writes it to docs/page.png.
    """
    cache = Path(tempfile.mkdtemp(prefix="hub-"))  # a short path, as a person's cache has
    service = start_service(hf_endpoint=hf_front.endpoint, ollama_url=ollama_emulator.base_url,
                            hf_cache_dir=str(cache))
    gguf = "bartowski-like/Tiny-Chat-GGUF"
    _gguf_repo(olah, gguf)
    _hf_repo(olah, "demo-org/Tiny-Chat-1B", 2 * MB)
    _hf_repo(olah, "demo-org/Tiny-Chat-3B", 6 * MB)
    hf_front.throttle(150_000, repo_id="demo-org/Tiny-Chat-1B", path="model.safetensors")
    hf_front.throttle(400_000, repo_id="demo-org/Tiny-Chat-3B", path="model.safetensors")
    page.goto(service.url + "/")
    done = _start(page, "gguf", gguf + ":Q8_0")
    expect(done).to_have_attribute("data-state", "complete")
    paused = _start(page, "huggingface", "demo-org/Tiny-Chat-1B")
    wait_for(lambda: float(paused.locator(".bar").get_attribute("aria-valuenow") or 0) > 15, timeout=30)
    paused.get_by_role("button", name="Pause").click()
    expect(paused).to_have_attribute("data-state", "paused")
    running = _start(page, "huggingface", "demo-org/Tiny-Chat-3B")
    expect(running.locator(".stats")).to_contain_text("left", timeout=30_000)
    running.locator(".files-box summary").click()
    page.select_option("#provider", "gguf")
    page.fill("#model", gguf)
    page.click("#check")
    expect(page.locator("#quants .quant")).to_have_count(3)
    expect(page.locator("#models .model", has_text=gguf)).to_have_count(1)
    path = shot(page, "overview")
    if os.environ.get("MODELPULL_UPDATE_DOCS"):
        shutil.copyfile(path, DOCS / "page.png")
    running.get_by_role("button", name="Cancel").click()
    expect(running).to_have_attribute("data-state", "cancelled")
    service.stop()
    shutil.rmtree(cache, ignore_errors=True)


# -- helpers ------------------------------------------------------------------------------
def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/api/models/providers", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except Exception:  # noqa: BLE001 - a stuck service is killed
            proc.kill()
            proc.wait(5)


def _has(name: str) -> Any:
    import re

    return re.compile(rf"(^|\s){name}(\s|$)")


def test_time_to_wait_is_never_absurd_on_the_page(page, service, olah, hf_front, repo_id):
    """The first ETA the page shows is close to the truth (the library smooths it)."""
    _hf_repo(olah, repo_id, 3 * MB)
    hf_front.throttle(500_000, repo_id=repo_id, path="model.safetensors")
    page.goto(service.url + "/")
    card = _start(page, "huggingface", repo_id)
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    while card.get_attribute("data-state") == "running" and time.monotonic() - started < 30:
        text = card.locator(".stats").text_content() or ""
        if "left" in text:
            seen.append((time.monotonic() - started, text))
        time.sleep(0.1)
    expect(card).to_have_attribute("data-state", "complete")
    total = time.monotonic() - started
    assert seen, "no time left was ever shown"
    for at, text in seen:
        left = _seconds_left(text)
        assert left <= 3 * (total - at) + 3, f"{text!r} shown at {at:.1f}s; the download took {total:.1f}s"


def _seconds_left(text: str) -> float:
    import re

    match = re.search(r"(?:(\d+)m)?(\d+)s left", text)
    assert match, text
    return int(match.group(1) or 0) * 60 + int(match.group(2))


def _leave_partial(repo_id: str, endpoint: str, cache: Path, at_least: int) -> None:
    """Start a download with the library and leave it half-way: the partial stays on disk."""
    import asyncio

    from modelpull import download_model

    async def run() -> None:
        events = download_model("huggingface", repo_id, base_url=endpoint, cache_dir=str(cache))
        async for event in events:
            if (event.downloaded_bytes or 0) >= at_least and event.status.value == "downloading":
                break
        await events.aclose()  # type: ignore[attr-defined]

    # Playwright's sync API runs a loop in this thread: the download gets a thread of its own.
    worker = threading.Thread(target=asyncio.run, args=(run(),))
    worker.start()
    worker.join(60)


def test_unfinished_downloads_are_listed_with_resume_and_discard(page, service, olah, hf_front, repo_id):
    kept, dropped = repo_id + "-kept", repo_id + "-dropped"
    for name in (kept, dropped):
        _hf_repo(olah, name, 2 * MB)
    rules = [hf_front.throttle(400_000, repo_id=r, path="model.safetensors") for r in (kept, dropped)]
    cache = service.dirs["hf"]
    for name in (kept, dropped):
        _leave_partial(name, hf_front.endpoint, cache, 500_000)
    for rule in rules:
        hf_front.remove_rule(rule)
    page.goto(service.url + "/")
    box = page.locator("#partials-box")
    expect(box).to_be_visible()
    cards = page.locator("#partials .partial")
    expect(cards).to_have_count(2)
    first = cards.filter(has=page.locator(".name", has_text=kept))
    expect(first).to_contain_text("of 2.0 MB on disk")
    expect(first).to_contain_text("Hugging Face")
    expect(first).to_contain_text("last activity just now")
    expect(first.get_by_role("button", name="Resume download")).to_be_visible()
    expect(first.get_by_role("button", name="Discard unfinished data")).to_be_visible()
    shot(page, "17-unfinished-downloads")

    # discard one: its partial file goes, the card goes
    other = cards.filter(has=page.locator(".name", has_text=dropped))
    page.once("dialog", lambda dialog: dialog.accept())
    other.get_by_role("button", name="Discard unfinished data").click()
    expect(cards).to_have_count(1)
    assert not list((cache / f"models--{dropped.replace('/', '--')}").rglob("*.incomplete"))

    # resume the other: a job that fetches only the rest
    hf_front.clear_log()
    first.get_by_role("button", name="Resume download").click()
    job = _job(page, kept)
    expect(job).to_have_attribute("data-state", "complete")
    assert hf_front.file_bytes_sent(kept, "model.safetensors") < 2 * MB - 400_000
    expect(box).to_be_hidden()
    expect(page.locator("#models .model", has=page.locator(".name", has_text=kept))).to_have_count(1)
