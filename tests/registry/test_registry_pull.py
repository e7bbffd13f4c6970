"""``ollama-registry``: pull from a real docker-registry into an Ollama store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelpull import DownloadStatus, download_model, plan_download
from modelpull.errors import ModelNotFound
from modelpull.stores.ollama_store import delete_local, list_local
from tests.servers.registry import (
    OLLAMA_MODEL,
    OLLAMA_TEMPLATE,
    DockerRegistry,
    PushedModel,
    RegistryFront,
)


async def pull(name: str, **options: object) -> list:
    return [event async for event in download_model("ollama-registry", name, **options)]


def name_of(registry_host: str, model: PushedModel) -> str:
    return f"{registry_host}/{model.repo}:{model.tag}"


def assert_contract(events: list) -> None:
    assert events[0].status is DownloadStatus.STARTING
    terminal = [e for e in events if e.is_terminal]
    assert terminal == [events[-1]]
    done = [e.downloaded_bytes for e in events if e.downloaded_bytes is not None]
    assert done == sorted(done)


def assert_in_store(models_dir: Path, registry_host: str, model: PushedModel) -> Path:
    namespace, short = model.repo.split("/")
    manifest = models_dir / "manifests" / registry_host / namespace / short / model.tag
    assert manifest.read_bytes() == model.manifest  # exactly the bytes the registry served
    for digest, content in model.blobs.items():
        blob = models_dir / "blobs" / ("sha256-" + digest.split(":")[1])
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == hashlib.sha256(content).hexdigest()
    names = sorted(p.name for p in (models_dir / "blobs").iterdir())
    assert names == sorted("sha256-" + d.split(":")[1] for d in model.blobs)
    return manifest


async def test_pull_writes_the_ollama_store_layout(registry: DockerRegistry, tiny_model: PushedModel,
                                                   models_dir: Path) -> None:
    events = await pull(name_of(registry.host, tiny_model), insecure=True, models_dir=str(models_dir))
    assert_contract(events)
    assert events[0].total_bytes == tiny_model.total_size
    last = events[-1]
    assert last.status is DownloadStatus.COMPLETE, last.message
    assert last.downloaded_bytes == last.total_bytes == tiny_model.total_size
    manifest = assert_in_store(models_dir, registry.host, tiny_model)
    assert last.path == str(manifest)
    listed = list_local(models_dir)
    assert [m["name"] for m in listed] == [name_of(registry.host, tiny_model)]
    assert listed[0]["size"] == tiny_model.total_size and listed[0]["complete"]


async def test_blobs_already_in_the_store_are_not_fetched_again(
    registry: DockerRegistry, tiny_model: PushedModel, models_dir: Path
) -> None:
    name = name_of(registry.host, tiny_model)
    first = await pull(name, insecure=True, models_dir=str(models_dir))
    assert first[-1].status is DownloadStatus.COMPLETE
    gets_before = len(registry.blob_gets())
    plan = await plan_download("ollama-registry", name, insecure=True, models_dir=str(models_dir))
    assert all(item.local for item in plan.items) and plan.missing_bytes == 0
    second = await pull(name, insecure=True, models_dir=str(models_dir))
    assert second[-1].status is DownloadStatus.COMPLETE
    assert second[0].downloaded_bytes == tiny_model.total_size  # all local from the start
    assert len(registry.blob_gets()) == gets_before


async def test_two_pulls_of_one_model_at_once_fetch_each_blob_once(
    registry: DockerRegistry, models_dir: Path
) -> None:
    model = registry.push_tiny(weights=2_000_000)
    name = name_of(registry.host, model)
    results = await asyncio.gather(
        pull(name, insecure=True, models_dir=str(models_dir)),
        pull(name, insecure=True, models_dir=str(models_dir)),
    )
    assert [r[-1].status for r in results] == [DownloadStatus.COMPLETE] * 2
    assert_in_store(models_dir, registry.host, model)
    for digest in model.blobs:
        assert len(registry.blob_gets(digest, model.repo)) == 1


async def test_base_url_points_default_host_names_at_a_mirror(
    registry: DockerRegistry, models_dir: Path
) -> None:
    model = registry.push_tiny()
    short = model.repo.split("/")[1] + ":" + model.tag  # e.g. tiny7:1b, on registry.ollama.ai
    events = await pull(short, base_url=registry.url, models_dir=str(models_dir))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert_in_store(models_dir, "registry.ollama.ai", model)
    assert list_local(models_dir)[0]["name"] == short


async def test_a_name_with_its_own_host_goes_there(registry: DockerRegistry, tiny_model: PushedModel,
                                                   front: RegistryFront, models_dir: Path) -> None:
    name = name_of(registry.host, tiny_model)
    plan = await plan_download("ollama-registry", name, base_url=front.url, insecure=True,
                               models_dir=str(models_dir))
    assert any("base_url is ignored" in note for note in plan.notes)
    events = await pull(name, base_url=front.url, insecure=True, models_dir=str(models_dir))
    assert events[-1].status is DownloadStatus.COMPLETE
    assert front.seen == []


async def test_plain_http_needs_the_callers_consent(registry: DockerRegistry, tiny_model: PushedModel,
                                                    models_dir: Path) -> None:
    events = await pull(name_of(registry.host, tiny_model), models_dir=str(models_dir))
    assert_contract(events)
    assert events[-1].error_code == "connection_failed"
    assert "insecure" in events[-1].message
    assert not models_dir.exists() or not any(models_dir.rglob("*"))


@pytest.mark.parametrize(
    "name", ["", "bad name:1b", "a/b/c/d", "../etc:1b", "tiny:bad/tag", "tiny:1b:2", "-dash:1b", "ns.dot/m:1"]
)
async def test_an_invalid_name_fails_before_any_network_call(front: RegistryFront, name: str,
                                                             models_dir: Path) -> None:
    events = await pull(name, base_url=front.url, models_dir=str(models_dir))
    assert_contract(events)
    assert events[-1].error_code == "invalid_model"
    assert front.seen == []


async def test_unknown_model_or_tag_is_not_found(registry: DockerRegistry, tiny_model: PushedModel,
                                                 models_dir: Path) -> None:
    for name in (f"{registry.host}/library/nosuchmodel:1b", f"{registry.host}/{tiny_model.repo}:nosuchtag"):
        events = await pull(name, insecure=True, models_dir=str(models_dir))
        assert events[-1].error_code == "not_found", events[-1].message
    assert not (models_dir / "manifests").exists()


def _bad_manifests(model: PushedModel) -> list[bytes]:
    good = json.loads(model.manifest)
    variants = []
    for field, value in (
        ("digest", "sha256:../../../../etc/passwd"),
        ("digest", "md5:0123456789abcdef0123456789abcdef"),
        ("digest", "sha256:" + "A" * 64),
        ("size", -1),
        ("size", 1 << 60),
        ("size", "12"),
    ):
        bad = json.loads(model.manifest)
        bad["layers"][0][field] = value
        variants.append(json.dumps(bad).encode())
    variants.append(json.dumps({**good, "schemaVersion": 1}).encode())
    variants.append(b"not json")
    return variants


async def test_a_manifest_with_a_bad_digest_or_size_is_refused(
    front: RegistryFront, tiny_model: PushedModel, tmp_path: Path
) -> None:
    path = f"/v2/{tiny_model.repo}/manifests/{tiny_model.tag}"
    for i, body in enumerate(_bad_manifests(tiny_model)):
        front.overrides[path] = ("application/vnd.docker.distribution.manifest.v2+json", body)
        models_dir = tmp_path / f"m{i}"
        events = await pull(name_of(front.netloc, tiny_model), insecure=True, models_dir=str(models_dir))
        assert events[-1].error_code == "unsafe_source", (body[:120], events[-1].message)
        assert not models_dir.exists()
    assert front.blob_requests() == []


async def test_list_and_delete_keep_blobs_other_models_use(registry: DockerRegistry,
                                                           models_dir: Path) -> None:
    template = (OLLAMA_TEMPLATE, b"shared template {{ .Prompt }}")
    one = registry.push("library/shared-a", "q4", [(OLLAMA_MODEL, b"A" * 5000), template])
    two = registry.push("library/shared-b", "q4", [(OLLAMA_MODEL, b"B" * 7000), template])
    for model in (one, two):
        events = await pull(name_of(registry.host, model), insecure=True, models_dir=str(models_dir))
        assert events[-1].status is DownloadStatus.COMPLETE
    listed = {m["name"]: m for m in list_local(models_dir)}
    assert set(listed) == {name_of(registry.host, one), name_of(registry.host, two)}
    assert listed[name_of(registry.host, one)]["size"] == one.total_size
    result = delete_local(name_of(registry.host, one), models_dir)
    blobs = {p.name for p in (models_dir / "blobs").iterdir()}
    weights_one = "sha256-" + one.layer_digests[0].split(":")[1]
    assert weights_one not in blobs
    for digest in two.blobs:  # the template (shared) and everything of model two stay
        assert "sha256-" + digest.split(":")[1] in blobs
    assert one.layer_digests[0] in result["removed_blobs"]
    assert one.layer_digests[1] not in result["removed_blobs"]
    assert [m["name"] for m in list_local(models_dir)] == [name_of(registry.host, two)]
    with pytest.raises(ModelNotFound):
        delete_local(name_of(registry.host, one), models_dir)


# -- the CLI ----------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelpull.cli", "pull", "ollama-registry", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_cli_dry_run_lists_layers_and_sizes(registry: DockerRegistry, tiny_model: PushedModel,
                                            models_dir: Path) -> None:
    name = name_of(registry.host, tiny_model)
    out = cli(name, "-o", "insecure=true", "-o", f"models_dir={models_dir}", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["total_bytes"] == tiny_model.total_size
    assert {item["digest"]: item["size"] for item in plan["items"]} == {
        d: len(b) for d, b in tiny_model.blobs.items()
    }
    assert [item["kind"] for item in plan["items"]] == ["config", "layer", "layer", "layer"]
    assert any("application/vnd.ollama.image.model" in note for note in plan["notes"])
    assert not models_dir.exists()
    table = cli(name, "-o", "insecure=true", "-o", f"models_dir={models_dir}", "--dry-run")
    assert table.returncode == 0 and "model " in table.stdout and "template " in table.stdout


def test_cli_json_pull(registry: DockerRegistry, tiny_model: PushedModel, models_dir: Path) -> None:
    name = name_of(registry.host, tiny_model)
    out = cli(name, "-o", "insecure=true", "-o", f"models_dir={models_dir}", "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["status"] == "starting" and events[-1]["status"] == "complete"
    assert events[-1]["downloaded_bytes"] == tiny_model.total_size
    assert events[-1]["path"] == str(assert_in_store(models_dir, registry.host, tiny_model))
    failed = cli(f"{registry.host}/library/absent:1", "-o", "insecure=true",
                 "-o", f"models_dir={models_dir}", "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout.splitlines()[-1])["error_code"] == "not_found"


async def test_an_image_index_is_not_an_ollama_model(front: RegistryFront, tiny_model: PushedModel,
                                                     models_dir: Path) -> None:
    path = f"/v2/{tiny_model.repo}/manifests/{tiny_model.tag}"
    index = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    front.overrides[path] = ("application/vnd.oci.image.index.v1+json", index)
    events = await pull(name_of(front.netloc, tiny_model), insecure=True, models_dir=str(models_dir))
    assert events[-1].error_code == "incompatible_model", events[-1].message


async def test_a_manifest_that_does_not_match_its_announced_digest_is_refused(
    front: RegistryFront, tiny_model: PushedModel, models_dir: Path
) -> None:
    path = f"/v2/{tiny_model.repo}/manifests/{tiny_model.tag}"
    tampered = tiny_model.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":2')
    front.overrides[path] = ("application/vnd.docker.distribution.manifest.v2+json", tampered)
    announced = "sha256:" + hashlib.sha256(tiny_model.manifest).hexdigest()
    front.override_headers[path] = {"Docker-Content-Digest": announced}
    events = await pull(name_of(front.netloc, tiny_model), insecure=True, models_dir=str(models_dir))
    assert events[-1].error_code == "server_error", events[-1].message
    assert not (models_dir / "manifests").exists()
