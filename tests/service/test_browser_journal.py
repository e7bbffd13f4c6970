"""The page after ``modelpull serve`` was killed and started again: the restored jobs are there.

Debian's chromium driven by Playwright (fixtures and helpers from test_browser).
The page lists every job from ``GET /events``: the finished job, the running
one (resumed by the service itself) and the one that needs its token again
(state ``paused``, with the service's message); the token is typed into that
job's card and the job resumes. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import signal
import time

import httpx
from playwright.sync_api import expect

from .conftest import wait_for, wait_job
from .test_browser import _job, browser, page, shot  # noqa: F401  (fixtures)
from .test_journal import _records, _serve, _stop
from .test_pause_resume import _downloaded, _make_repo, post

MB = 1_000_000


def test_the_page_shows_the_jobs_a_killed_service_restored(page, tmp_path, olah, hf_front, ollama_emulator, repo_id):  # noqa: F811
    token = "hf_BROWSER" + "restored9Qz"
    running, private = repo_id + "-run", repo_id + "-tok"
    _make_repo(olah, running, 2 * MB)
    _make_repo(olah, private, 1 * MB)
    hf_front.require_token(token, repo_id=private)
    rules = [hf_front.throttle(250_000, repo_id=r, path="model.safetensors") for r in (running, private)]
    ollama_emulator.add_model("restored-done:1b", [30_000], bytes_per_sec=10 * MB)
    data_dir = tmp_path / "data"
    ollama = ("--ollama-host", ollama_emulator.base_url)

    proc, api, _ = _serve(tmp_path, "serve-1", data_dir, hf_front, *ollama)
    try:
        with httpx.Client(base_url=api, timeout=30) as client:
            done_id = post(client, "/downloads", {"provider": "ollama", "model": "restored-done:1b"}).json()["id"]
            assert wait_job(client, done_id)["state"] == "complete"
            run_id = post(client, "/downloads", {"provider": "huggingface", "model": running}).json()["id"]
            tok_id = post(client, "/downloads", {"provider": "huggingface", "model": private, "token": token}).json()["id"]
            wait_for(lambda: _downloaded(client, run_id) > 300_000 and _downloaded(client, tok_id) > 100_000,
                     timeout=60)
            wait_for(lambda: all((_records(data_dir).get(i, {}).get("last_event") or {}).get("status") == "downloading"
                                 for i in (run_id, tok_id)), timeout=10)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    hf_front.wait_idle()
    hf_front.remove_rule(rules[1])

    proc, api, _ = _serve(tmp_path, "serve-2", data_dir, hf_front, *ollama)
    try:
        page.goto(api.removesuffix("/api/models") + "/")
        done, run, tok = _job(page, "restored-done:1b"), _job(page, running), _job(page, private)
        expect(done).to_have_attribute("data-state", "complete")
        expect(done.locator(".badge")).to_have_text("complete")
        # the running job resumed by itself, its bar not back at zero
        expect(run).to_have_attribute("data-state", "running")
        assert float(run.locator(".bar").get_attribute("aria-valuenow") or 0) > 0
        # the job with a token waits for it, and says so
        expect(tok).to_have_attribute("data-state", "paused")
        expect(tok.locator(".badge")).to_have_text("paused")
        expect(tok.locator(".msg")).to_contain_text("needs its token again: resume it with the token")
        expect(page.locator("#jobs .job")).to_have_count(3)
        shot(page, "7-restored-after-kill")

        hf_front.remove_rule(rules[0])
        tok.get_by_label(f"Token for {private}").fill(token)
        tok.get_by_role("button", name="Resume with this token").click()
        expect(tok).to_have_attribute("data-state", "complete", timeout=60_000)
        expect(run).to_have_attribute("data-state", "complete", timeout=60_000)
        expect(run.locator(".stats")).to_contain_text("2.0 MB / 2.0 MB")
        time.sleep(0.2)
        shot(page, "8-restored-jobs-finished")
        with httpx.Client(base_url=api, timeout=30) as client:
            view = client.get(f"/downloads/{tok_id}").json()
        assert view["runs"] == 2 and view["has_token"] is True and view["needs_token"] is False
    finally:
        _stop(proc)
    assert token.encode() not in b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
