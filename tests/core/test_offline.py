"""Offline and cache-first: a model complete on disk never needs the source.

- ``HF_HUB_OFFLINE=1`` (read in a fresh process, as huggingface_hub reads it)
  and ``offline=True`` / ``--offline``: no network at all; a complete copy is
  COMPLETE, anything missing is one ERROR saying offline mode is on and what
  is missing.
- Online, when the source cannot be used (closed port, 503 forever, a server
  that never answers) and the revision is complete on disk: COMPLETE from the
  store, naming the failure; an incomplete copy still gets the error.
- Errors that are answers (not found) stay errors; a pinned commit on disk
  needs no network at all.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpull import DownloadStatus, download_model

CLOSED = "http://127.0.0.1:9"


@pytest.fixture
def repo(olah):
    repo_id = f"org/offline-{uuid.uuid4().hex[:8]}"
    files = {"config.json": b'{"model_type": "llama"}\n', "model.safetensors": os.urandom(200_000)}
    olah.make_repo(repo_id, files)
    return repo_id, files


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hf-cache"


async def collect(*args, **kwargs):
    return [event async for event in download_model(*args, **kwargs)]


def assert_served_from_disk(events, path_suffix: str | None = None) -> None:
    assert [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.COMPLETE], events
    done = events[-1]
    assert done.percent == 100.0 and done.downloaded_bytes == done.total_bytes > 0
    if path_suffix:
        assert done.path.endswith(path_suffix), done.path


@pytest.fixture
def downloaded(hf_front, repo, cache):
    """The repo complete in the cache (its snapshot path), downloaded online once."""

    async def run():
        return await collect("hf", repo[0], base_url=hf_front.endpoint, cache_dir=str(cache))

    import asyncio

    events = asyncio.run(run())
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    return events[-1].path


class SilentServer:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self._held.append(self._sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# -- offline mode ------------------------------------------------------------------
def test_hf_hub_offline_in_a_fresh_process_serves_the_cached_snapshot(hf_front, repo, cache, downloaded):
    hf_front.clear_log()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "modelpull.cli", "pull", "hf", repo[0], "--cache-dir", str(cache),
         "--base-url", hf_front.endpoint, "--json"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["status"] == "complete" and last["path"] == downloaded
    assert "local store" in last["message"] and "offline" in last["message"]
    assert hf_front.log == [], "offline mode must not touch the network"


async def test_offline_option_serves_the_copy_and_asks_nothing(hf_front, repo, cache, downloaded):
    hf_front.clear_log()
    events = await collect("hf", repo[0], base_url=hf_front.endpoint, cache_dir=str(cache), offline=True)
    assert_served_from_disk(events)
    assert events[-1].path == downloaded
    assert hf_front.log == []


async def test_offline_with_nothing_on_disk_is_one_error_saying_so(hf_front, repo, cache):
    events = await collect("hf", repo[0], base_url=hf_front.endpoint, cache_dir=str(cache), offline=True)
    assert events[-1].status is DownloadStatus.ERROR and events[-1].error_code == "offline"
    assert sum(e.is_terminal for e in events) == 1
    assert "offline mode is on" in events[-1].message and "nothing of it" in events[-1].message
    assert hf_front.log == []


async def test_offline_with_a_partial_copy_names_what_is_missing(hf_front, repo, cache):
    repo_id, _ = repo
    first = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache),
                          allow_patterns=["*.json"])
    assert first[-1].status is DownloadStatus.COMPLETE
    hf_front.clear_log()
    events = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache), offline=True)
    assert events[-1].error_code == "offline", events[-1].message
    assert "model.safetensors" in events[-1].message and "1 file" in events[-1].message
    assert hf_front.log == []
    # what is there still serves a request for it
    only_config = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache),
                                offline=True, allow_patterns=["*.json"])
    assert_served_from_disk(only_config)


async def test_offline_local_dir(hf_front, repo, tmp_path):
    target = tmp_path / "local"
    first = await collect("hf", repo[0], base_url=hf_front.endpoint, local_dir=str(target))
    assert first[-1].status is DownloadStatus.COMPLETE
    events = await collect("hf", repo[0], base_url=CLOSED, local_dir=str(target), offline=True)
    assert_served_from_disk(events)
    assert events[-1].path == str(target)


# -- cache first when the source fails ------------------------------------------------
@pytest.mark.parametrize("failure", ["closed port", "503 forever", "never answers"])
async def test_a_failing_source_falls_back_to_the_complete_copy(failure, hf_front, repo, cache, downloaded,
                                                                 silent):
    base_url = hf_front.endpoint
    if failure == "closed port":
        base_url = CLOSED
    elif failure == "503 forever":
        hf_front.server_error(503, repo_id=repo[0], on="api")
    else:
        base_url = silent.url
    events = await collect("hf", repo[0], base_url=base_url, cache_dir=str(cache), stall_timeout=1,
                           connect_timeout=2)
    assert_served_from_disk(events)
    done = events[-1]
    assert done.path == downloaded
    assert "could not be used" in done.message and "downloaded on" in done.message
    expected = {"closed port": "127.0.0.1:9", "503 forever": "503", "never answers": "did not answer"}
    assert expected[failure] in done.message, done.message


async def test_a_failing_source_with_an_incomplete_copy_is_still_an_error(hf_front, repo, cache):
    repo_id, _ = repo
    first = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache),
                          allow_patterns=["*.json"])
    assert first[-1].status is DownloadStatus.COMPLETE
    events = await collect("hf", repo_id, base_url=CLOSED, cache_dir=str(cache))
    assert events[-1].error_code == "connection_failed"
    assert "again" in events[-1].message  # resumable


async def test_answers_stay_errors_even_with_a_copy_on_disk(hf_front, repo, cache, downloaded):
    hf_front.repo_not_found(repo[0])
    events = await collect("hf", repo[0], base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[-1].error_code == "not_found"


async def test_a_pinned_commit_on_disk_needs_no_network(hf_front, repo, cache, downloaded):
    commit = Path(downloaded).name
    hf_front.clear_log()
    events = await collect("hf", repo[0], base_url=hf_front.endpoint, cache_dir=str(cache), revision=commit)
    assert_served_from_disk(events)
    assert "pinned" in events[-1].message
    assert hf_front.log == []


async def test_a_failure_mid_fetch_falls_back_to_the_previous_complete_copy(hf_front, olah, repo, cache,
                                                                              downloaded):
    repo_id, files = repo
    olah.make_repo(repo_id, {**files, "model.safetensors": os.urandom(300_000)})  # a new commit on main
    hf_front.server_error(503, repo_id=repo_id, on="files")
    events = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache), max_retries=1)
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert done.path == downloaded and "could not be used" in done.message
