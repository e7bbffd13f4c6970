"""The ``url`` source against a server that ignores Range, and the other ways a plain link misbehaves.

The server (tests/servers/plain_http.py) answers every GET with 200 and the
whole file; it can refuse HEAD, send no length, stall, fail and redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from modelpull import DownloadStatus, download_model
from tests.core.test_hf_contract import assert_contract
from tests.servers.plain_http import PlainFileServer
from tests.url.conftest import BIG, MB, TOKEN, collect, leftovers, payload, sha256

DATA = payload(BIG, "plain")
DATA_SHA = sha256(DATA)


async def test_one_stream_when_the_server_ignores_range(plain: PlainFileServer, tmp_path: Path) -> None:
    url = plain.add("/m/model.gguf", DATA)
    plain.bytes_per_sec = 4 * MB
    # parts of 1 MB, 16 connections at once: a server that honoured Range would get 6 requests
    events, _ = await collect(url, sha256=DATA_SHA, local_dir=str(tmp_path), policy="ollama",
                              part_size=MB)
    assert_contract(events, BIG)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    gets = plain.requests("/m/model.gguf", method="GET")
    assert len(gets) == 1 and gets[0].status == 200 and gets[0].bytes_sent == BIG
    assert gets[0].range == "bytes=0-999999"  # asked for a part, got the whole file
    assert (tmp_path / "model.gguf").read_bytes() == DATA and leftovers(tmp_path) == []


async def test_resume_against_a_server_that_ignores_range(plain: PlainFileServer, tmp_path: Path) -> None:
    url = plain.add("/m/model.gguf", DATA)
    plain.bytes_per_sec = 2 * MB
    async with contextlib.aclosing(download_model("url", url, sha256=DATA_SHA, local_dir=str(tmp_path))) as gen:
        async for event in gen:
            if event.status is DownloadStatus.DOWNLOADING and event.downloaded_bytes >= 2 * MB:
                break
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not all(r.done for r in plain.log):
        await asyncio.sleep(0.05)
    assert any(r.client_disconnected for r in plain.requests("/m/model.gguf", method="GET"))
    plain.clear_log()
    plain.bytes_per_sec = None
    events, _ = await collect(url, sha256=DATA_SHA, local_dir=str(tmp_path))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert events[0].downloaded_bytes >= MB  # what is on disk counts, and is kept
    (get,) = plain.requests("/m/model.gguf", method="GET")
    assert get.range and not get.range.startswith("bytes=0-")  # asked for the rest ...
    assert get.status == 200 and get.bytes_sent == BIG  # ... got it all: the start is skipped
    assert (tmp_path / "model.gguf").read_bytes() == DATA


async def test_without_head_the_size_comes_from_the_first_response(
    plain: PlainFileServer, tmp_path: Path
) -> None:
    url = plain.add("/signed/model.gguf", DATA)
    plain.head_allowed = False  # like a URL signed for GET only
    plain.bytes_per_sec = 4 * MB
    events, _ = await collect(url + f"#sha256={DATA_SHA}", local_dir=str(tmp_path))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert events[0].total_bytes == BIG
    methods = [(r.method, r.range, r.status) for r in plain.requests("/signed/model.gguf")]
    assert methods[:2] == [("HEAD", None, 405), ("GET", "bytes=0-0", 200)]
    probe = plain.requests("/signed/model.gguf", method="GET")[0]
    assert probe.bytes_sent < BIG  # the probe's connection was closed, not read to the end
    assert (tmp_path / "model.gguf").read_bytes() == DATA


async def test_a_file_of_unknown_size_is_refused(plain: PlainFileServer, tmp_path: Path) -> None:
    url = plain.add("/stream/model.gguf", DATA, length=False)  # chunked, no Content-Length
    events, _ = await collect(url, local_dir=str(tmp_path))
    assert events[-1].error_code == "incompatible_model", events[-1].message
    assert "how large" in events[-1].message
    assert not list(tmp_path.rglob("*.gguf"))


async def test_a_stalled_connection_is_retried(plain: PlainFileServer, tmp_path: Path) -> None:
    url = plain.add("/m/model.gguf", DATA)
    plain.stall(after_bytes=MB, seconds=5)
    started = time.monotonic()
    events, _ = await collect(url, sha256=DATA_SHA, local_dir=str(tmp_path), stall_timeout=0.5)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert time.monotonic() - started < 4  # did not wait the stall out
    gets = plain.requests("/m/model.gguf", method="GET")
    assert len(gets) == 2 and gets[1].range and not gets[1].range.startswith("bytes=0-")
    assert (tmp_path / "model.gguf").read_bytes() == DATA


@pytest.mark.parametrize(
    ("setup", "code", "words"),
    [
        (lambda s: None, "not_found", "does not exist"),
        (lambda s: s.fail(503, times=20), "server_error", "503"),
        (lambda s: setattr(s, "token", "a-token-we-do-not-have"), "auth_required", "pass a token"),
    ],
)
async def test_errors_have_stable_codes(plain: PlainFileServer, tmp_path: Path, setup, code, words) -> None:
    plain.add("/m/model.gguf", DATA)
    setup(plain)
    url = plain.url + ("/m/absent.gguf" if code == "not_found" else "/m/model.gguf")
    events, _ = await collect(url, local_dir=str(tmp_path), max_retries=1)
    assert [e.is_terminal for e in events].count(True) == 1
    assert events[-1].error_code == code, events[-1].message
    assert words in events[-1].message
    assert not list(tmp_path.rglob("*.gguf"))


async def test_server_errors_while_fetching_are_retried_then_reported(
    plain: PlainFileServer, tmp_path: Path
) -> None:
    url = plain.add("/m/model.gguf", DATA)
    events, _ = await collect(url, local_dir=str(tmp_path), dry_run=True)
    assert events[-1].status is DownloadStatus.COMPLETE and "Dry run" in events[-1].message
    assert plain.requests("/m/model.gguf", method="GET") == []
    plain.clear_log()
    plain.fail(500, method="HEAD")
    plain.fail(500, method="GET")
    events, _ = await collect(url, sha256=DATA_SHA, local_dir=str(tmp_path))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    statuses = [r.status for r in plain.requests("/m/model.gguf")]
    assert statuses[:2] == [500, 200] and statuses.count(500) == 2


@pytest.mark.parametrize(
    "disposition",
    [
        'attachment; filename="/etc/passwd"',
        'attachment; filename="..\\\\evil.gguf"',
        "attachment; filename*=UTF-8''..%2F..%2Fevil.gguf",
        "attachment; filename*=UTF-8''evil%01name.gguf",
        'attachment; filename=".bashrc"',
        'attachment; filename=".."',
        'attachment; filename="' + "x" * 250 + '.gguf"',
    ],
)
async def test_hostile_names_are_unsafe_source(plain: PlainFileServer, tmp_path: Path, disposition: str) -> None:
    folder = tmp_path / "a" / "files"
    url = plain.add("/m/model.gguf", DATA, disposition=disposition)
    events, _ = await collect(url, local_dir=str(folder))
    assert events[-1].error_code == "unsafe_source", events[-1].message
    assert "refusing" in events[-1].message
    assert plain.requests("/m/model.gguf", method="GET") == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("path", ["/files/a%5Cb.gguf", "/files/x%0Ay.gguf", "/files/", "/files/.hidden"])
async def test_a_hostile_name_in_the_url_path_is_unsafe_source(
    plain: PlainFileServer, tmp_path: Path, path: str
) -> None:
    from urllib.parse import unquote

    plain.add(unquote(path), DATA)
    events, _ = await collect(plain.url + path, local_dir=str(tmp_path))
    assert events[-1].error_code == "unsafe_source", events[-1].message
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


async def test_a_redirect_to_another_host_carries_no_token(
    plain: PlainFileServer, other: PlainFileServer, tmp_path: Path
) -> None:
    plain.token = TOKEN
    target = other.add("/elsewhere/model.gguf", DATA)
    url = plain.redirect("/r/model.gguf", target)
    events, _ = await collect(url, token=TOKEN, sha256=DATA_SHA, local_dir=str(tmp_path))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert all(r.auth_present for r in plain.log)  # the token went to its own host ...
    assert other.log and not any(r.auth_present for r in other.log)  # ... and nowhere else
    assert Path(events[-1].path) == tmp_path / "model.gguf"  # named by the URL asked for
