"""``oci`` transfers checked at the registry: resume after cancel and after SIGKILL, two processes,
a full disk before the first byte, the progress contract, and a token that shows up nowhere.

A :class:`RegistryFront` before the real docker-registry throttles each connection (so a pull
can be stopped half-way), records every ``Range`` asked for and counts the blob bytes it sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from modelpull import (
    DownloadProgress,
    DownloadStatus,
    ModelpullError,
    download_model,
    plan_download,
)
from tests.oci.test_oci_pull import assert_contract, model_files, pushed_total
from tests.servers import oci_artifacts as build
from tests.servers.registry import DockerRegistry, RegistryFront

COMPLETE, ERROR = DownloadStatus.COMPLETE, DownloadStatus.ERROR
WEIGHTS = 16_000_000
RATE = 4_000_000  # bytes/s per connection while a pull is to be stopped


def big_model(registry: DockerRegistry, size: int = WEIGHTS) -> tuple[build.PushedArtifact, str]:
    """A v0.1 GGUF model whose weights take a few seconds through a throttled front; (model, weights digest)."""
    layers = [build.Layer(build.GGUF, build.fake_gguf(size)), build.Layer(build.TEMPLATE, b"{{ messages }}")]
    pushed = build.push_artifact(registry, build.fresh_repo("ai"), "Q4_K_M", build.DOCKER_V01,
                                 build.docker_config("gguf", layers), layers,
                                 files={"model.gguf": layers[0].content, "template.jinja": layers[1].content})
    return pushed, layers[0].digest


def ranges_asked(front: RegistryFront, digest: str, since: int = 0) -> list[tuple[int, int]]:
    """(first, last) byte of every ranged GET of ``digest`` the front saw after request number ``since``."""
    found = []
    for seen in front.blob_requests()[since:]:
        if seen.path.endswith(digest) and seen.method == "GET":
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", seen.headers.get("Range", ""))
            assert match, f"a blob GET without a Range: {seen.headers}"
            found.append((int(match[1]), int(match[2]) if match[2] else WEIGHTS - 1))
    return found


def part_state_done(state_file: Path) -> int:
    try:
        parts = json.loads(state_file.read_text())["parts"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(done - start for start, _, done in parts)


def cli_pull(name: str, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "modelpull.cli", "pull", "oci", name, "-o", "insecure=true",
            "-o", f"models_dir={root}", "--json", *extra]


def assert_resumed(front: RegistryFront, digest: str, since: int, present: int) -> None:
    """The rerun asked only for bytes that were missing: nothing below what was on disk twice over."""
    asked = ranges_asked(front, digest, since)
    assert asked, "the rerun fetched nothing"
    assert all(first > 0 for first, _ in asked), asked  # never the file from its start again
    requested = sum(last - first + 1 for first, last in asked)
    assert requested <= WEIGHTS - present + WEIGHTS // 20, (requested, present)


async def test_a_cancelled_pull_resumes_asking_only_for_what_is_missing(
    registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    pushed, weights = big_model(registry)
    root = tmp_path / "models"
    name = f"{front.netloc}/{pushed.repo}:{pushed.tag}"
    front.rate = RATE
    first: list[DownloadProgress] = []
    async with contextlib.aclosing(download_model("oci", name, insecure=True, models_dir=str(root))) as events:
        async for event in events:
            first.append(event)
            if (event.downloaded_bytes or 0) >= WEIGHTS // 3:
                break
    stopped = time.monotonic()
    assert first[-1].status is DownloadStatus.DOWNLOADING
    await asyncio.sleep(0.3)
    served_first = front.served[weights]
    assert WEIGHTS // 3 <= served_first < WEIGHTS
    assert time.monotonic() - stopped < 2.5
    assert not (root / "manifests").exists() and not (root / "blobs" / "sha256" / weights[7:]).exists()

    front.rate = None
    since = len(front.blob_requests())
    plan = await plan_download("oci", name, insecure=True, models_dir=str(root))
    present = {item.digest: item.present_bytes for item in plan.items}[weights]
    assert present >= WEIGHTS // 4
    second = [e async for e in download_model("oci", name, insecure=True, models_dir=str(root))]
    assert_contract(second, pushed_total(pushed))
    assert second[-1].status is COMPLETE, second[-1].message
    assert second[0].downloaded_bytes >= present
    assert_resumed(front, weights, since, present)
    assert front.served[weights] - WEIGHTS < WEIGHTS // 10  # fetched twice: what was in flight when stopped
    assert model_files(Path(second[-1].path)) == pushed.files


def test_a_pull_killed_mid_blob_resumes_asking_only_for_what_is_missing(
    registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    pushed, weights = big_model(registry)
    root = tmp_path / "models"
    name = f"{front.netloc}/{pushed.repo}:{pushed.tag}"
    state_file = root / ".modelpull" / f"sha256-{weights[7:]}.partial.parts.json"
    front.rate = RATE
    first = subprocess.Popen(cli_pull(name, root), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while part_state_done(state_file) < WEIGHTS // 3:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the pull never got a third of the way"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    on_disk = part_state_done(state_file)
    assert not (root / "manifests").exists()
    assert json.loads((root / "models.json").read_bytes()) == {"models": []}  # nothing listed half-way

    front.rate = None
    since = len(front.blob_requests())
    second = subprocess.run(cli_pull(name, root), capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stdout.splitlines()]
    assert events[-1]["status"] == "complete"
    assert events[0]["downloaded_bytes"] >= on_disk
    assert_resumed(front, weights, since, on_disk)
    assert front.served[weights] - WEIGHTS < WEIGHTS // 10
    assert model_files(Path(events[-1]["path"])) == pushed.files
    assert not [p for p in root.rglob("*") if p.name.endswith((".partial", ".parts.json"))]


def test_two_processes_pulling_one_model_fetch_it_once(
    registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    pushed, weights = big_model(registry, 6_000_000)
    root = tmp_path / "models"
    name = f"{front.netloc}/{pushed.repo}:{pushed.tag}"
    front.rate = 3_000_000
    procs = [subprocess.Popen(cli_pull(name, root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["status"] == "complete"
    for layer in pushed.manifest_json["layers"]:
        assert front.served[layer["digest"]] == layer["size"], layer  # every byte crossed the wire once
    assert front.served[weights] == 6_000_000
    config = pushed.manifest_json["config"]
    assert front.served[config["digest"]] <= 2 * config["size"]  # read by each plan, like the manifest
    index = json.loads((root / "models.json").read_bytes())["models"]
    assert [entry["tags"] for entry in index] == [[name]]
    assert len(list((root / "bundles" / "sha256").iterdir())) == 1


@pytest.mark.parametrize("destination", ["models_dir", "local_dir"])
async def test_disk_full_before_the_first_byte(
    destination: str, registry: DockerRegistry, front: RegistryFront, small_disk: Callable[[int], Path]
) -> None:
    pushed, _ = big_model(registry, 3_000_000)
    disk = small_disk(2_000_000)
    events = [e async for e in download_model("oci", f"{front.netloc}/{pushed.repo}:{pushed.tag}", insecure=True,
                                              **{destination: str(disk / "models")})]
    assert_contract(events, pushed_total(pushed))
    assert [e.status for e in events] == [DownloadStatus.STARTING, ERROR]
    assert events[-1].error_code == "disk_full", events[-1].message
    assert "free" in events[-1].message
    layers = {d["digest"] for d in pushed.manifest_json["layers"]}
    assert not [s for s in front.blob_requests() if s.path.rsplit("/", 1)[-1] in layers]  # no layer byte moved
    assert list(disk.rglob("*")) == []


async def test_the_progress_contract_with_a_slow_registry(
    registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    pushed, _ = big_model(registry, 6_000_000)
    front.rate = 2_000_000
    events: list[DownloadProgress] = []
    stamps: list[float] = []
    async for event in download_model("oci", f"{front.netloc}/{pushed.repo}:{pushed.tag}", insecure=True,
                                      models_dir=str(tmp_path / "models"), policy="single"):
        events.append(event)
        stamps.append(time.monotonic())
    assert_contract(events, pushed_total(pushed))
    downloading = [e for e in events if e.status is DownloadStatus.DOWNLOADING]
    assert len(downloading) >= 5
    assert any(0 < (e.percent or 0) < 100 for e in downloading)
    assert any(e.speed_bps and e.eta_seconds is not None for e in downloading)
    assert any(e.current == "model.gguf" for e in downloading)
    statuses = [e.status for e in events]
    assert DownloadStatus.VERIFYING in statuses and statuses[-1] is COMPLETE
    for i in range(len(stamps)):  # at most ~10 events a second while bytes flow
        assert len([t for t in stamps if stamps[i] <= t < stamps[i] + 1.0]) <= 12
    gaps = [b - a for a, b in itertools.pairwise(stamps[:-2])]
    assert max(gaps) < 1.6  # and at least about one a second


# -- the token canary -------------------------------------------------------------------------------

CANARY = "oci_canary_" + os.urandom(10).hex()
CREDENTIAL = f"modelpull:{CANARY}"


def needles() -> dict[str, str]:
    basic = base64.b64encode(CREDENTIAL.encode()).decode()
    return {"token": CANARY, "random part": CANARY[-20:], "basic credential": basic,
            "basic credential (middle)": basic[8:-8]}


async def test_a_token_shows_up_in_no_event_log_exception_output_or_file(
    registry: DockerRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    pushed = build.docker_v01_gguf(registry)
    with RegistryFront(registry.url, token_auth=True, credential=CREDENTIAL) as front:
        name = f"{front.netloc}/{pushed.repo}:{pushed.tag}"
        runs: list[tuple[Path, str]] = [(tmp_path / "ok", "complete"), (tmp_path / "refused", "auth_required")]
        for root, outcome in runs:
            if outcome == "auth_required":
                front.credential = "modelpull:something-else"
            events = [e async for e in download_model("oci", name, token=CREDENTIAL, insecure=True,
                                                      models_dir=str(root))]
            seen += [json.dumps(e.to_dict()) for e in events] + [repr(e) for e in events]
            assert (events[-1].error_code or "complete") == outcome, events[-1].message
        try:
            await plan_download("oci", name, token=CREDENTIAL, insecure=True)
        except ModelpullError as exc:
            seen.append(f"{exc!s}\n{exc!r}\n{traceback.format_exc()}")
        else:
            raise AssertionError("a refused credential should fail the plan")
        front.credential = CREDENTIAL
        env = {**os.environ, "MODELPULL_TOKEN": CREDENTIAL}
        for extra in ([], ["--dry-run"]):
            cli = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "modelpull.cli", "pull", "oci", name, "-o", "insecure=true",
                 "-o", f"models_dir={tmp_path / 'cli'}", "--json", *extra],
                capture_output=True, text=True, timeout=120, check=False, env=env,
            )
            assert cli.returncode == 0, cli.stderr
            seen += [cli.stdout, cli.stderr]
        assert front.token_requests and all("Authorization" in r for r in front.token_requests)
    seen += [f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records]
    assert len(seen) > 10

    leaks = [f"{label} in output" for label, needle in needles().items() for text in seen if needle in text]
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            leaks += [f"{label} in {path}" for label, needle in needles().items() if needle.encode() in data]
    assert not leaks, leaks

