"""A push cut half-way through a large blob resumes from what the registry holds.

The registry is Debian's docker-registry (CNCF Distribution); a RegistryFront
in front of it counts the upload bytes it hands the registry.

* Killed (SIGKILL) behind a front that holds each request body until it is
  whole (nginx's default, ``proxy_request_buffering on``): the chunk cut by the
  kill never reaches the registry, the next run asks the registry for the
  upload's offset (``GET`` on its location, ``Range``) and sends only the rest.
* Stopped (the caller leaves the loop, Ctrl-C): the chunk in flight is let
  finish, so even a registry that keeps a cut chunk's bytes can continue; the
  next run sends only the rest.
* Killed with nothing in front: Distribution keeps the cut chunk's bytes and
  refuses to continue an upload whose last chunk it never confirmed; the next
  run starts that blob over, says so, and the push is whole and correct.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from modelpull import DownloadStatus, push
from tests.push.conftest import assert_contract, collect, sha256

CHUNK = 8 << 20


def _push_cli(source, destination: str, state_dir: str, *extra: str) -> subprocess.Popen[str]:
    options = [f"-o{key}={value}" for key, value in source.options.items()]
    return subprocess.Popen(
        [sys.executable, "-m", "modelpull.cli", "push", source.provider, source.model, destination, "--insecure",
         "--json", f"-ostate_dir={state_dir}", f"-ochunk_size={CHUNK}", *options, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _kill_half_way(process: subprocess.Popen[str]) -> dict:
    assert process.stdout is not None
    last: dict = {}
    for line in process.stdout:
        last = json.loads(line)
        total = last.get("total_bytes") or 0
        if last["status"] == "downloading" and total and last["downloaded_bytes"] >= 0.45 * total:
            process.send_signal(signal.SIGKILL)
            break
        assert last["status"] in ("starting", "downloading"), last
    process.wait(30)
    assert process.returncode == -signal.SIGKILL, f"the push ended before it was killed: {last}"
    return last


def _blob_digest_at(url: str, repo: str, digest: str) -> int:
    request = urllib.request.Request(f"{url}/v2/{repo}/blobs/{digest}", method="HEAD")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_killed_push_resumes_from_the_registrys_offset(registry, front, big_ollama, state_dir):
    front.buffer_uploads = True
    weights = big_ollama.files["model.gguf"]
    destination = f"oci://{front.netloc}/team/big-killed:v1"
    _kill_half_way(_push_cli(big_ollama, destination, state_dir, "-omax_speed=40M"))
    first = front.uploaded["PATCH"]
    assert 0 < first < len(weights), "the kill came before any chunk reached the registry, or after all"
    assert _blob_digest_at(registry.url, "team/big-killed", sha256(weights)) == 404  # not whole yet
    tags = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with contextlib.suppress(urllib.error.HTTPError):
        tags.open(f"{registry.url}/v2/team/big-killed/manifests/v1", timeout=10)
        raise AssertionError("a killed push left a tag")

    again = _push_cli(big_ollama, destination, state_dir)
    out, err = again.communicate(timeout=120)
    events = [json.loads(line) for line in out.splitlines()]
    assert again.returncode == 0, err
    assert events[-1]["status"] == "complete", events[-1]
    assert events[0]["downloaded_bytes"] >= first  # the first event counts what the registry holds
    second = front.uploaded["PATCH"] - first
    # only the rest of the weights went again (and the small config), never what the registry held
    assert first + second == len(weights) + len(_config(registry, "team/big-killed", "v1"))
    assert _blob_digest_at(registry.url, "team/big-killed", sha256(weights)) == 200


def _config(registry, repo: str, tag: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    manifest = json.loads(opener.open(request, timeout=10).read())
    return opener.open(f"{registry.url}/v2/{repo}/blobs/{manifest['config']['digest']}", timeout=10).read()


async def test_stopped_push_lets_its_chunk_finish_and_resumes(registry, front, big_ollama, state_dir):
    weights = big_ollama.files["model.gguf"]
    destination = f"oci://{front.netloc}/team/big-stopped:v1"
    events = []
    stream = push(big_ollama.provider, big_ollama.model, destination, insecure=True, state_dir=state_dir,
                  chunk_size=CHUNK, max_speed="40M", **big_ollama.options)
    async with contextlib.aclosing(stream):
        async for event in stream:
            events.append(event)
            if event.status is DownloadStatus.DOWNLOADING and event.downloaded_bytes >= 0.45 * event.total_bytes:
                break
    first = front.uploaded["PATCH"]
    assert 0 < first < len(weights)
    assert first % CHUNK == 0 or first == len(weights), "a chunk was cut"

    events = await collect(push(big_ollama.provider, big_ollama.model, destination, insecure=True,
                                state_dir=state_dir, chunk_size=CHUNK, **big_ollama.options))
    assert_contract(events)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert events[0].downloaded_bytes >= first
    second = front.uploaded["PATCH"] - first
    assert first + second == len(weights) + len(_config(registry, "team/big-stopped", "v1"))
    assert "sent again from the start" not in events[-1].message


def test_killed_push_without_a_buffering_front_starts_that_blob_over(registry, front, big_ollama, state_dir):
    weights = big_ollama.files["model.gguf"]
    destination = f"oci://{front.netloc}/team/big-restart:v1"
    _kill_half_way(_push_cli(big_ollama, destination, state_dir, "-omax_speed=40M"))
    again = _push_cli(big_ollama, destination, state_dir)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    last = json.loads(out.splitlines()[-1])
    assert last["status"] == "complete", last
    assert "sent again from the start" in last["message"]
    assert _blob_digest_at(registry.url, "team/big-restart", sha256(weights)) == 200
    assert Path(state_dir, "uploads").is_dir() and not list(Path(state_dir, "uploads").glob("*.json"))
