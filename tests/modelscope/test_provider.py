"""The ``modelscope`` source through ``download_model``, against the ModelScope test server.

The official ``modelscope`` package (in a fresh process, see conftest.py) is the
independent reader: it finds what modelpull downloaded offline and fetches
none of it again; modelpull fetches nothing the SDK downloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from modelpull import DownloadProgress, DownloadStatus, download_model, plan_download
from modelpull.inventory import delete_model, list_models, list_partials
from modelpull.stores.modelscope_cache import ModelScopeCacheStore, read_sdk_index
from tests.core.test_hf_contract import assert_contract
from tests.modelscope.conftest import Sdk
from tests.servers.modelscope_server import ModelScopeServer

MB = 1_000_000
TOKEN = "ms-canary-" + hashlib.sha256(f"modelpull ms {os.getpid()}".encode()).hexdigest()[:24]
WEIGHTS = random.Random("weights").randbytes(4 * MB)
FILES = {
    "config.json": b'{"model_type": "tiny"}',
    "weights/model.safetensors": WEIGHTS,
    "tokenizer/vocab.txt": b"a\nb\nc\n",
}
TOTAL = sum(len(d) for d in FILES.values())
GGUF = {
    "README.md": b"# quantized",
    "tiny-Q4_K_M.gguf": random.Random("q4").randbytes(300_000),
    "tiny-Q8_0.gguf": random.Random("q8").randbytes(500_000),
    "mmproj-tiny-F16.gguf": random.Random("proj").randbytes(100_000),
}
SNAPSHOT = "from modelscope import snapshot_download; print(snapshot_download({args}))"
FIND = (
    "from modelscope import snapshot_download, model_file_download; import json; "
    "print(json.dumps([snapshot_download('{repo}', local_files_only=True), "
    "model_file_download('{repo}', '{path}', local_files_only=True)]))"
)


async def pull(model: str, **kwargs: Any) -> tuple[list[DownloadProgress], list[float]]:
    events, stamps = [], []
    async for event in download_model("modelscope", model, **kwargs):
        events.append(event)
        stamps.append(time.monotonic())
    return events, stamps


def found_by_sdk(sdk: Sdk, server: ModelScopeServer, repo: str, path: str) -> list[Path]:
    # model_file_download asks /revisions even with local_files_only: keep it on loopback
    out = sdk.run(FIND.format(repo=repo, path=path), MODELSCOPE_ENDPOINT=server.endpoint)
    return [Path(p) for p in json.loads(out.stdout.strip().splitlines()[-1])]


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


# -- interop ----------------------------------------------------------------------------
async def test_a_download_follows_the_contract_and_the_sdk_finds_it(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny-0.5B", FILES)
    ms_server.bytes_per_sec = 2 * MB
    events, stamps = await pull("org/tiny-0.5B", base_url=ms_server.endpoint)
    assert_contract(events, TOTAL)
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert done.percent == 100.0 and done.downloaded_bytes == done.total_bytes == TOTAL
    assert events[0].total_bytes == TOTAL  # sizes from the file list, before the first byte
    downloading = [e for e in events if e.status is DownloadStatus.DOWNLOADING]
    assert len(downloading) >= 5 and any(e.current == "weights/model.safetensors" for e in downloading)
    statuses = [e.status for e in events]
    assert statuses.index(DownloadStatus.VERIFYING) > max(
        i for i, s in enumerate(statuses) if s is DownloadStatus.DOWNLOADING)
    for i in range(len(stamps)):
        assert len([t for t in stamps if stamps[i] <= t < stamps[i] + 1.0]) <= 12
    folder = ms_cache / "models" / "org" / "tiny-0___5B"
    assert Path(done.path) == folder and files_in(folder) == FILES
    # the bytes went through the engine, by the branch name as the SDK asks, each file once
    downloads = ms_server.downloads()
    assert {r.query["Revision"] for r in downloads} == {"master"}
    assert ms_server.bytes_sent() == TOTAL
    snapshot, weights = found_by_sdk(sdk, ms_server, "org/tiny-0.5B", "weights/model.safetensors")
    assert snapshot == folder and weights.read_bytes() == WEIGHTS
    ms_server.clear_log()
    out = sdk.run(SNAPSHOT.format(args='"org/tiny-0.5B"'), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    assert Path(out.stdout.strip().splitlines()[-1]) == folder
    assert ms_server.downloads() == [], "the SDK fetched again what modelpull had downloaded"


async def test_the_old_sdks_index_names_each_files_own_commit(
    ms_server: ModelScopeServer, ms_cache: Path
) -> None:
    ids = ms_server.add_model("org", "tiny", FILES,
                              revisions={"v1": {**FILES, "weights/model.safetensors": b"old"}}, tags=["v1"])
    events, _ = await pull("org/tiny", base_url=ms_server.endpoint)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    folder = Path(events[-1].path)
    index = {e["Path"]: e["Revision"] for e in read_sdk_index(folder)}
    # unchanged since v1: v1's commit; changed on master: master's
    assert index == {"config.json": ids["v1"], "tokenizer/vocab.txt": ids["v1"],
                     "weights/model.safetensors": ids["master"]}
    assert (folder / ".mv").read_text().startswith("Revision:master,")
    plan = await plan_download("ms", "org/tiny", base_url=ms_server.endpoint)
    assert plan.revision == ids["master"] and all(i.local for i in plan.items)
    older, _ = await pull("org/tiny", base_url=ms_server.endpoint, revision="v1")
    assert older[-1].status is DownloadStatus.COMPLETE, older[-1].message
    assert (folder / "weights" / "model.safetensors").read_bytes() == b"old"
    assert (folder / ".mv").read_text().startswith("Revision:v1,")
    assert {r.query["Revision"] for r in ms_server.downloads()} == {"master", "v1"}


async def test_a_model_the_sdk_downloaded_is_not_fetched_again(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    sdk.run(SNAPSHOT.format(args='"org/tiny"'), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    snapshot = ms_cache / "models" / "org--tiny" / "snapshots" / "master"
    assert files_in(snapshot) == FILES
    ms_server.clear_log()
    events, _ = await pull("org/tiny", base_url=ms_server.endpoint)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert Path(events[-1].path) == snapshot
    assert events[0].downloaded_bytes == events[0].total_bytes == TOTAL
    assert ms_server.downloads() == []
    # a file changed in place (same size, other bytes) is fetched again, alone
    (snapshot / "weights" / "model.safetensors").write_bytes(b"\0" * len(WEIGHTS))
    ms_server.clear_log()
    events, _ = await pull("org/tiny", base_url=ms_server.endpoint)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert [r.file_path for r in ms_server.downloads()] == ["weights/model.safetensors"]
    assert files_in(snapshot) == FILES
    assert not (ms_cache / "models" / "org" / "tiny").exists()


async def test_local_dir(ms_server: ModelScopeServer, ms_cache: Path, tmp_path: Path) -> None:
    ms_server.add_model("org", "tiny", FILES)
    target = tmp_path / "model"
    events, _ = await pull("org/tiny", base_url=ms_server.endpoint, local_dir=str(target))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert Path(events[-1].path) == target and files_in(target) == FILES
    assert not ms_cache.exists()
    ms_server.clear_log()
    again, _ = await pull("org/tiny", base_url=ms_server.endpoint, local_dir=str(target))
    assert again[-1].status is DownloadStatus.COMPLETE and ms_server.downloads() == []


async def test_patterns_dry_run_and_the_environment(
    ms_server: ModelScopeServer, ms_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", ms_server.endpoint)
    plan = await plan_download("modelscope", "org/tiny", allow_patterns=["*.json", "tokenizer/"])
    assert sorted(i.name for i in plan.items) == ["config.json", "tokenizer/vocab.txt"]
    assert all(i.digest == f"sha256:{hashlib.sha256(FILES[i.name]).hexdigest()}" for i in plan.items)
    events, _ = await pull("org/tiny", ignore_patterns="*.safetensors", dry_run=True)
    assert [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.COMPLETE]
    assert "Dry run" in events[-1].message and ms_server.downloads() == []
    monkeypatch.delenv("MODELSCOPE_ENDPOINT")
    monkeypatch.setenv("MODELSCOPE_DOMAIN", ms_server.endpoint)  # a host, or a URL with its scheme
    events, _ = await pull("org/tiny", ignore_patterns="*.safetensors")
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert sorted(files_in(Path(events[-1].path))) == ["config.json", "tokenizer/vocab.txt"]


# -- GGUF and LM Studio --------------------------------------------------------------------
async def test_a_quantization_tag_fetches_one_gguf_model(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny-GGUF", GGUF)
    events, _ = await pull("org/tiny-GGUF:q8_0", base_url=ms_server.endpoint)
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert "Q8_0" in events[0].message and "mmproj-tiny-F16.gguf" in events[0].message
    folder = ms_cache / "models" / "org" / "tiny-GGUF"
    assert Path(done.path) == folder / "tiny-Q8_0.gguf"
    assert sorted(r.file_path for r in ms_server.downloads()) == ["mmproj-tiny-F16.gguf", "tiny-Q8_0.gguf"]
    _, found = found_by_sdk(sdk, ms_server, "org/tiny-GGUF", "tiny-Q8_0.gguf")
    assert found.read_bytes() == GGUF["tiny-Q8_0.gguf"]
    missing, _ = await pull("org/tiny-GGUF:Q5_K_S", base_url=ms_server.endpoint)
    assert missing[-1].error_code == "not_found"
    assert "Q4_K_M" in missing[-1].message and "Q8_0" in missing[-1].message
    ms_server.add_model("org", "plain", FILES)
    no_gguf, _ = await pull("org/plain:Q4_K_M", base_url=ms_server.endpoint)
    assert no_gguf[-1].error_code == "incompatible_model"
    assert "modelpull pull modelscope org/plain" in no_gguf[-1].message


async def test_lmstudio_gets_a_quantization_from_modelscope(
    ms_server: ModelScopeServer, ms_cache: Path, tmp_path: Path
) -> None:
    ms_server.add_model("org", "tiny-GGUF", GGUF)
    lms = tmp_path / "lmstudio"
    events, _ = await pull("org/tiny-GGUF", base_url=ms_server.endpoint, lmstudio=True,
                           models_dir=str(lms), mmproj=False)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert Path(events[-1].path) == lms / "org" / "tiny-GGUF" / "tiny-Q4_K_M.gguf"  # the default choice
    assert [m.name for m in list_models("lmstudio", lmstudio_dir=str(lms))] == ["org/tiny-GGUF"]
    assert not ms_cache.exists()
    for bad in ({"cache_dir": str(tmp_path)}, {"local_dir": str(tmp_path)}, {"allow_patterns": "*.gguf"}):
        refused, _ = await pull("org/tiny-GGUF", base_url=ms_server.endpoint, lmstudio=True, **bad)
        assert refused[-1].error_code == "invalid_option", bad
    refused, _ = await pull("org/tiny-GGUF", base_url=ms_server.endpoint, models_dir=str(lms))
    assert refused[-1].error_code == "invalid_option"


# -- failures --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setup", "model", "options", "code", "words"),
    [
        (lambda s: None, "org/none", {}, "not_found", "was not found"),
        (lambda s: None, "org/tiny", {"revision": "v9"}, "revision_not_found", "v9"),
        (lambda s: s.add_model("team", "private", FILES, token=TOKEN), "team/private", {},
         "auth_required", "MODELSCOPE_API_TOKEN"),
        (lambda s: s.add_model("team", "private", FILES, token=TOKEN), "team/private",
         {"token": "wrong-token-123"}, "auth_required", "refused the token"),
        (lambda s: s.fail(500, times=50), "org/tiny", {}, "server_error", "500"),
        (lambda s: s.fail(503, times=50, downloads_only=True), "org/tiny", {}, "server_error", "503"),
    ],
)
async def test_errors_have_stable_codes_and_the_request_id(
    ms_server: ModelScopeServer, ms_cache: Path, setup: Any, model: str, options: dict[str, Any],
    code: str, words: str,
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    setup(ms_server)
    events, _ = await pull(model, base_url=ms_server.endpoint, max_retries=1, **options)
    assert [e.is_terminal for e in events].count(True) == 1
    assert events[-1].error_code == code, events[-1].message
    assert words in events[-1].message
    request_ids = {r.request_id for r in ms_server.log if r.request_id}
    assert any(rid in events[-1].message for rid in request_ids), events[-1].message
    assert not (ms_cache / "models" / "org" / "tiny" / ".msc").exists()


async def test_a_file_that_does_not_match_its_sha256_is_not_published(
    ms_server: ModelScopeServer, ms_cache: Path
) -> None:
    ms_server.add_model("org", "tiny", FILES)

    def lie(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            if entry["Path"] == "weights/model.safetensors":
                entry["Sha256"] = hashlib.sha256(b"other bytes").hexdigest()
        return entries

    ms_server.listing_hook = lie
    events, _ = await pull("org/tiny", base_url=ms_server.endpoint)
    assert events[-1].error_code == "checksum_mismatch", events[-1].message
    folder = ms_cache / "models" / "org" / "tiny"
    assert not (folder / "weights" / "model.safetensors").exists()
    assert "weights/model.safetensors" not in {e["Path"] for e in read_sdk_index(folder)}
    slot = ModelScopeCacheStore("org/tiny").slot("weights/model.safetensors",
                                                 hashlib.sha256(b"other bytes").hexdigest())
    assert not slot.partial.exists()  # the bad bytes are discarded (other files may stay, to resume)


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_leaving_the_loop_closes_the_connection_and_the_next_call_resumes(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk, how: str
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    ms_server.bytes_per_sec = MB

    async def consume(stop_after: int) -> None:
        async with contextlib.aclosing(download_model("ms", "org/tiny", base_url=ms_server.endpoint)) as gen:
            async for event in gen:
                if event.status is DownloadStatus.DOWNLOADING and event.downloaded_bytes >= stop_after:
                    break

    if how == "cancel":
        task = asyncio.create_task(consume(TOTAL * 10))
        while ms_server.bytes_sent("weights/model.safetensors") < 1.5 * MB:
            await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await consume(int(1.5 * MB))
        started = time.monotonic()
    while time.monotonic() < started + 2.0 and not all(r.done for r in ms_server.downloads()):
        await asyncio.sleep(0.05)
    weights = [r for r in ms_server.downloads() if r.file_path == "weights/model.safetensors"]
    assert weights and all(r.done for r in weights), "still sending 2 s after the loop was left"
    assert any(r.client_disconnected for r in weights)
    sent = ms_server.bytes_sent("weights/model.safetensors")
    await asyncio.sleep(0.5)
    assert ms_server.bytes_sent("weights/model.safetensors") == sent < len(WEIGHTS)
    partials = {p.file: p for p in list_partials("modelscope", modelscope_cache=str(ms_cache))}
    assert partials["weights/model.safetensors"].model == "org/tiny"
    assert 0 < partials["weights/model.safetensors"].present_bytes < len(WEIGHTS)
    ms_server.clear_log()
    ms_server.bytes_per_sec = None
    events, _ = await pull("org/tiny", base_url=ms_server.endpoint)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert events[0].downloaded_bytes >= MB
    resumed = [r for r in ms_server.downloads() if r.file_path == "weights/model.safetensors"]
    assert resumed and all(r.range and not r.range.startswith("bytes=0-") for r in resumed)
    assert ms_server.bytes_sent("weights/model.safetensors") <= TOTAL - events[0].downloaded_bytes + 64 * 1024
    _, found = found_by_sdk(sdk, ms_server, "org/tiny", "weights/model.safetensors")
    assert found.read_bytes() == WEIGHTS


# -- tokens, and the inventory -----------------------------------------------------------------
async def test_the_token_is_sent_as_the_sdk_sends_it_and_shows_up_nowhere(
    ms_server: ModelScopeServer, ms_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    ms_server.add_model("team", "private", FILES, token=TOKEN)
    seen: list[str] = []
    good, _ = await pull("team/private", token=TOKEN, base_url=ms_server.endpoint)
    assert good[-1].status is DownloadStatus.COMPLETE, good[-1].message
    ms_server.fail(503, times=50, downloads_only=True)
    failed, _ = await pull("team/private", token=TOKEN, base_url=ms_server.endpoint,
                           cache_dir=str(tmp_path / "other"), max_retries=1)
    assert failed[-1].error_code == "server_error"
    ms_server.clear_log()
    ms_server.clear_failures()
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", TOKEN)  # from the environment
    env_events, _ = await pull("team/private", base_url=ms_server.endpoint, cache_dir=str(tmp_path / "env"))
    assert env_events[-1].status is DownloadStatus.COMPLETE, env_events[-1].message
    assert ms_server.log and all(r.cookie_credential and r.bearer_credential for r in ms_server.log)
    monkeypatch.delenv("MODELSCOPE_API_TOKEN")
    cli = subprocess.run(
        [sys.executable, "-m", "modelpull.cli", "pull", "ms", "team/private", "--json",
         "--base-url", ms_server.endpoint, "--cache-dir", str(tmp_path / "cli")],
        env={**os.environ, "MODELPULL_TOKEN": TOKEN}, capture_output=True, text=True, timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    seen += [repr(e) for e in good + failed + env_events] + [cli.stdout, cli.stderr, caplog.text]
    seen += [repr(r) for r in ms_server.log]
    leaks = [i for i, text in enumerate(seen) if TOKEN in text or TOKEN[-16:] in text]
    leaks += [str(p) for p in tmp_path.rglob("*") if p.is_file() and TOKEN[-16:].encode() in p.read_bytes()]
    assert not leaks, leaks


async def test_list_and_delete(ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk) -> None:
    ms_server.add_model("org", "mine.v1", FILES)
    ms_server.add_model("org", "theirs", FILES)
    events, _ = await pull("org/mine.v1", base_url=ms_server.endpoint)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    sdk.run(SNAPSHOT.format(args='"org/theirs"'), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    models = {m.name: m for m in list_models("modelscope", modelscope_cache=str(ms_cache))}
    assert set(models) == {"org/mine.v1", "org/theirs"}
    assert all(m.size_bytes == TOTAL and m.provider == "modelscope" for m in models.values())
    assert models["org/theirs"].revisions == ["master"]
    removed = delete_model("ms", "org/mine.v1", modelscope_cache=str(ms_cache))
    assert removed["freed_bytes"] >= TOTAL and removed["source"] == "modelscope-cache"
    assert [m.name for m in list_models("ms", modelscope_cache=str(ms_cache))] == ["org/theirs"]
    store = ModelScopeCacheStore("org/theirs", cache_dir=str(ms_cache))
    assert store.layout == "snapshots"


@pytest.mark.parametrize("hostile", ["../../escape.bin", "/tmp/escape.bin", "a/../../escape.bin", "a\\b.bin"])
async def test_a_file_list_naming_paths_outside_the_cache_is_refused(
    ms_server: ModelScopeServer, ms_cache: Path, tmp_path: Path, hostile: str
) -> None:
    ms_server.add_model("org", "tiny", FILES)

    def escape(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return entries + [{**entries[-1], "Path": hostile, "Name": hostile.rsplit("/", 1)[-1]}]

    ms_server.listing_hook = escape
    before = set(tmp_path.rglob("*"))
    events, _ = await pull("org/tiny", base_url=ms_server.endpoint, ignore_patterns="*.bin")
    assert events[-1].error_code == "unsafe_source", events[-1].message
    assert "refusing" in events[-1].message
    assert ms_server.downloads() == []
    assert set(tmp_path.rglob("*")) == before
