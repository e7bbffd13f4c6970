"""Every declared source shows up everywhere, so a forgotten declaration fails here, not for a user.

The registry (``modelpull.providers.SOURCES``) is the only list of sources.
This walks it and checks that each one is offered by ``GET /providers``, named
in the CLI's help, listed on the page, listable with ``modelpull list`` and
``GET /models``, and known to the service's delete guard (a model being
downloaded cannot be deleted under the download).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpull.providers import SOURCES, Source

from .conftest import wait_for

SOURCE_NAMES = [source.name for source in SOURCES]


class SilentServer:
    """Accepts connections and never answers: a download from it stays running."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self._stop = True
        self._sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelpull.cli", *args], capture_output=True, text=True, timeout=60,
    )


def test_every_source_is_offered_by_the_service(start_service):
    service = start_service()
    with service.client() as client:
        offered = client.get("/providers").json()["providers"]
    assert [p["name"] for p in offered] == [s.name for s in SOURCES.by_rank()]
    for item in offered:
        source = SOURCES.get(item["name"])
        assert item["title"] == source.title and item["summary"] == source.summary
        assert item["example"] == source.example and item["aliases"] == list(source.aliases)
        declared = {o.name for o in source.options if not o.is_path}
        assert {o["name"] for o in item["options"]} == declared, item["name"]
        assert all(o["help"] and o["type"] for o in item["options"])


def test_every_source_is_named_in_the_cli_help():
    top, pull = _cli("--help"), _cli("pull", "--help")
    listing, removal = _cli("list", "--help"), _cli("rm", "--help")
    for out in (top, pull, listing, removal):
        assert out.returncode == 0, out.stderr
    flat = " ".join(pull.stdout.split())
    for source in SOURCES:
        assert source.name in top.stdout and source.name in flat
        assert f"modelpull pull {source.name} {source.example}" in flat
        if source.place is not None:
            assert source.name in " ".join(listing.stdout.split())
            assert source.name in " ".join(removal.stdout.split())


def test_every_source_is_on_the_page(start_service):
    from playwright.sync_api import expect, sync_playwright

    from .test_browser import CHROMIUM, CHROMIUM_ARGS

    service = start_service()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(service.url + "/")
            options = page.locator("#provider option")
            expect(options).to_have_count(len(SOURCES))
            assert [options.nth(i).get_attribute("value") for i in range(len(SOURCES))] == [
                s.name for s in SOURCES.by_rank()
            ]
            for source in SOURCES:
                page.select_option("#provider", source.name)
                expect(page.locator("#model")).to_have_attribute("placeholder", source.example)
        finally:
            browser.close()


@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_every_source_is_listed(name, start_service, tmp_path: Path):
    source = SOURCES.get(name)
    assert source.place is not None, f"{name} declares no place: its models cannot be listed or deleted"
    args: list[str] = []
    for location in source.place.locations:
        args += [location.flag, "http://127.0.0.1:9" if location.is_url else str(tmp_path / location.name)]
    out = _cli("list", name, "--json", *args)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["models"] == []
    service = start_service()
    with service.client() as client:
        answer = client.get("/models", params={"provider": name})
    assert answer.status_code in (200, 502), answer.text  # 502: a server place with no server
    if answer.status_code == 200:
        assert isinstance(answer.json()["models"], list)


def _hanging_request(source: Source, silent: SilentServer) -> tuple[dict[str, object], str]:
    """A download of ``source`` that waits forever on the silent server, and the model it writes."""
    if source.base_url_help is not None:
        return {"provider": source.name, "model": source.example, "base_url": silent.url,
                "options": {"insecure": True} if source.option("insecure") else {}}, source.example
    model = f"{silent.url}/{source.example.rsplit('/', 1)[-1]}"
    return {"provider": source.name, "model": model}, model


@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_the_delete_guard_knows_every_source(name, start_service, silent):
    source = SOURCES.get(name)
    service = start_service()
    body, model = _hanging_request(source, silent)
    with service.client() as client:
        started = client.post("/downloads", json=body)
        assert started.status_code == 201, started.text
        job = started.json()["id"]
        wait_for(lambda: client.get(f"/downloads/{job}").json()["state"] == "running")
        refused = client.delete(f"/models/{name}/{model}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error_code"] == "download_running"
        assert client.get(f"/downloads/{job}").json()["state"] == "running"
        client.delete(f"/downloads/{job}")
        wait_for(lambda: client.get(f"/downloads/{job}").json()["state"] == "cancelled")


def test_an_option_that_moves_a_download_moves_its_folder_and_its_delete_guard(start_service, silent, tmp_path):
    """``modelscope`` with ``lmstudio=true`` writes into LM Studio's folder: the service gives it
    LM Studio's folder (not the ModelScope cache it would refuse beside lmstudio=true), and deleting
    that LM Studio model while it downloads is refused."""
    service = start_service(modelscope_cache_dir=str(tmp_path / "ms-cache"))
    model = "Qwen/Qwen2.5-0.5B-Instruct"
    body = {"provider": "ms", "model": model, "base_url": silent.url, "options": {"lmstudio": "true"}}
    with service.client() as client:
        started = client.post("/downloads", json=body)
        assert started.status_code == 201, started.text
        job = client.get(f"/downloads/{started.json()['id']}").json()
        assert job["options"].get("models_dir") == str(service.dirs["lmstudio"]), job["options"]
        assert "cache_dir" not in job["options"], job["options"]
        wait_for(lambda: client.get(f"/downloads/{job['id']}").json()["state"] == "running")
        refused = client.delete(f"/models/lmstudio/{model}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error_code"] == "download_running"
        # the ModelScope cache is not where it lands: deleting there is not guarded by it
        other = client.delete(f"/models/modelscope/{model}")
        assert other.status_code != 409, other.text
        client.delete(f"/downloads/{job['id']}")
        wait_for(lambda: client.get(f"/downloads/{job['id']}").json()["state"] == "cancelled")
