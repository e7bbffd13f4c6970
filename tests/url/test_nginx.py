"""The ``url`` source against Debian's nginx: real Range, Content-Disposition from its config.

nginx's access log is the witness: which ranges were asked for, on how many
connections, whether a request completed or the client went away, whether an
``Authorization`` header came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelpull import DownloadStatus, download_model, plan_download
from modelpull.inventory import delete_model, list_models, list_partials
from tests.core.test_hf_contract import assert_contract
from tests.servers.nginx import Nginx
from tests.servers.plain_http import PlainFileServer

from tests.url.conftest import FILES, MB, TOKEN, collect, leftovers, sha256

BIG = len(FILES["model.gguf"])
BIG_SHA = sha256(FILES["model.gguf"])


def saved_bytes(folder: Path) -> int:
    """Bytes the part state of the partial in ``folder`` says are on disk."""
    total = 0
    for state in folder.rglob("*.parts.json"):
        try:
            total += sum(done - start for start, _, done in json.loads(state.read_text())["parts"])
        except (OSError, ValueError):
            continue
    return total


def started_at(range_header: str | None) -> int:
    assert range_header and range_header.startswith("bytes="), range_header
    return int(range_header[len("bytes="):].split("-")[0])


async def test_parallel_ranged_parts_follow_the_progress_contract(nginx: Nginx, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    url = f"{nginx.url}/slow/model.gguf"  # 500 kB/s per request: 1 s a part
    events, stamps = await collect(url, sha256=BIG_SHA, local_dir=str(folder), part_size=MB,
                                   max_connections=3)
    assert_contract(events, BIG)
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert done.percent == 100.0 and done.downloaded_bytes == done.total_bytes == BIG
    assert events[0].total_bytes == BIG  # the size from HEAD, before the first byte
    downloading = [e for e in events if e.status is DownloadStatus.DOWNLOADING]
    assert len(downloading) >= 5 and any(0 < e.percent < 100 for e in downloading)
    assert any(e.speed_bps for e in downloading)
    statuses = [e.status for e in events]
    assert DownloadStatus.VERIFYING in statuses
    assert statuses.index(DownloadStatus.VERIFYING) > max(
        i for i, s in enumerate(statuses) if s is DownloadStatus.DOWNLOADING)
    for i in range(len(stamps)):  # at most ~10 events a second
        assert len([t for t in stamps if stamps[i] <= t < stamps[i] + 1.0]) <= 12
    assert Path(done.path) == folder / "model.gguf"
    assert (folder / "model.gguf").read_bytes() == FILES["model.gguf"]
    assert leftovers(folder) == []
    # nginx saw ranged requests answered 206, on several connections at once, covering the file once
    gets = nginx.requests("/slow/model.gguf", method="GET")
    assert len(gets) >= 2 and all(r.status == 206 and r.completed for r in gets)
    assert len({r.connection for r in gets}) >= 2
    assert sorted(started_at(r.range) for r in gets)[0] == 0
    assert sum(r.bytes_sent for r in gets) == BIG
    assert [r.method for r in nginx.requests("/slow/model.gguf")][0] == "HEAD"


async def test_the_name_comes_from_content_disposition(nginx: Nginx, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    events, _ = await collect(f"{nginx.url}/named/small.gguf#sha256={sha256(FILES['small.gguf'])}",
                              local_dir=str(folder))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert Path(events[-1].path) == folder / "renamed.gguf"  # nginx's add_header names it
    assert (folder / "renamed.gguf").read_bytes() == FILES["small.gguf"]
    assert not (folder / "small.gguf").exists()
    assert [m.name for m in list_models("url", url_dir=str(folder))] == ["renamed.gguf"]


async def test_a_hostile_content_disposition_is_unsafe_source(nginx: Nginx, tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "files"
    before = set(tmp_path.rglob("*"))
    events, _ = await collect(f"{nginx.url}/hostile/small.gguf", local_dir=str(folder))
    assert events[-1].error_code == "unsafe_source", events[-1].message
    assert "../../escaped.gguf" in events[-1].message and "refusing" in events[-1].message
    assert [r.method for r in nginx.requests("/hostile/")] == ["HEAD"]  # no byte of it moved
    assert set(tmp_path.rglob("*")) == before
    assert not list(tmp_path.rglob("escaped.gguf"))


async def test_a_wrong_sha256_is_checksum_mismatch_and_nothing_is_published(
    nginx: Nginx, tmp_path: Path
) -> None:
    folder = tmp_path / "files"
    wrong = sha256(b"something else")
    events, _ = await collect(f"{nginx.url}/files/model.gguf", sha256=wrong, local_dir=str(folder))
    assert events[-1].status is DownloadStatus.ERROR
    assert events[-1].error_code == "checksum_mismatch", events[-1].message
    assert "model.gguf" in events[-1].message and "nothing was kept" in events[-1].message
    assert not (folder / "model.gguf").exists()
    assert leftovers(folder) == []
    assert list_models("url", url_dir=str(folder)) == []
    # the right one, through the fragment, is published
    events, _ = await collect(f"{nginx.url}/files/model.gguf#sha256={BIG_SHA}", local_dir=str(folder))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert (folder / "model.gguf").read_bytes() == FILES["model.gguf"]


async def test_without_a_sha256_nothing_is_verified_and_the_sha256_is_reported(
    nginx: Nginx, data_home: Path
) -> None:
    url = f"{nginx.url}/files/small.gguf"
    events, _ = await collect(url)  # no local_dir: the default folder
    folder = data_home / "modelpull" / "url"
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert Path(done.path) == folder / "small.gguf"
    small_sha = sha256(FILES["small.gguf"])
    assert "not verified" in done.message and small_sha in done.message
    assert "not be verified" in events[0].message
    verifying = [e.message for e in events if e.status is DownloadStatus.VERIFYING]
    assert verifying and not any(m.startswith("Verified") for m in verifying), verifying
    assert any("computing its sha256" in m for m in verifying)
    plan = await plan_download("url", url)
    assert plan.items[0].local and plan.items[0].digest == f"sha256:{small_sha}"
    assert any(small_sha in note and "not verified" in note for note in plan.notes), plan.notes
    before = await plan_download("url", f"{nginx.url}/files/model.gguf")
    assert before.items[0].digest is None
    assert any("Not verified: no sha256 was given" in note for note in before.notes)
    assert [(m.name, m.size_bytes) for m in list_models("url")] == [("small.gguf", len(FILES["small.gguf"]))]


@pytest.mark.parametrize("verified", [True, False])
async def test_a_file_already_here_is_not_fetched_again(nginx: Nginx, tmp_path: Path, verified: bool) -> None:
    folder = tmp_path / "files"
    options = {"local_dir": str(folder), **({"sha256": BIG_SHA} if verified else {})}
    first, _ = await collect(f"{nginx.url}/files/model.gguf", **options)
    assert first[-1].status is DownloadStatus.COMPLETE, first[-1].message
    nginx.clear_log()
    again, _ = await collect(f"{nginx.url}/files/model.gguf", **options)
    assert again[-1].status is DownloadStatus.COMPLETE, again[-1].message
    assert again[0].downloaded_bytes == again[0].total_bytes == BIG
    # with a sha256 the content is pinned: a copy of it on disk needs no request at all
    assert [r.method for r in nginx.requests()] == ([] if verified else ["HEAD"])
    assert DownloadStatus.VERIFYING not in [e.status for e in again]
    # a file changed under the same name is fetched anew (with a sha256: it is hashed first)
    (folder / "model.gguf").write_bytes(b"\0" * BIG)
    nginx.clear_log()
    third, _ = await collect(f"{nginx.url}/files/model.gguf", **options)
    assert third[-1].status is DownloadStatus.COMPLETE, third[-1].message
    assert third[0].downloaded_bytes == 0
    assert (folder / "model.gguf").read_bytes() == FILES["model.gguf"]
    assert nginx.bytes_sent("/files/model.gguf") == BIG


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_leaving_the_loop_closes_the_connection_and_the_next_call_resumes(
    nginx: Nginx, tmp_path: Path, how: str
) -> None:
    folder = tmp_path / "files"
    url = f"{nginx.url}/slow/model.gguf"

    async def consume(stop_after: int) -> None:
        async with contextlib.aclosing(download_model("url", url, sha256=BIG_SHA, local_dir=str(folder))) as gen:
            async for event in gen:
                if event.status is DownloadStatus.DOWNLOADING and event.downloaded_bytes >= stop_after:
                    break

    if how == "cancel":
        task = asyncio.create_task(consume(BIG * 10))  # never stops by itself
        while saved_bytes(folder) < MB:
            await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await consume(2 * MB)
        started = time.monotonic()
    # nginx ends the request (and logs it, not completed) within 2 s: the connection was closed
    while time.monotonic() < started + 2.0 and not nginx.requests("/slow/model.gguf", method="GET"):
        await asyncio.sleep(0.05)
    gets = nginx.requests("/slow/model.gguf", method="GET")
    assert gets and not any(r.completed for r in gets), gets
    sent = nginx.bytes_sent("/slow/model.gguf")
    assert 0 < sent < BIG
    assert not (folder / "model.gguf").exists()
    (partial,) = list_partials("url", url_dir=str(folder))  # modelpull list --partial shows it
    assert (partial.model, partial.file, partial.total_bytes) == (url, "model.gguf", BIG)
    assert 0 < partial.present_bytes < BIG
    nginx.clear_log()
    nginx.set_rate(0)  # the rest as fast as it goes
    events, _ = await collect(url, sha256=BIG_SHA, local_dir=str(folder))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert events[0].downloaded_bytes > 0  # the partial counts from the start
    resumed = nginx.requests("/slow/model.gguf", method="GET")
    assert resumed and all(started_at(r.range) > 0 for r in resumed), resumed
    assert nginx.bytes_sent("/slow/model.gguf") <= BIG - events[0].downloaded_bytes + 64 * 1024
    assert (folder / "model.gguf").read_bytes() == FILES["model.gguf"]


async def test_the_token_goes_to_the_urls_own_host_only(
    nginx: Nginx, other: PlainFileServer, tmp_path: Path
) -> None:
    folder = tmp_path / "files"
    url = f"{nginx.url}/private/small.gguf"
    anonymous, _ = await collect(url, local_dir=str(folder))
    assert anonymous[-1].error_code == "auth_required"
    assert "pass a token" in anonymous[-1].message
    wrong, _ = await collect(url, token="not-the-token", local_dir=str(folder))
    assert wrong[-1].error_code == "auth_required" and "refused the token" in wrong[-1].message
    events, _ = await collect(url, token=TOKEN, local_dir=str(folder))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    served = [r for r in nginx.requests("/private/", method="GET") if r.status == 206]
    assert served and all(r.auth_present for r in served)
    # a redirect to another host (127.0.0.2) is followed without the token
    redirected, _ = await collect(f"{nginx.url}/redirect/model.gguf", token=TOKEN, sha256=BIG_SHA,
                                  local_dir=str(tmp_path / "redirected"))
    assert redirected[-1].status is DownloadStatus.COMPLETE, redirected[-1].message
    assert any(r.auth_present and r.status == 302 for r in nginx.requests("/redirect/"))
    assert other.requests("/files/model.gguf", method="GET")
    assert not any(r.auth_present for r in other.log), "the token followed the redirect to another host"
    everything = " ".join(repr(e) for e in anonymous + wrong + events + redirected)
    assert TOKEN not in everything and "not-the-token" not in everything


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "modelpull.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_a_killed_cli_pull_resumes_with_range(nginx: Nginx, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    args = ["pull", "url", f"{nginx.url}/slow/model.gguf", "--local-dir", str(folder), "--json",
            "-o", f"sha256={BIG_SHA}"]
    first = _cli(*args)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and saved_bytes(folder) < 1.5 * MB:
        time.sleep(0.05)  # until the part state records 1.5 MB on disk
    first.kill()  # SIGKILL: no cleanup, no goodbye
    first.communicate(timeout=10)
    assert saved_bytes(folder) >= 1.5 * MB, "the download never saved its part state"
    assert not (folder / "model.gguf").exists()
    deadline = time.monotonic() + 10  # nginx logs the killed request once it notices
    while time.monotonic() < deadline and not nginx.requests("/slow/model.gguf", method="GET"):
        time.sleep(0.05)
    before = nginx.bytes_sent("/slow/model.gguf")
    nginx.clear_log()
    nginx.set_rate(0)
    second = _cli(*args)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines[-1]["status"] == "complete" and lines[0]["downloaded_bytes"] >= 1.5 * MB
    assert (folder / "model.gguf").read_bytes() == FILES["model.gguf"]
    ranged = nginx.requests("/slow/model.gguf", method="GET")
    assert ranged and all(started_at(r.range) > 0 for r in ranged)
    assert nginx.bytes_sent("/slow/model.gguf") <= BIG - lines[0]["downloaded_bytes"] + 64 * 1024
    assert before + nginx.bytes_sent("/slow/model.gguf") < 2 * BIG


def test_list_and_remove_from_the_cli(nginx: Nginx, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    pulled = _cli("pull", "url", f"{nginx.url}/files/small.gguf", "--local-dir", str(folder), "--json")
    _, err = pulled.communicate(timeout=60)
    assert pulled.returncode == 0, err
    listed = _cli("list", "url", "--json", "--url-dir", str(folder))
    out, err = listed.communicate(timeout=60)
    assert listed.returncode == 0, err
    models = json.loads(out)["models"]
    assert [(m["name"], m["size_bytes"], m["provider"]) for m in models] == [
        ("small.gguf", len(FILES["small.gguf"]), "url")]
    removed = delete_model("url", f"{nginx.url}/files/small.gguf", url_dir=str(folder))
    assert removed["freed_bytes"] == len(FILES["small.gguf"]) and removed["name"] == "small.gguf"
    assert not (folder / "small.gguf").exists() and list_models("url", url_dir=str(folder)) == []
