"""Docker Model Runner's store as modelpull writes it, checked against PROTOCOLS.md §8 field by field."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import pytest

from modelpull.errors import InvalidModel, ModelNotFound
from modelpull.stores import docker_models
from modelpull.stores.docker_models import DockerModelStore, delete_local, dmr_tag, list_local
from tests.oci.conftest import folder_files
from tests.servers import oci_artifacts as build
from tests.servers.registry import DockerRegistry


def _store_blobs(store: DockerModelStore, pushed: build.PushedArtifact) -> None:
    for digest, content in pushed.blobs.items():
        store.write_blob(digest, content)


def _publish(store: DockerModelStore, pushed: build.PushedArtifact, *tags: str) -> str:
    _store_blobs(store, pushed)
    return store.write_model(pushed.manifest, tags)


def _index(store: DockerModelStore) -> dict[str, object]:
    data: dict[str, object] = json.loads(store.index_path.read_bytes())
    return data


@pytest.mark.parametrize(
    ("reference", "stored"),
    [
        ("smollm2", "docker.io/ai/smollm2:latest"),
        ("ai/smollm2", "docker.io/ai/smollm2:latest"),
        ("ai/SmolLM2:Q4_K_M", "docker.io/ai/smollm2:Q4_K_M"),
        ("docker.io/smollm2", "docker.io/ai/smollm2:latest"),
        ("index.docker.io/ai/smollm2:1", "docker.io/ai/smollm2:1"),
        ("hf.co/Org/Repo-GGUF:Q4_K_M", "huggingface.co/org/repo-gguf:Q4_K_M"),
        ("registry.example:5000/team/model:v1", "registry.example:5000/team/model:v1"),
        ("registry.example/model", "registry.example/model:latest"),
        ("localhost:5000/m", "localhost:5000/m:latest"),
        ("ai/x:", "docker.io/ai/x:latest"),  # an empty tag falls back to latest, as in DMR
        ("ai/x:1@sha256:" + "a" * 64, "docker.io/ai/x:1"),
        ("ai/x@sha256:" + "a" * 64, None),
    ],
)
def test_tags_are_normalised_as_docker_model_runner_stores_them(reference: str, stored: str | None) -> None:
    assert dmr_tag(reference) == stored


@pytest.mark.parametrize("bad", ["", "ai/Bad Name", "ai/x:-bad", "ai/x:" + "t" * 200, "ai/x@sha256:1234", "a//b"])
def test_invalid_references_are_refused(bad: str) -> None:
    with pytest.raises(InvalidModel):
        dmr_tag(bad)


def test_the_default_registry_follows_docker_model_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_REGISTRY", "mirror.example:5000")
    assert dmr_tag("smollm2") == "mirror.example:5000/ai/smollm2:latest"
    assert dmr_tag("other.example/ai/x") == "other.example/ai/x:latest"


def test_the_store_root_is_models_path_else_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELS_PATH", str(tmp_path / "dmr"))
    assert DockerModelStore().root == tmp_path / "dmr"
    monkeypatch.delenv("MODELS_PATH")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert docker_models.default_models_dir() == tmp_path / ".docker" / "models"


def test_a_published_model_matches_section_8_field_by_field(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    store = DockerModelStore(tmp_path / "models")

    model_id = _publish(store, pushed, f"{pushed.repo}:{pushed.tag}")

    manifest_hex = hashlib.sha256(pushed.manifest).hexdigest()
    assert model_id == f"sha256:{manifest_hex}"
    assert (store.root / "layout.json").read_bytes() == b'{\n  "version": "1.0.0"\n}'
    assert (store.root / "manifests" / "sha256" / manifest_hex).read_bytes() == pushed.manifest
    layers = [d["digest"] for d in pushed.manifest_json["layers"]]
    config = pushed.manifest_json["config"]["digest"]
    entry = {"id": model_id, "tags": [f"docker.io/{pushed.repo}:Q4_K_M"], "files": [*layers, config]}
    assert _index(store) == {"models": [entry]}
    assert list(_index(store)["models"][0]) == ["id", "tags", "files"]  # type: ignore[index]
    # byte for byte what Go's json.MarshalIndent(index, "", "  ") writes
    assert store.index_path.read_bytes() == json.dumps({"models": [entry]}, indent=2).encode()
    for digest, content in pushed.blobs.items():
        assert (store.root / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == content
    assert sorted(p.name for p in store.root.iterdir()) == [".modelpull", "blobs", "layout.json", "manifests",
                                                              "models.json"]
    assert not list(store.blobs.rglob("*.incomplete")) and not list(store.root.rglob("*.tmp"))
    assert store.layout_path.stat().st_mtime_ns <= store.index_path.stat().st_mtime_ns


def test_a_name_with_its_own_registry_keeps_it(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v02_safetensors(registry)
    store = DockerModelStore(tmp_path / "models")
    reference = f"{registry.host}/{pushed.repo}:{pushed.tag}"
    _publish(store, pushed, reference)
    assert store.read_index()[0].tags == (reference,)
    found = store.read_model(reference)
    assert found.manifest == pushed.manifest and found.config == pushed.config
    assert [b.digest for b in found.blobs] == [pushed.manifest_json["config"]["digest"]] + [
        d["digest"] for d in pushed.manifest_json["layers"]
    ]


def test_a_model_is_found_as_docker_model_runner_finds_it(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_split_gguf(registry)
    store = DockerModelStore(tmp_path / "models")
    model_id = _publish(store, pushed, f"{pushed.repo}:Q8_0")
    for reference in (f"{pushed.repo}:Q8_0", f"docker.io/{pushed.repo}:Q8_0", f"index.docker.io/{pushed.repo}:Q8_0",
                      model_id, model_id[7:19], f"{pushed.repo}@{model_id}"):
        assert store.read_model(reference).id == model_id, reference
    assert store.find(f"{pushed.repo}:other") is None
    assert store.find(pushed.repo) is None  # means :latest
    with pytest.raises(ModelNotFound):
        store.read_model(f"{pushed.repo}:nope")


def test_the_manifest_is_refused_while_a_blob_is_missing(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    store = DockerModelStore(tmp_path / "models")
    _store_blobs(store, pushed)
    store.blob_path(pushed.manifest_json["layers"][1]["digest"]).unlink()
    with pytest.raises(RuntimeError, match="missing"):
        store.write_model(pushed.manifest, ["ai/x"])
    assert not store.manifests.exists()
    assert not store.index_path.exists()


def test_partials_wait_outside_blobs(tmp_path: Path) -> None:
    store = DockerModelStore(tmp_path / "models")
    digest = "sha256:" + "ab" * 32
    assert store.partial_path(digest).parent == store.root / ".modelpull"
    assert store.blob_path(digest) == store.root / "blobs" / "sha256" / ("ab" * 32)


def test_a_tag_moves_to_the_newer_model_and_a_second_tag_is_added(registry: DockerRegistry, tmp_path: Path) -> None:
    old, new = build.docker_v01_gguf(registry), build.docker_v01_gguf(registry)
    store = DockerModelStore(tmp_path / "models")
    old_id = _publish(store, old, "ai/tiny:latest")
    new_id = _publish(store, new, "ai/tiny")
    assert [(e.id, e.tags) for e in store.read_index()] == [(old_id, ()), (new_id, ("docker.io/ai/tiny:latest",))]
    assert _index(store)["models"][0]["tags"] == []  # type: ignore[index]

    _publish(store, new, "ai/tiny:1.0")
    assert store.read_index()[1].tags == ("docker.io/ai/tiny:latest", "docker.io/ai/tiny:1.0")
    assert len(store.read_index()) == 2


def test_an_index_docker_model_runner_wrote_is_read(tmp_path: Path) -> None:
    store = DockerModelStore(tmp_path / "models")
    store.root.mkdir()
    store.index_path.write_text('{\n  "models": [\n    {"id": "sha256:' + "1" * 64 + '", "tags": null, "files": null}\n  ]\n}')
    assert [(e.id, e.tags, e.files) for e in store.read_index()] == [("sha256:" + "1" * 64, (), ())]


def _shared_pair(registry: DockerRegistry) -> tuple[build.PushedArtifact, build.PushedArtifact, str]:
    weights = build.fake_gguf()
    shared = build.Layer(build.GGUF, weights)
    pushed = []
    for template in (b"{{ a }}", b"{{ b }}"):
        layers = [shared, build.Layer(build.TEMPLATE, template)]
        pushed.append(build.push_artifact(registry, build.fresh_repo("ai"), "latest", build.DOCKER_V01,
                                          build.docker_config("gguf", layers), layers))
    return pushed[0], pushed[1], shared.digest


def test_list_and_delete_keep_blobs_another_model_uses(registry: DockerRegistry, tmp_path: Path) -> None:
    first, second, shared = _shared_pair(registry)
    root = tmp_path / "models"
    store = DockerModelStore(root)
    first_id = _publish(store, first, first.repo)
    second_id = _publish(store, second, second.repo)
    bundle = store.bundles / "sha256" / first_id[7:] / "model"
    bundle.mkdir(parents=True)
    (bundle / "model.gguf").write_bytes(b"hard link stand-in")

    listed = {m["name"]: m for m in list_local(root)}
    assert set(listed) == {f"{first.repo}:latest", f"{second.repo}:latest"}
    assert listed[f"{first.repo}:latest"]["size"] == sum(len(b) for b in first.blobs.values())
    assert listed[f"{first.repo}:latest"]["layers"] == 2 and listed[f"{first.repo}:latest"]["complete"]
    assert listed[f"{first.repo}:latest"]["id"] == first_id

    gone = delete_local(first.repo, root)

    assert gone["deleted"] and gone["id"] == first_id
    assert shared not in gone["removed_blobs"]
    assert set(gone["removed_blobs"]) == set(first.blobs) - {shared}
    assert gone["freed_bytes"] == sum(len(b) for d, b in first.blobs.items() if d != shared)
    assert store.blob_path(shared).exists()
    assert not store.manifest_path(first_id).exists()
    assert not (store.bundles / "sha256" / first_id[7:]).exists()
    assert [m["id"] for m in list_local(root)] == [second_id]
    assert list_local(root)[0]["complete"]

    delete_local(f"docker.io/{second.repo}:latest", root)
    assert _index(store) == {"models": []}
    assert list(store.blobs.rglob("*")) == [store.blobs / "sha256"]
    with pytest.raises(ModelNotFound):
        delete_local(second.repo, root)


def test_deleting_one_of_several_tags_only_untags(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    root = tmp_path / "models"
    store = DockerModelStore(root)
    model_id = _publish(store, pushed, "ai/tiny:a", "ai/tiny:b")
    result = delete_local("ai/tiny:a", root)
    assert result == {"name": "ai/tiny:a", "id": model_id, "untagged": ["docker.io/ai/tiny:a"], "deleted": False,
                      "path": str(store.manifest_path(model_id)), "removed_blobs": [], "freed_bytes": 0}
    assert store.read_index()[0].tags == ("docker.io/ai/tiny:b",)
    assert all(store.blob_path(d).exists() for d in pushed.blobs)


def test_a_missing_blob_shows_as_incomplete(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    store = DockerModelStore(tmp_path / "models")
    _publish(store, pushed, "ai/tiny")
    store.blob_path(pushed.manifest_json["layers"][0]["digest"]).unlink()
    assert list_local(store.root)[0]["complete"] is False


def _publish_many(root: str, manifests: list[tuple[bytes, dict[str, bytes], str]]) -> None:
    store = DockerModelStore(root)
    for manifest, blobs, tag in manifests:
        for digest, content in blobs.items():
            store.write_blob(digest, content)
        store.write_model(manifest, [tag])


def test_two_processes_never_lose_each_others_entries(tmp_path: Path) -> None:
    jobs = []
    for worker in range(2):
        batch = []
        for n in range(15):
            config = json.dumps({"config": {"format": "gguf"}, "n": f"{worker}-{n}"}).encode()
            layer = f"weights {worker} {n}".encode()
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": build.OCI_MANIFEST,
                "config": {"mediaType": build.DOCKER_V01, "digest": build.sha256_digest(config), "size": len(config)},
                "layers": [{"mediaType": build.GGUF, "digest": build.sha256_digest(layer), "size": len(layer)}],
            }).encode()
            batch.append((manifest, {build.sha256_digest(config): config, build.sha256_digest(layer): layer},
                          f"ai/m{worker}-{n}"))
        jobs.append(batch)
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_publish_many, args=(str(tmp_path / "models"), batch)) for batch in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    tags = {tag for entry in DockerModelStore(tmp_path / "models").read_index() for tag in entry.tags}
    assert tags == {f"docker.io/ai/m{w}-{n}:latest" for w in range(2) for n in range(15)}


def _artifact(registry: DockerRegistry, pushed: build.PushedArtifact) -> docker_models.ModelArtifact:
    from modelpull._oci.artifacts import describe_artifact
    from tests.oci.conftest import fetch_artifact

    fetched = fetch_artifact(registry.url, pushed.repo, pushed.tag)
    return describe_artifact(fetched.json, fetched.config)


def test_the_runtime_bundle_is_built_once_and_an_unreadable_one_replaced(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.kitops_modelkit(registry)
    store = DockerModelStore(tmp_path / "models")
    _store_blobs(store, pushed)
    model_id = "sha256:" + hashlib.sha256(pushed.manifest).hexdigest()
    bundle = store.bundle_path(model_id)
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text("{}")  # Docker Model Runner's old format: no model/ folder

    folder = store.build_bundle(model_id, _artifact(registry, pushed), pushed.config)

    assert folder == bundle / "model"
    assert folder_files(folder) == pushed.files
    assert (bundle / "config.json").read_bytes() == b'{"format":"gguf"}\n'  # the Kitfile's model format
    (folder / "models" / "tiny.gguf").unlink()  # a bundle that exists is kept as it is
    assert store.build_bundle(model_id, _artifact(registry, pushed), pushed.config) == folder
    assert not (folder / "models" / "tiny.gguf").exists()
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]  # no staging left behind


def test_the_runtime_config_is_what_docker_model_runner_writes(registry: DockerRegistry) -> None:
    docker = build.docker_v02_safetensors(registry)
    modelpack = build.modelpack_artifact(registry)
    assert docker_models.runtime_config(_artifact(registry, docker), docker.config) == (
        b'{"format":"safetensors","quantization":"Q4_K_M","parameters":"1.2M","architecture":"llama",'
        b'"size":"12KB"}\n'
    )
    runtime = json.loads(docker_models.runtime_config(_artifact(registry, modelpack), modelpack.config) or b"")
    assert list(runtime) == ["descriptor", "modelfs", "config"]
    assert runtime == json.loads(modelpack.config)


def test_building_a_bundle_refuses_a_missing_blob(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    store = DockerModelStore(tmp_path / "models")
    _store_blobs(store, pushed)
    store.blob_path(pushed.manifest_json["layers"][0]["digest"]).unlink()
    model_id = "sha256:" + hashlib.sha256(pushed.manifest).hexdigest()
    with pytest.raises(RuntimeError, match="missing"):
        store.build_bundle(model_id, _artifact(registry, pushed), pushed.config)
    assert not store.bundle_path(model_id).exists()
