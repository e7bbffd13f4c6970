"""The progress contract, resume, cancellation and errors for the Hugging Face provider.

Real servers: olah (a Hub mirror) behind tests/servers/hf_front.py, which
answers like the Hub (sizes, ETags, ranges, error codes) and can throttle,
cut and stall transfers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir, snapshot_download

from modelpull import DownloadStatus, download_model, plan_download

MB = 1_000_000


def random_bytes(n: int, seed: str) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:n])


@pytest.fixture
def repo(olah):
    """A fresh repo: a config, a tokenizer and an LFS weights file of 6 MB."""
    repo_id = f"org/m-{uuid.uuid4().hex[:8]}"
    files = {
        "config.json": b'{"model_type": "llama"}\n',
        "tokenizer.json": b'{"version": "1.0"}\n' * 50,
        "model.safetensors": random_bytes(6 * MB, repo_id),
    }
    olah.make_repo(repo_id, files)
    return repo_id, files


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hf-cache"


async def collect(*args, **kwargs):
    events = []
    stamps = []
    async for event in download_model(*args, **kwargs):
        events.append(event)
        stamps.append(time.monotonic())
    return events, stamps


def assert_contract(events, total: int):
    """Every numbered line of the contract that one event list can show."""
    assert events[0].status is DownloadStatus.STARTING  # 1
    terminal = [e for e in events if e.is_terminal]
    assert len(terminal) == 1 and events[-1] is terminal[0]  # 5
    for event in events[1:-1]:
        if event.status is DownloadStatus.DOWNLOADING:
            assert event.total_bytes == total  # 2
    done = [e.downloaded_bytes for e in events]
    percent = [e.percent for e in events]
    assert done == sorted(done), "downloaded_bytes went backwards"  # 3
    assert percent == sorted(percent), "percent went backwards"  # 3


async def test_full_download_follows_the_contract(hf_front, repo, cache):
    repo_id, files = repo
    total = sum(len(b) for b in files.values())
    hf_front.throttle(2 * MB, repo_id=repo_id, path="model.safetensors")
    events, stamps = await collect("huggingface", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert_contract(events, total)
    assert events[0].total_bytes == total  # totals before the first byte
    downloading = [e for e in events if e.status is DownloadStatus.DOWNLOADING]
    assert len(downloading) >= 5
    assert any(0 < e.percent < 100 for e in downloading)
    assert any(e.speed_bps and e.eta_seconds is not None for e in downloading)
    assert any(e.current == "model.safetensors" for e in downloading)
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert done.percent == 100.0 and done.downloaded_bytes == done.total_bytes == total
    # 4: at most ~10 a second while bytes flow
    for i in range(len(stamps)):
        window = [t for t in stamps if stamps[i] <= t < stamps[i] + 1.0]
        assert len(window) <= 12
    # where huggingface_hub and its users look for it
    found = snapshot_download(repo_id, cache_dir=str(cache), local_files_only=True)
    assert Path(done.path) == Path(found)
    for name, data in files.items():
        assert (Path(found) / name).read_bytes() == data
    cached = {r.repo_id: r for r in scan_cache_dir(cache).repos}
    assert cached[repo_id].size_on_disk == total
    assert not list(cache.rglob("*.incomplete"))


async def test_events_keep_coming_every_second_while_the_link_stalls(hf_front, repo, cache):
    repo_id, _ = repo
    hf_front.stall(3.5, after_bytes=MB, repo_id=repo_id, path="model.safetensors")
    events, stamps = await collect(
        "hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache), stall_timeout=20
    )
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
    assert max(gaps) < 1.5, f"a gap of {max(gaps):.2f}s between events"
    # the link did stall (once); the engine may have raced the rest on a fresh connection
    # before the stall ended, so the stalled answer need not have finished
    assert sum(1 for r in hf_front.log if (r.rule or "").startswith("stall")) == 1


async def test_files_already_local_count_from_the_start(hf_front, repo, cache):
    repo_id, files = repo
    first, _ = await collect(
        "hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache), allow_patterns=["*.json"]
    )
    assert first[-1].status is DownloadStatus.COMPLETE
    local = len(files["config.json"]) + len(files["tokenizer.json"])
    assert first[-1].total_bytes == local
    hf_front.clear_log()
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[0].downloaded_bytes == local
    assert events[0].total_bytes == sum(len(b) for b in files.values())
    assert events[-1].status is DownloadStatus.COMPLETE
    fetched = {r.file_path for r in hf_front.requests(method="GET") if r.file_path}
    assert fetched == {"model.safetensors"}


async def test_plan_and_dry_run_move_no_bytes(hf_front, repo, cache):
    repo_id, files = repo
    plan = await plan_download("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert {i.name: i.size for i in plan.items} == {k: len(v) for k, v in files.items()}
    assert plan.total_bytes == sum(len(v) for v in files.values()) and plan.present_bytes == 0
    assert all(i.digest and i.digest.split(":")[0] in ("sha256", "gitsha1") for i in plan.items)
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache), dry_run=True)
    assert [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.COMPLETE]
    assert "Dry run" in events[-1].message
    assert not hf_front.requests(method="GET", path_contains="/resolve/")
    assert not cache.exists() or not list(cache.rglob("blobs/*"))


async def test_cut_connections_resume_where_they_stopped(hf_front, repo, cache):
    repo_id, files = repo
    hf_front.cut_after(1_500_000, repo_id=repo_id, path="model.safetensors", times=3)
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert_contract(events, sum(len(b) for b in files.values()))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    gets = hf_front.requests(method="GET", file_path="model.safetensors")
    assert sum(r.cut for r in gets) == 3
    starts = [int(r.range.split("=")[1].split("-")[0]) for r in gets if r.range]
    assert starts == sorted(starts) and starts[-1] >= 3 * 1_500_000 - 1
    # bytes fetched twice: none (each retry asks only for what is missing)
    assert hf_front.file_bytes_sent(repo_id, "model.safetensors") <= len(files["model.safetensors"]) + 3 * 65536
    blob = Path(events[-1].path) / "model.safetensors"
    assert hashlib.sha256(blob.read_bytes()).digest() == hashlib.sha256(files["model.safetensors"]).digest()


@pytest.mark.parametrize("how", ["break", "aclose", "cancel"])
async def test_leaving_the_loop_stops_the_transfer_and_the_next_call_resumes(hf_front, repo, cache, how):
    repo_id, files = repo
    size = len(files["model.safetensors"])
    hf_front.throttle(1 * MB, repo_id=repo_id, path="model.safetensors")

    async def consume(stop_after: int) -> None:
        gen = download_model("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
        async for event in gen:
            if event.status is DownloadStatus.DOWNLOADING and event.downloaded_bytes >= stop_after:
                if how == "aclose":
                    await gen.aclose()
                break
        if how == "break":
            del gen  # dropped: the event loop's finaliser closes it

    if how == "cancel":
        task = asyncio.create_task(consume(size * 10))  # never stops by itself
        while hf_front.file_bytes_sent(repo_id, "model.safetensors") < 2 * MB:
            await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await consume(2 * MB)
        started = time.monotonic()
    # the server sees the connection close within 2 s and sends nothing more
    deadline = started + 2.0
    while time.monotonic() < deadline:
        gets = hf_front.requests(method="GET", file_path="model.safetensors")
        if gets and all(r.done for r in gets):
            break
        await asyncio.sleep(0.05)
    gets = hf_front.requests(method="GET", file_path="model.safetensors")
    assert gets and all(r.done for r in gets), "the transfer was still running 2 s after leaving"
    assert any(r.client_disconnected for r in gets)
    sent = hf_front.file_bytes_sent(repo_id, "model.safetensors")
    await asyncio.sleep(1.0)
    assert hf_front.file_bytes_sent(repo_id, "model.safetensors") == sent
    assert sent < size
    assert not (cache / f"models--{repo_id.replace('/', '--')}" / "snapshots").exists()

    hf_front.clear_rules()
    hf_front.clear_log()
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert events[0].downloaded_bytes > 0  # the partial counts from the start
    resumed = hf_front.requests(method="GET", file_path="model.safetensors")
    assert resumed and all(r.range and not r.range.startswith("bytes=0-") for r in resumed)
    assert hf_front.file_bytes_sent(repo_id, "model.safetensors") <= size - events[0].downloaded_bytes + 65536
    blob = Path(events[-1].path) / "model.safetensors"
    assert blob.read_bytes() == files["model.safetensors"]


async def test_two_downloads_of_the_same_model_fetch_it_once(hf_front, repo, cache):
    repo_id, files = repo
    hf_front.throttle(3 * MB, repo_id=repo_id, path="model.safetensors")
    kwargs = dict(base_url=hf_front.endpoint, cache_dir=str(cache))
    (a, _), (b, _) = await asyncio.gather(collect("hf", repo_id, **kwargs), collect("hf", repo_id, **kwargs))
    assert a[-1].status is b[-1].status is DownloadStatus.COMPLETE
    assert a[-1].path == b[-1].path
    assert_contract(a, a[-1].total_bytes)
    assert_contract(b, b[-1].total_bytes)
    size = len(files["model.safetensors"])
    assert hf_front.file_bytes_sent(repo_id, "model.safetensors") <= size + 65536


async def test_corrupt_file_is_checksum_mismatch_and_nothing_is_published(olah, hf_front, cache):
    repo_id = f"org/bad-{uuid.uuid4().hex[:8]}"
    good = random_bytes(2 * MB, repo_id)
    olah.make_repo(repo_id, {"config.json": b"{}", "model.safetensors": good})
    obj = next(p for p in olah.repo_path(repo_id).rglob("lfs/objects/*/*/*") if p.stat().st_size == len(good))
    obj.write_bytes(good[:1000] + bytes([good[1000] ^ 0xFF]) + good[1001:])
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[-1].status is DownloadStatus.ERROR
    assert events[-1].error_code == "checksum_mismatch"
    assert "model.safetensors" in events[-1].message
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    assert not (folder / "snapshots").exists()
    assert not [p for p in (folder / "blobs").iterdir() if not p.name.endswith((".lock",))
                and len(p.name) == 64]
    assert not list(folder.rglob("*.incomplete"))
    obj.write_bytes(good)  # the source is fixed: the next pull succeeds
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert (Path(events[-1].path) / "model.safetensors").read_bytes() == good


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_disk_full_before_the_first_byte(hf_front, repo, small_disk):
    repo_id, _ = repo
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(small_disk))
    assert events[-1].error_code == "disk_full"
    assert "free" in events[-1].message
    assert not hf_front.requests(method="GET", path_contains="/resolve/")


@pytest.mark.parametrize(
    ("setup", "code", "words"),
    [
        (lambda f, r: f.gate(r), "gated", "request access"),
        (lambda f, r: f.repo_not_found(r), "not_found", "not found"),
        (lambda f, r: f.revision_not_found(r, "v9"), "revision_not_found", "v9"),
        (lambda f, r: f.server_error(500, repo_id=r, on="api"), "server_error", "500"),
        (lambda f, r: f.server_error(503, repo_id=r, on="files", retry_after=0.1), "server_error", "503"),
        (lambda f, r: f.entry_not_found(r, "model.safetensors"), "not_found", "model.safetensors"),
    ],
)
async def test_hub_errors_have_stable_codes(hf_front, repo, cache, setup, code, words):
    repo_id, _ = repo
    setup(hf_front, repo_id)
    events, _ = await collect(
        "hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache), revision="v9" if code == "revision_not_found" else None,
        max_retries=1,
    )
    assert events[0].status is DownloadStatus.STARTING
    assert [e.is_terminal for e in events].count(True) == 1
    assert events[-1].status is DownloadStatus.ERROR
    assert events[-1].error_code == code, events[-1].message
    assert words.lower() in events[-1].message.lower()


async def test_gated_with_a_token_that_has_no_access(hf_front, repo, cache):
    repo_id, _ = repo
    hf_front.gate(repo_id, api=False)
    token = "hf_NOACCESS" + uuid.uuid4().hex
    events, _ = await collect("hf", repo_id, token=token, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[-1].error_code == "gated"
    assert "request access" in events[-1].message
    assert all(token not in repr(e) for e in events)


async def test_private_repo_needs_a_token_and_the_token_never_leaks(hf_front, repo, cache, caplog):
    repo_id, files = repo
    token = "hf_CANARY" + uuid.uuid4().hex
    hf_front.require_token(token, repo_id=repo_id)
    hf_front.redirect_lfs()  # weights come from another origin, like the Hub's CDN
    caplog.set_level("DEBUG")
    anonymous, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert anonymous[-1].error_code == "not_found" and "token" in anonymous[-1].message
    wrong, _ = await collect("hf", repo_id, token="hf_wrong_token_123", base_url=hf_front.endpoint, cache_dir=str(cache))
    assert wrong[-1].error_code == "auth_required"
    events, _ = await collect("hf", repo_id, token=token, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    cdn = hf_front.requests(server="cdn")
    assert cdn and not any(r.auth_present for r in cdn), "a token followed the redirect to another host"
    assert all(r.auth_present for r in hf_front.requests(server="front", method="GET") if r.file_path)
    everything = " ".join(repr(e) for e in anonymous + wrong + events) + caplog.text
    everything += " ".join(f"{r.path}?{r.query}" for r in hf_front.log)
    assert token not in everything


async def test_hf_token_env_and_argument(hf_front, repo, cache, monkeypatch):
    repo_id, _ = repo
    token = "hf_ENV" + uuid.uuid4().hex
    hf_front.require_token(token, repo_id=repo_id)
    monkeypatch.setenv("HF_TOKEN", token)
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message


async def test_hf_endpoint_env_is_the_default_base_url(hf_front, repo, cache, monkeypatch):
    repo_id, _ = repo
    monkeypatch.setenv("HF_ENDPOINT", hf_front.endpoint)
    events, _ = await collect("huggingface", repo_id, cache_dir=str(cache))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message


async def test_local_dir_puts_files_in_the_folder(hf_front, repo, tmp_path):
    repo_id, files = repo
    target = tmp_path / "model"
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, local_dir=str(target))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert Path(events[-1].path) == target
    for name, data in files.items():
        assert (target / name).read_bytes() == data
    hf_front.clear_log()
    again, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, local_dir=str(target))
    assert again[0].downloaded_bytes == again[0].total_bytes
    assert not hf_front.requests(method="GET", path_contains="/resolve/")


async def test_mlx_fetches_only_what_mlx_lm_loads(olah, hf_front, cache):
    repo_id = f"mlx-community/t-{uuid.uuid4().hex[:8]}"
    olah.make_repo(repo_id, {
        "config.json": b'{"quantization": {"bits": 4}}',
        "model.safetensors": random_bytes(300_000, repo_id),
        "tokenizer.json": b"{}",
        "tokenizer_config.json": b"{}",
        "chat_template.jinja": b"{{ messages }}",
        "pytorch_model.bin": random_bytes(200_000, "bin"),
        "README.md": b"# readme",
        "images/example.png": b"\x89PNG....",
    })
    events, _ = await collect("mlx", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    got = sorted(p.name for p in Path(events[-1].path).rglob("*") if p.is_file())
    assert got == sorted(["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                          "chat_template.jinja"])


async def test_mlx_without_safetensors_is_incompatible_before_any_weight(olah, hf_front, cache):
    repo_id = f"org/pt-{uuid.uuid4().hex[:8]}"
    olah.make_repo(repo_id, {"config.json": b"{}", "pytorch_model.bin": random_bytes(300_000, "pt")})
    events, _ = await collect("mlx", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert events[-1].error_code == "incompatible_model"
    assert "safetensors" in events[-1].message
    assert not hf_front.requests(method="GET", path_contains="/resolve/")


async def test_a_source_that_stays_silent_ends_as_timeout(hf_front, repo, cache):
    repo_id, _ = repo
    hf_front.stall(30, after_bytes=0, repo_id=repo_id, path="model.safetensors", times=None)
    started = time.monotonic()
    events, _ = await collect(
        "hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache), stall_timeout=0.5, max_retries=1
    )
    assert events[-1].error_code == "timeout", events[-1].message
    assert "again" in events[-1].message and "model.safetensors" in events[-1].message
    assert time.monotonic() - started < 10
    assert len(hf_front.requests(method="GET", file_path="model.safetensors")) == 2


async def test_verification_is_reported_before_complete(hf_front, repo, cache):
    repo_id, _ = repo
    events, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    statuses = [e.status for e in events]
    assert DownloadStatus.VERIFYING in statuses
    first_verifying = statuses.index(DownloadStatus.VERIFYING)
    assert DownloadStatus.DOWNLOADING not in statuses[first_verifying:]
    assert statuses[-1] is DownloadStatus.COMPLETE
    again, _ = await collect("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert [e.status for e in again] == [DownloadStatus.STARTING, DownloadStatus.COMPLETE]
