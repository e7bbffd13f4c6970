"""OCI layouts across an air gap, and registries that refuse a push.

* Push to ``oci-layout:PATH`` (a folder) and ``oci-layout:PATH.tar``; stop the
  registry the model came from; pull from the layout into Docker Model Runner's
  store and into a folder: every file byte-identical. skopeo reads both layouts.
* A registry that answers 401, 403, 413 or a quota error at any step of the
  push gives one ERROR with a stable code, and the tag is not there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from modelpull import DownloadStatus, download_model, push
from tests.push.conftest import SourceModel, assert_contract, collect, fake_gguf, folder_files, run, skopeo
from tests.servers.registry import DockerRegistry


@pytest.fixture
def offline_source(tmp_path: Path) -> SourceModel:
    """An Ollama model pulled from a registry that is then stopped for good."""
    weights = fake_gguf(700_000, 11)
    with DockerRegistry(tmp_path / "gone-registry") as gone:
        gone.push("library/carried", "q4", [
            ("application/vnd.ollama.image.model", weights),
            ("application/vnd.ollama.image.params", b'{"temperature": 0.2}'),
        ])
        models = tmp_path / "ollama"
        name = f"{gone.host}/library/carried:q4"
        events = run(download_model("ollama-registry", name, insecure=True, models_dir=str(models)))
        assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    return SourceModel("ollama-registry", name, {"models_dir": str(models), "offline": True},
                       {"model.gguf": weights, "params.json": b'{"temperature": 0.2}'})


@pytest.mark.parametrize("tar", [False, True])
async def test_layout_carries_a_model_with_no_registry(offline_source, registry, tmp_path, tar):
    layout = tmp_path / ("disk.tar" if tar else "disk")
    events = await collect(push(offline_source.provider, offline_source.model, f"oci-layout:{layout}:carried",
                                format="docker", **offline_source.options))
    assert_contract(events)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert events[-1].path == f"oci-layout:{layout}:carried"
    transport = "oci-archive" if tar else "oci"
    manifest = json.loads(skopeo("inspect", "--raw", f"{transport}:{layout}:carried"))
    assert manifest["config"]["mediaType"] == "application/vnd.docker.ai.model.config.v0.2+json"

    # a second model in the same layout keeps the first
    again = await collect(push(offline_source.provider, offline_source.model, f"oci-layout:{layout}:again",
                               **offline_source.options))
    assert again[-1].status is DownloadStatus.COMPLETE, again[-1].message
    assert json.loads(skopeo("inspect", "--raw", f"{transport}:{layout}:carried")) == manifest

    folder = tmp_path / "folder"
    got = await collect(download_model("oci", f"oci-layout:{layout}:carried", local_dir=str(folder)))
    assert_contract(got)
    assert got[-1].status is DownloadStatus.COMPLETE, got[-1].message
    assert folder_files(folder) == offline_source.files
    store = tmp_path / "dmr"
    got = await collect(download_model("oci", f"oci-layout:{layout}:again", models_dir=str(store)))
    assert got[-1].status is DownloadStatus.COMPLETE, got[-1].message
    assert folder_files(Path(got[-1].path or "")) == offline_source.files
    listed = json.loads((store / "models.json").read_text())["models"]
    assert listed[0]["tags"] == ["localhost/oci-layout/disk:again"]

    # on the other side of the gap, the carried model goes into the site's registry unchanged
    site = f"oci://{registry.host}/site/carried-{'tar' if tar else 'folder'}:v1"
    pushed = await collect(push("oci", f"oci-layout:{layout}:carried", site, format="docker", insecure=True,
                                models_dir=str(tmp_path / "dmr-site"), state_dir=str(tmp_path / "state")))
    assert_contract(pushed)
    assert pushed[-1].status is DownloadStatus.COMPLETE, pushed[-1].message
    served = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{site.removeprefix('oci://')}")
    assert json.loads(served) == manifest  # the same manifest digest on both sides


async def test_same_push_to_a_layout_twice_gives_the_same_tar(offline_source, tmp_path):
    for name in ("one.tar", "two.tar"):
        events = await collect(push(offline_source.provider, offline_source.model, f"oci-layout:{tmp_path / name}",
                                    **offline_source.options))
        assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


REFUSALS = [
    ("POST", r"/blobs/uploads/$", 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
     "auth_required"),
    ("PATCH", r"/blobs/uploads/", 403, {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]},
     "auth_required"),
    ("PATCH", r"/blobs/uploads/", 413, {"errors": [{"code": "SIZE_INVALID", "message": "request entity too large"}]},
     "disk_full"),
    ("PUT", r"/manifests/", 403, {"errors": [{"code": "DENIED", "message": "adding 1.2 MiB of storage resource would exceed the quota of the project"}]},
     "disk_full"),
    ("PUT", r"/blobs/uploads/.*digest=", 507, {"errors": [{"code": "UNKNOWN", "message": "insufficient storage"}]},
     "disk_full"),
]


@pytest.mark.parametrize(("method", "pattern", "status", "body", "code"), REFUSALS)
async def test_a_refusing_registry_gives_one_error_and_no_tag(
    registry, front, ollama_model, state_dir, method, pattern, status, body, code
):
    repo = f"team/refused-{status}-{method.lower()}"
    front.refuse.append((method, pattern, status, body))
    events = await collect(push(ollama_model.provider, ollama_model.model, f"oci://{front.netloc}/{repo}:v1",
                                insecure=True, state_dir=state_dir, max_retries=1, request_attempts=1,
                                **ollama_model.options))
    assert_contract(events)
    errors = [e for e in events if e.status is DownloadStatus.ERROR]
    assert len(errors) == 1 and errors[0] is events[-1]
    assert errors[0].error_code == code, errors[0].message
    assert "nothing was tagged" in errors[0].message
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as found:
        opener.open(f"{registry.url}/v2/{repo}/manifests/v1", timeout=10)
    assert found.value.code == 404


def test_cli_push_and_its_refusals(registry, ollama_model, state_dir):
    options = [f"-o{key}={value}" for key, value in ollama_model.options.items()]
    ok = subprocess.run([sys.executable, "-m", "modelpull.cli", "push", ollama_model.provider, ollama_model.model,
                         f"oci://{registry.host}/team/cli:v1", "--insecure", "--format", "docker",
                         f"-ostate_dir={state_dir}", *options], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert f"pull it with: modelpull pull oci {registry.host}/team/cli:v1" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "modelpull.cli", "push", ollama_model.provider, ollama_model.model,
                          "ftp://nowhere/x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "error [invalid_model]" in bad.stderr
    plain = subprocess.run([sys.executable, "-m", "modelpull.cli", "push", ollama_model.provider, ollama_model.model,
                            f"oci://{registry.host}/team/cli:v2", "--json", f"-ostate_dir={state_dir}", *options,
                            "-orequest_attempts=1"], capture_output=True, text=True, timeout=120)
    last = json.loads(plain.stdout.splitlines()[-1])
    assert plain.returncode == 1 and last["error_code"] == "connection_failed", last  # https without --insecure


async def test_credentials_go_only_to_the_registry_and_never_into_events(
    registry, front, ollama_model, state_dir, caplog
):
    canary = "alice:canary-s3cret-4711"
    front.basic_auth, front.credential = True, canary
    destination = f"oci://{front.netloc}/team/private:v1"
    events = await collect(push(ollama_model.provider, ollama_model.model, destination, token=canary,
                                insecure=True, state_dir=state_dir, **ollama_model.options))
    assert_contract(events)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    refused = await collect(push(ollama_model.provider, ollama_model.model, f"oci://{front.netloc}/team/private:v2",
                                 token="alice:wrong-canary-0815", insecure=True, state_dir=state_dir,
                                 **ollama_model.options))
    assert refused[-1].error_code == "auth_required", refused[-1].message
    for event in [*events, *refused]:
        text = json.dumps(event.to_dict())
        assert "canary-s3cret-4711" not in text and "wrong-canary-0815" not in text
    assert "canary" not in caplog.text
    for path in Path(state_dir).rglob("*"):
        if path.is_file():
            assert b"canary" not in path.read_bytes()
