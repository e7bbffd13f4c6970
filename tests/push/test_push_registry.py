"""Push models from three stores to Debian's docker-registry; read them back with skopeo and modelpull.

What an independent tool sees (``skopeo inspect --raw``) is checked against
PROTOCOLS.md §8 (Docker model artifacts) and §9 (CNCF ModelPack); ``skopeo copy``
to an ``oci:`` layout round-trips the artifact; modelpull pulls it back into
another store and every file is byte-identical, at the same relative path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelpull import DownloadStatus, download_model, push
from tests.push.conftest import (
    DOCKER_CONFIG,
    MODELPACK_ARTIFACT,
    MODELPACK_CONFIG,
    OCI_MANIFEST,
    SourceModel,
    assert_contract,
    collect,
    folder_files,
    sha256,
    skopeo,
)

FILEPATH = "org.cncf.model.filepath"
METADATA = "org.cncf.model.file.metadata+json"
UNTESTED = "org.cncf.model.file.mediatype.untested"


async def push_to(source: SourceModel, destination: str, fmt: str, state_dir: str, **extra):
    events = await collect(push(source.provider, source.model, destination, format=fmt, insecure=True,
                                state_dir=state_dir, **source.options, **extra))
    assert_contract(events)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    return events


def inspect(host: str, repo: str, tag: str) -> tuple[dict, dict]:
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/{repo}:{tag}"))
    config = json.loads(skopeo("inspect", "--raw", "--config", "--tls-verify=false", f"docker://{host}/{repo}:{tag}"))
    return manifest, config


def check_layers(manifest: dict, files: dict[str, bytes]) -> dict[str, dict]:
    """Every file is one layer with its path, size, digest and file metadata (§8, §9)."""
    by_path = {layer["annotations"][FILEPATH]: layer for layer in manifest["layers"]}
    assert set(by_path) == set(files)
    paths = [layer["annotations"][FILEPATH] for layer in manifest["layers"]]
    assert paths == sorted(paths), "layers are sorted by path"
    for path, layer in by_path.items():
        assert layer["size"] == len(files[path]) and layer["digest"] == sha256(files[path])
        meta = json.loads(layer["annotations"][METADATA])
        assert meta == {"name": Path(path).name, "mode": 0o644, "uid": 0, "gid": 0, "size": len(files[path]),
                        "mtime": meta["mtime"], "typeflag": ord("0")}
        assert layer["annotations"][UNTESTED] in ("true", "false")
    return by_path


async def test_hf_model_as_modelpack_reads_back_everywhere(registry, hf_model, state_dir, tmp_path):
    repo = "team/tiny-hf"
    events = await push_to(hf_model, f"oci://{registry.host}/{repo}:v1", "modelpack", state_dir)
    assert events[0].total_bytes > sum(len(b) for b in hf_model.files.values())  # files and a config
    assert events[-1].path == f"{registry.host}/{repo}:v1"

    manifest, config = inspect(registry.host, repo, "v1")
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["artifactType"] == MODELPACK_ARTIFACT  # §9: REQUIRED
    assert manifest["config"]["mediaType"] == MODELPACK_CONFIG
    layers = check_layers(manifest, hf_model.files)
    kinds = {path: layer["mediaType"] for path, layer in layers.items()}
    assert kinds["model-00001-of-00002.safetensors"] == "application/vnd.cncf.model.weight.v1.raw"
    assert kinds["subfolder/extra/weights.bin"] == "application/vnd.cncf.model.weight.v1.raw"
    assert kinds["config.json"] == "application/vnd.cncf.model.weight.config.v1.raw"
    assert kinds["chat_template.jinja"] == "application/vnd.cncf.model.weight.config.v1.raw"
    assert kinds["README.md"] == kinds["LICENSE"] == "application/vnd.cncf.model.doc.v1.raw"
    assert set(config) >= {"descriptor", "config", "modelfs"}  # §9: required
    assert config["modelfs"] == {"type": "layers", "diffIds": [layer["digest"] for layer in manifest["layers"]]}
    assert config["config"]["format"] == "safetensors"
    assert config["descriptor"]["name"] == hf_model.model and config["descriptor"]["createdAt"]

    # skopeo copies it to an OCI layout and modelpull reads that copy, with no registry involved
    layout = tmp_path / "skopeo-layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/{repo}:v1", f"oci:{layout}:copied")
    copied = tmp_path / "from-skopeo"
    got = await collect(download_model("oci", f"oci-layout:{layout}:copied", local_dir=str(copied)))
    assert got[-1].status is DownloadStatus.COMPLETE, got[-1].message
    assert folder_files(copied) == hf_model.files

    # and from the registry into Docker Model Runner's store: the bundle holds the same files
    store = tmp_path / "dmr"
    got = await collect(download_model("oci", f"{registry.host}/{repo}:v1", insecure=True, models_dir=str(store)))
    assert got[-1].status is DownloadStatus.COMPLETE, got[-1].message
    assert folder_files(Path(got[-1].path or "")) == hf_model.files

    # deterministic: pushing it again (to another tag) gives the same manifest digest
    again = await push_to(hf_model, f"oci://{registry.host}/{repo}:v2", "modelpack", state_dir)
    assert again[0].downloaded_bytes == again[0].total_bytes  # every blob was there already
    first = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{repo}:v1")
    second = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{repo}:v2")
    assert first == second


async def test_gguf_quantization_as_docker_model(registry, gguf_model, state_dir, tmp_path):
    repo = "team/tiny-gguf"
    await push_to(gguf_model, f"oci://{registry.host}/{repo}:q4", "docker", state_dir)
    manifest, config = inspect(registry.host, repo, "q4")
    assert "artifactType" not in manifest  # §8: the Docker format sets none
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    layers = check_layers(manifest, gguf_model.files)
    assert layers["Tiny-Q4_K_M.gguf"]["mediaType"] == "application/vnd.docker.ai.gguf.v3"
    assert layers["mmproj-Tiny-F16.gguf"]["mediaType"] == "application/vnd.docker.ai.mmproj"
    assert config["config"]["format"] == "gguf" and config["config"]["quantization"] == "Q4_K_M"
    assert config["rootfs"] == {"type": "rootfs", "diff_ids": [layer["digest"] for layer in manifest["layers"]]}
    assert config["descriptor"]["created"]

    layout = tmp_path / "skopeo-layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/{repo}:q4", f"oci:{layout}:q4")
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    copied = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())
    assert copied == manifest  # the same manifest, byte for byte through skopeo

    store = tmp_path / "dmr"
    got = await collect(download_model("oci", f"{registry.host}/{repo}:q4", insecure=True, models_dir=str(store)))
    assert got[-1].status is DownloadStatus.COMPLETE, got[-1].message
    assert folder_files(Path(got[-1].path or "")) == gguf_model.files
    entry = json.loads((store / "models.json").read_text())["models"][0]
    assert entry["tags"] == [f"{registry.host}/{repo}:q4"]

    # from Docker Model Runner's store to another repository: no network to a source, blobs mounted
    # from the repository they came from, and the very same manifest (the source's time, same files)
    events = await collect(push("oci", f"{registry.host}/{repo}:q4", f"oci://{registry.host}/team/copy:q4",
                                format="docker", insecure=True, state_dir=state_dir, models_dir=str(store)))
    assert_contract(events)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert f"mounted from {repo}" in events[-1].message
    copied = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/team/copy:q4")
    assert json.loads(copied) == manifest


@pytest.mark.parametrize("fmt", ["modelpack", "docker"])
async def test_ollama_model_lands_as_named_files(registry, ollama_model, state_dir, tmp_path, fmt):
    repo = f"team/tinyllama-{fmt}"
    await push_to(ollama_model, f"oci://{registry.host}/{repo}:1b", fmt, state_dir)
    manifest, config = inspect(registry.host, repo, "1b")
    layers = check_layers(manifest, ollama_model.files)
    if fmt == "docker":
        assert layers["model.gguf"]["mediaType"] == "application/vnd.docker.ai.gguf.v3"
        assert layers["LICENSE"]["mediaType"] == "application/vnd.docker.ai.license"
        assert layers["template"]["mediaType"] == "application/vnd.docker.ai.model.file"
        assert config["config"]["format"] == "gguf"
    else:
        assert layers["model.gguf"]["mediaType"] == "application/vnd.cncf.model.weight.v1.raw"
        assert layers["LICENSE"]["mediaType"] == "application/vnd.cncf.model.doc.v1.raw"
        assert layers["params.json"]["mediaType"] == "application/vnd.cncf.model.weight.config.v1.raw"
    back = tmp_path / "back"
    got = await collect(download_model("oci", f"{registry.host}/{repo}:1b", insecure=True, local_dir=str(back)))
    assert got[-1].status is DownloadStatus.COMPLETE, got[-1].message
    assert folder_files(back) == ollama_model.files


async def test_same_model_twice_same_digest_and_a_second_repository_mounts(
    registry, front, ollama_model, state_dir
):
    host = front.netloc
    await push_to(ollama_model, f"oci://{host}/team/mount-a:v1", "modelpack", state_dir)
    first = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/team/mount-a:v1"))
    sent_before = sum(front.uploaded.values())
    events = await push_to(ollama_model, f"oci://{host}/team/mount-b:v1", "modelpack", state_dir)
    second = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/team/mount-b:v1"))
    assert first == second
    mounted = [a for a in registry.access_log() if a.method == "POST" and "/team/mount-b/blobs/uploads/" in a.path
               and "mount=" in a.path and a.status == 201]
    assert len(mounted) >= 1
    weights = len(ollama_model.files["model.gguf"])
    # the weights were mounted from team/mount-a: no byte of them was sent again
    assert sum(front.uploaded.values()) - sent_before < weights
    assert "mounted from team/mount-a" in events[-1].message


async def test_a_model_not_yet_local_is_pulled_first_within_one_total(olah, registry, state_dir, tmp_path):
    files = {"weights.safetensors": bytes(range(256)) * 2000, "config.json": b'{"hidden_size": 4}'}
    olah.make_repo("modelpull-push/Not-Yet-Local", files)
    cache = tmp_path / "fresh-cache"
    destination = f"oci://{registry.host}/team/pulled-first:v1"
    dry = await collect(push("hf", "modelpull-push/Not-Yet-Local", destination, base_url=olah.endpoint,
                             cache_dir=str(cache), insecure=True, state_dir=state_dir, dry_run=True))
    assert [e.status for e in dry] == [DownloadStatus.STARTING, DownloadStatus.COMPLETE]
    assert "pulled first from huggingface" in dry[-1].message and not list(cache.rglob("*.safetensors"))

    events = await collect(push("hf", "modelpull-push/Not-Yet-Local", destination, base_url=olah.endpoint,
                                cache_dir=str(cache), insecure=True, state_dir=state_dir))
    assert_contract(events)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    size = sum(len(b) for b in files.values())
    # one total: the bytes pulled, then every blob pushed (the files and the config)
    assert events[0].total_bytes > 2 * size and events[0].downloaded_bytes == 0
    counted = {f.name: (f.present, f.size) for f in events[-1].files or []}
    assert counted["weights.safetensors"] == (len(files["weights.safetensors"]),) * 2  # pulled
    assert counted["upload weights.safetensors"] == (len(files["weights.safetensors"]),) * 2  # pushed
    back = tmp_path / "back"
    got = await collect(download_model("oci", f"{registry.host}/team/pulled-first:v1", insecure=True,
                                       local_dir=str(back)))
    assert got[-1].status is DownloadStatus.COMPLETE, got[-1].message
    assert folder_files(back) == files
