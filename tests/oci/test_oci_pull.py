"""``oci``: model artifacts pulled from a real docker-registry into Docker Model Runner's store or a folder.

Every artifact kind issue 10 names is pushed with the OCI API (tests/servers/oci_artifacts.py),
pulled through the public API, and its model folder compared byte for byte with the files a
correct pull produces. Refusals (an image index, a container image, hostile tars, a lying
manifest, bad references) end in one ERROR event with nothing published and nothing written
outside the destination.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from modelpull import DownloadProgress, DownloadStatus, download_model, plan_download
from modelpull.errors import UnsafeSource
from modelpull.inventory import delete_model, list_models
from modelpull.providers.oci import OciProvider, same_model
from modelpull.stores.docker_models import DockerModelStore, list_local
from tests.oci.conftest import folder_files
from tests.servers import oci_artifacts as build
from tests.servers.registry import DockerRegistry, RegistryFront
from tests.servers.token_server import TokenAuthRegistry, TokenServer

COMPLETE, ERROR = DownloadStatus.COMPLETE, DownloadStatus.ERROR

BUILDERS: dict[str, Callable[[DockerRegistry], build.PushedArtifact]] = {
    "docker-v0.1": build.docker_v01_gguf,
    "docker-v0.1-annotated": lambda r: build.docker_v01_gguf(r, annotated=True),
    "split-gguf": build.docker_v01_split_gguf,
    "split-gguf-unannotated": lambda r: build.docker_v01_split_gguf(r, annotated=False),
    "docker-v0.2": build.docker_v02_safetensors,
    "modelpack": build.modelpack_artifact,
    "kitops": build.kitops_modelkit,
    "kitops-legacy": lambda r: build.kitops_modelkit(r, legacy=True),
    "kitops-modelpack": build.kitops_modelpack,
}


async def pull(model: str, **options: Any) -> list[DownloadProgress]:
    return [event async for event in download_model("oci", model, **options)]


def name_of(host: str, pushed: build.PushedArtifact) -> str:
    return f"{host}/{pushed.repo}:{pushed.tag}"


def model_files(folder: Path) -> dict[str, bytes]:
    """The model's files in a folder, modelpull's own notes left out."""
    return {k: v for k, v in folder_files(folder).items() if not k.startswith(".modelpull/")}


def pushed_total(pushed: build.PushedArtifact) -> int:
    return sum(len(blob) for blob in pushed.blobs.values())


def assert_contract(events: list[DownloadProgress], total: int | None = None) -> None:
    """Every numbered line of the README's progress contract one event list can show."""
    assert events[0].status is DownloadStatus.STARTING  # 1
    terminal = [e for e in events if e.is_terminal]
    assert len(terminal) == 1 and events[-1] is terminal[0]  # 5
    if total is not None:
        assert events[0].total_bytes == total  # 2: the total before the first byte
        for event in events[1:-1]:
            if event.status is DownloadStatus.DOWNLOADING:
                assert event.total_bytes == total  # 2
    done = [e.downloaded_bytes for e in events]
    percent = [e.percent for e in events]
    assert done == sorted(done), "downloaded_bytes went backwards"  # 3
    assert percent == sorted(percent), "percent went backwards"  # 3
    statuses = [e.status for e in events]
    if DownloadStatus.VERIFYING in statuses:  # 6: nothing is downloading once verification shows
        first = statuses.index(DownloadStatus.VERIFYING)
        assert DownloadStatus.DOWNLOADING not in statuses[first:]
    last = events[-1]
    if last.status is COMPLETE:
        assert last.percent == 100.0 and last.downloaded_bytes == last.total_bytes and last.path  # 5
        if (events[0].downloaded_bytes or 0) < (last.total_bytes or 0):  # 6: bytes moved, so they were verified
            assert DownloadStatus.VERIFYING in statuses
    else:
        assert last.error_code and last.message


def assert_in_store(root: Path, pushed: build.PushedArtifact, tag: str | None) -> str:
    """The manifest, every blob and the models.json entry, as Docker Model Runner reads them; the model id."""
    model_id = "sha256:" + hashlib.sha256(pushed.manifest).hexdigest()
    assert (root / "manifests" / "sha256" / model_id[7:]).read_bytes() == pushed.manifest
    for digest, content in pushed.blobs.items():
        assert (root / "blobs" / "sha256" / digest[7:]).read_bytes() == content
    index = json.loads((root / "models.json").read_bytes())["models"]
    entry = next(e for e in index if e["id"] == model_id)
    assert entry["tags"] == ([tag] if tag else [])
    layers = [d["digest"] for d in pushed.manifest_json["layers"]]
    assert entry["files"] == [*layers, pushed.manifest_json["config"]["digest"]]
    return model_id


def tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


# -- every artifact kind, both destinations ------------------------------------------------


@pytest.mark.parametrize("kind", list(BUILDERS))
async def test_every_artifact_kind_lands_in_docker_model_runners_store(
    kind: str, registry: DockerRegistry, tmp_path: Path
) -> None:
    pushed = BUILDERS[kind](registry)
    root = tmp_path / "models"
    events = await pull(name_of(registry.host, pushed), insecure=True, models_dir=str(root))

    assert_contract(events, pushed_total(pushed))
    done = events[-1]
    assert done.status is COMPLETE, done.message
    model_id = assert_in_store(root, pushed, name_of(registry.host, pushed))
    # path is the runtime bundle's model folder, holding exactly the model's files
    assert Path(done.path) == DockerModelStore(root).model_folder(model_id)
    assert model_files(Path(done.path)) == pushed.files
    assert (Path(done.path).parent / "config.json").is_file()  # Docker Model Runner's runtime config
    assert not list(root.rglob("*.partial")) and not list(root.rglob("*.incomplete"))
    assert not [p for p in root.rglob("*") if ".unpack-" in p.name or p.name.endswith(".tmp")]


@pytest.mark.parametrize("kind", list(BUILDERS))
async def test_every_artifact_kind_lays_out_in_a_local_dir(kind: str, registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = BUILDERS[kind](registry)
    local = tmp_path / "model"
    before = tree(tmp_path)
    events = await pull(name_of(registry.host, pushed), insecure=True, local_dir=str(local))

    assert_contract(events, pushed_total(pushed))
    assert events[-1].status is COMPLETE, events[-1].message
    assert Path(events[-1].path) == local
    assert model_files(local) == pushed.files
    assert [p for p in tree(tmp_path) - before if local not in p.parents and p != local] == []
    work = local / ".modelpull"
    assert not [p for p in work.rglob("*") if p.name.endswith((".partial", ".parts.json"))]
    tar_digests = [d["digest"] for d in pushed.manifest_json["layers"] if "tar" in d["mediaType"]]
    assert not [d for d in tar_digests if (work / "blobs" / f"sha256-{d[7:]}").exists()]  # unpacked, then gone

    gets = len(registry.blob_gets(repo=pushed.repo))
    again = await pull(name_of(registry.host, pushed), insecure=True, local_dir=str(local))
    assert again[-1].status is COMPLETE and again[0].downloaded_bytes == pushed_total(pushed)
    assert len(registry.blob_gets(repo=pushed.repo)) == gets  # everything was there already
    assert model_files(local) == pushed.files


async def test_a_file_changed_or_gone_in_a_local_dir_is_fetched_again(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v02_safetensors(registry)
    local = tmp_path / "model"
    assert (await pull(name_of(registry.host, pushed), insecure=True, local_dir=str(local)))[-1].status is COMPLETE
    (local / "config.json").write_bytes(b"{}")
    (local / "tokenizer" / "tokenizer.json").unlink()
    plan = await plan_download("oci", name_of(registry.host, pushed), insecure=True, local_dir=str(local))
    assert sorted(item.name for item in plan.items if not item.local) == ["config.json", "tokenizer/tokenizer.json"]
    gets = len(registry.blob_gets(repo=pushed.repo))
    events = await pull(name_of(registry.host, pushed), insecure=True, local_dir=str(local))
    assert events[-1].status is COMPLETE
    assert len(registry.blob_gets(repo=pushed.repo)) == gets + 2
    assert model_files(local) == pushed.files


# -- Docker Model Runner's store, field by field (PROTOCOLS.md §8) -----------------------


async def test_the_store_written_matches_section_8_field_by_field(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    root = tmp_path / "models"
    events = await pull(f"{registry.host}/{pushed.repo}:{pushed.tag}", insecure=True, models_dir=str(root))
    assert events[-1].status is COMPLETE, events[-1].message

    model_hex = hashlib.sha256(pushed.manifest).hexdigest()
    tag = f"{registry.host}/{pushed.repo}:{pushed.tag}"
    layers = [d["digest"] for d in pushed.manifest_json["layers"]]
    config = pushed.manifest_json["config"]["digest"]
    entry = {"id": f"sha256:{model_hex}", "tags": [tag], "files": [*layers, config]}
    assert sorted(p.name for p in root.iterdir()) == [".modelpull", "blobs", "bundles", "layout.json", "manifests",
                                                      "models.json"]
    assert (root / "layout.json").read_bytes() == b'{\n  "version": "1.0.0"\n}'
    assert (root / "models.json").read_bytes() == json.dumps({"models": [entry]}, indent=2).encode()
    assert [p.name for p in (root / "manifests" / "sha256").iterdir()] == [model_hex]
    assert (root / "manifests" / "sha256" / model_hex).read_bytes() == pushed.manifest
    assert sorted(p.name for p in (root / "blobs" / "sha256").iterdir()) == sorted(d[7:] for d in pushed.blobs)

    # Docker Model Runner's order: layout, blobs (config first), bundle, manifest, then models.json
    def stamp(path: Path) -> int:
        return path.stat().st_mtime_ns

    blobs = [root / "blobs" / "sha256" / d[7:] for d in [config, *layers]]
    bundle = root / "bundles" / "sha256" / model_hex
    manifest = root / "manifests" / "sha256" / model_hex
    assert stamp(root / "layout.json") <= min(map(stamp, blobs))
    assert stamp(blobs[0]) <= min(map(stamp, blobs[1:]))
    assert max(map(stamp, blobs)) <= stamp(bundle / "config.json") <= stamp(manifest) <= stamp(root / "models.json")

    # the runtime bundle: hard links to the blobs under DMR's names, and DMR's runtime config
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "model"]
    for name, digest in zip(["model.gguf", "model.mmproj", "LICENSE", "template.jinja"], layers):
        assert (bundle / "model" / name).stat().st_ino == (root / "blobs" / "sha256" / digest[7:]).stat().st_ino
    runtime = json.loads(pushed.config)["config"]
    assert (bundle / "config.json").read_bytes() == json.dumps(runtime, separators=(",", ":")).encode() + b"\n"

    # what `docker model ls` reads: models.json, the manifest, the config blob
    found = DockerModelStore(root).read_model(f"{registry.host}/{pushed.repo}:{pushed.tag}")
    assert found.manifest == pushed.manifest and found.config == pushed.config
    listed = list_local(root)
    assert [(m["name"], m["bundle"], m["format"], m["complete"]) for m in listed] == [
        (tag, str(bundle / "model"), "gguf", True)
    ]


async def test_a_second_pull_of_a_model_sharing_blobs_fetches_only_the_new_ones(
    registry: DockerRegistry, tmp_path: Path
) -> None:
    shared = build.Layer(build.GGUF, build.fake_gguf(300_000))
    pushed = []
    for template in (b"{{ first }}", b"{{ second }}"):
        layers = [shared, build.Layer(build.TEMPLATE, template)]
        pushed.append(build.push_artifact(registry, build.fresh_repo("ai"), "latest", build.DOCKER_V01,
                                          build.docker_config("gguf", layers), layers))
    root = tmp_path / "models"
    first = await pull(name_of(registry.host, pushed[0]), insecure=True, models_dir=str(root))
    assert first[-1].status is COMPLETE

    plan = await plan_download("oci", name_of(registry.host, pushed[1]), insecure=True, models_dir=str(root))
    assert {item.digest: item.local for item in plan.items}[shared.digest] is True
    assert plan.missing_bytes == pushed_total(pushed[1]) - len(shared.content)
    second = await pull(name_of(registry.host, pushed[1]), insecure=True, models_dir=str(root))
    assert second[-1].status is COMPLETE
    assert second[0].downloaded_bytes == len(shared.content)  # counted as present from the start
    assert registry.blob_gets(shared.digest, pushed[1].repo) == []  # never asked for again
    assert len(registry.blob_gets(shared.digest)) == 1
    for model in pushed:
        assert_in_store(root, model, name_of(registry.host, model))

    # the inventory: both listed; deleting one keeps the blob the other uses
    found = {m.name: m for m in list_models("oci", docker_models_dir=str(root))}
    assert set(found) == {name_of(registry.host, p) for p in pushed}
    assert found[name_of(registry.host, pushed[0])].size_bytes == pushed_total(pushed[0])
    assert found[name_of(registry.host, pushed[0])].format == "gguf"
    gone = delete_model("oci", name_of(registry.host, pushed[0]), docker_models_dir=str(root))
    assert gone["freed_bytes"] == pushed_total(pushed[0]) - len(shared.content)
    store = DockerModelStore(root)
    assert store.blob_path(shared.digest).is_file()
    assert [m.name for m in list_models("oci", docker_models_dir=str(root))] == [name_of(registry.host, pushed[1])]
    bundle = store.model_folder("sha256:" + hashlib.sha256(pushed[1].manifest).hexdigest())
    assert (bundle / "model.gguf").read_bytes() == shared.content


# -- not (one) model -------------------------------------------------------------------------


async def test_an_image_index_is_listed_not_guessed(registry: DockerRegistry, tmp_path: Path) -> None:
    index = build.image_index(registry)
    name = f"{registry.host}/{index.repo}:{index.tag}"
    root = tmp_path / "models"

    plan = await plan_download("oci", name, insecure=True, models_dir=str(root))
    assert plan.items == []
    for platform, entry in index.entries:
        assert any(entry.digest in note and platform in note for note in plan.notes), plan.notes
    events = await pull(name, insecure=True, models_dir=str(root))
    assert_contract(events)
    assert events[-1].error_code == "incompatible_model"
    for platform, entry in index.entries:
        assert platform in events[-1].message and entry.digest in events[-1].message
    assert "by digest" in events[-1].message
    assert not root.exists() or not any(root.rglob("*"))
    assert registry.blob_gets(repo=index.repo) == []

    # one of them, by digest: pulled, stored untagged (a digest names no tag)
    platform, chosen = index.entries[1]
    events = await pull(f"{registry.host}/{index.repo}@{chosen.digest}", insecure=True, models_dir=str(root))
    assert events[-1].status is COMPLETE, events[-1].message
    assert assert_in_store(root, chosen, None) == chosen.digest
    assert model_files(Path(events[-1].path)) == chosen.files


async def test_a_container_image_is_refused_naming_its_media_type(registry: DockerRegistry, tmp_path: Path) -> None:
    image = build.container_image(registry)
    events = await pull(name_of(registry.host, image), insecure=True, models_dir=str(tmp_path / "models"))
    assert_contract(events)
    assert events[-1].error_code == "incompatible_model"
    assert "application/vnd.oci.image.config.v1+json" in events[-1].message
    layer = image.manifest_json["layers"][0]["digest"]
    assert registry.blob_gets(layer) == []  # the config said enough: no layer was fetched
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("destination", ["store", "local_dir"])
@pytest.mark.parametrize("trick", build.HOSTILE_TARS)
async def test_a_hostile_tar_layer_is_refused_and_nothing_lands_outside(
    trick: str, destination: str, registry: DockerRegistry, tmp_path: Path
) -> None:
    pushed = build.hostile_modelpack(registry, trick)
    target = tmp_path / "dest"
    options = {"models_dir": str(target)} if destination == "store" else {"local_dir": str(target)}
    escaped = Path("/tmp/escaped.txt")
    before_tmp = escaped.exists()
    before = tree(tmp_path)

    events = await pull(name_of(registry.host, pushed), insecure=True, **options)

    assert_contract(events)
    assert events[-1].error_code == "unsafe_source", events[-1].message
    assert "refusing" in events[-1].message
    assert [p for p in tree(tmp_path) - before if target not in p.parents and p != target] == []
    assert escaped.exists() == before_tmp
    leftovers = [p for p in target.rglob("*") if p.name in ("ok.txt", "escaped.txt", "link", "null", "pipe",
                                                             "inner.txt") or ".unpack-" in p.name]
    assert leftovers == []
    if destination == "store":
        assert not (target / "manifests").exists()  # never published
        assert json.loads((target / "models.json").read_bytes()) == {"models": []}
        assert list((target / "bundles" / "sha256").iterdir()) == []
    else:
        assert model_files(target) == {"model.safetensors": pushed.blobs[pushed.manifest_json["layers"][0]["digest"]]}


async def test_a_manifest_that_lies_about_its_digest_is_refused(
    registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    lie = build.mismatched_manifest(registry)
    lie.apply(front)
    for reference in (f":{lie.pushed.tag}", f"@{lie.pushed.digest}"):
        root = tmp_path / reference[1:8].replace(":", "-")
        events = await pull(f"{front.netloc}/{lie.pushed.repo}{reference}", insecure=True, models_dir=str(root),
                            max_retries=1)
        assert_contract(events)
        assert events[-1].error_code == "server_error", events[-1].message
        assert "does not match the digest" in events[-1].message
        assert not root.exists()
    assert front.blob_requests() == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"digest": "sha256:../../../../etc/passwd"}, "unsafe_source"),
        ({"digest": "sha256:" + "A" * 64}, "unsafe_source"),
        ({"size": -1}, "unsafe_source"),
        ({"annotations": {build.FILEPATH: "../../escape.gguf"}}, "unsafe_source"),
        ({"annotations": {build.FILEPATH: "/etc/escape.gguf"}}, "unsafe_source"),
        ({"size": 1 << 40}, "disk_full"),
        ({"size": 1_000_000}, "server_error"),  # more than the registry has
    ],
)
async def test_a_manifest_with_a_hostile_layer_is_refused(
    change: dict[str, Any], code: str, registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    pushed = build.docker_v01_gguf(registry, annotated=True)
    data = pushed.manifest_json
    data["layers"][0].update(change)
    front.overrides[f"/v2/{pushed.repo}/manifests/{pushed.tag}"] = (build.OCI_MANIFEST, json.dumps(data).encode())
    root = tmp_path / "models"
    events = await pull(name_of(front.netloc, pushed), insecure=True, models_dir=str(root), max_retries=1,
                        stall_timeout=2.0)
    assert_contract(events)
    assert events[-1].error_code == code, events[-1].message
    assert not (root / "manifests").exists()
    assert not [p for p in tmp_path.rglob("*escape*")]


# -- references and registries -----------------------------------------------------------------


async def test_bare_names_go_to_docker_hub_as_docker_model_runner_resolves_them() -> None:
    provider = OciProvider("smollm2", None, None, {})
    other = OciProvider("registry.example:5000/team/m:v1", None, None, {})
    try:
        assert (provider.ref.domain, provider.ref.repository, provider.ref.reference) == (
            "docker.io", "ai/smollm2", "latest")
        assert provider.registry == URL("https://registry-1.docker.io")
        # Docker Hub's registry sends its clients to auth.docker.io: trusted for it, and for it only
        assert provider.client.auth.check_realm("https://auth.docker.io/token").host == "auth.docker.io"
        with pytest.raises(UnsafeSource):
            provider.client.auth.check_realm("http://auth.docker.io/token")
        with pytest.raises(UnsafeSource):
            provider.client.auth.check_realm("https://auth.example.com/token")
        assert other.registry == URL("https://registry.example:5000")
        with pytest.raises(UnsafeSource):
            other.client.auth.check_realm("https://auth.docker.io/token")
    finally:
        await provider.close()
        await other.close()
    mirror = OciProvider("ai/smollm2:Q4_K_M", None, "http://mirror.internal:5000", {})
    assert mirror.registry == URL("http://mirror.internal:5000")
    assert OciProvider("docker.io/ai/x", None, "http://mirror.internal:5000", {}).registry.host == "mirror.internal"
    assert OciProvider("index.docker.io/ai/x@sha256:" + "a" * 64, None, None, {}).ref.reference == "sha256:" + "a" * 64


async def test_the_docker_hub_token_flow_through_a_local_realm(
    registry: DockerRegistry, auth_registry: TokenAuthRegistry, tokens: TokenServer, tmp_path: Path
) -> None:
    pushed = build.docker_v01_gguf(registry)  # ai/modelN:Q4_K_M
    short = f"{pushed.repo.split('/')[1]}:{pushed.tag}"  # a bare name, as `docker model pull` takes it
    root = tmp_path / "models"

    refused = await pull(short, base_url=auth_registry.url, models_dir=str(root))
    assert refused[-1].error_code == "auth_required", refused[-1].message
    wrong = await pull(short, base_url=auth_registry.url, token="alice:wrong", models_dir=str(root))
    assert wrong[-1].error_code == "auth_required"
    assert "alice:wrong" not in json.dumps([e.to_dict() for e in wrong])

    asked = len(tokens.requests)
    events = await pull(short, base_url=auth_registry.url, token="alice:s3cret", models_dir=str(root))
    assert events[-1].status is COMPLETE, events[-1].message
    assert_contract(events, pushed_total(pushed))
    mine = tokens.requests[asked:]
    assert mine and {r["user"] for r in mine} == {"alice"}
    assert {s for r in mine for s in r["scopes"]} == {f"repository:{pushed.repo}:pull"}
    assert {r["service"] for r in mine} == {"registry.docker.io"}
    assert_in_store(root, pushed, f"docker.io/{pushed.repo}:{pushed.tag}")
    assert [m["name"] for m in list_local(root)] == [f"{pushed.repo}:{pushed.tag}"]


async def test_basic_auth_and_no_credentials_for_another_host(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    with RegistryFront(registry.url, host="127.0.0.2") as cdn, \
            RegistryFront(registry.url, basic_auth=True, credential="bob:hunter2", redirect_blobs_to=cdn) as front:
        refused = await pull(name_of(front.netloc, pushed), insecure=True, models_dir=str(tmp_path / "a"))
        assert refused[-1].error_code == "auth_required", refused[-1].message
        assert "token" in refused[-1].message
        events = await pull(name_of(front.netloc, pushed), token="bob:hunter2", insecure=True,
                            models_dir=str(tmp_path / "b"))
        assert events[-1].status is COMPLETE, events[-1].message
        assert any(s.headers.get("Authorization", "").startswith("Basic ") for s in front.seen)
        assert cdn.blob_requests(), "the blob redirect was not followed"
        assert not any("Authorization" in s.headers for s in cdn.seen)  # the credential stayed with the registry
    assert_in_store(tmp_path / "b", pushed, name_of(front.netloc, pushed))


async def test_base_url_is_a_mirror_for_default_registry_names_only(
    registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    pushed = build.docker_v02_safetensors(registry)
    root = tmp_path / "models"
    events = await pull(f"{pushed.repo}:{pushed.tag}", base_url=front.url, models_dir=str(root))
    assert events[-1].status is COMPLETE, events[-1].message
    assert front.blob_requests()
    assert_in_store(root, pushed, f"docker.io/{pushed.repo}:{pushed.tag}")

    seen = len(front.seen)
    name = name_of(registry.host, pushed)
    plan = await plan_download("oci", name, base_url=front.url, insecure=True, models_dir=str(root))
    assert any("base_url is ignored" in note for note in plan.notes)
    events = await pull(name, base_url=front.url, insecure=True, models_dir=str(tmp_path / "other"))
    assert events[-1].status is COMPLETE
    assert len(front.seen) == seen  # a name with its own registry went there


async def test_plain_http_needs_the_callers_consent(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    events = await pull(name_of(registry.host, pushed), models_dir=str(tmp_path / "models"))
    assert_contract(events)
    assert events[-1].error_code == "connection_failed"
    assert "insecure" in events[-1].message
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "name", ["", "ai/Bad Name", "ai/x:-bad", "ai/x@sha256:1234", "a//b", "ai/../x", "ai/x:tag:more", "-ai/x",
             "ai/" + "x" * 300, "ai/x y:1"],
)
async def test_an_invalid_reference_fails_before_any_network_call(
    name: str, front: RegistryFront, tmp_path: Path
) -> None:
    events = await pull(name, base_url=front.url, models_dir=str(tmp_path / "models"))
    assert_contract(events)
    assert events[-1].error_code == "invalid_model", events[-1].message
    assert front.seen == []


async def test_an_unknown_model_or_tag_is_not_found(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    for name in (f"{registry.host}/ai/no-such-model", f"{registry.host}/{pushed.repo}:no-such-tag"):
        events = await pull(name, insecure=True, models_dir=str(tmp_path / "models"))
        assert events[-1].error_code == "not_found", events[-1].message
    assert not (tmp_path / "models").exists()


async def test_the_docker_alias_and_options(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    events = [e async for e in download_model("docker", name_of(registry.host, pushed), insecure=True,
                                              models_dir=str(tmp_path / "models"), local_dir=str(tmp_path / "d"))]
    assert events[-1].error_code == "invalid_option"
    events = [e async for e in download_model("docker", name_of(registry.host, pushed), insecure=True,
                                              models_dir=str(tmp_path / "models"))]
    assert events[-1].status is COMPLETE


def test_same_model_guards_a_download_from_deletion() -> None:
    assert same_model("ai/smollm2", "docker.io/ai/smollm2:latest")
    assert same_model("smollm2", "index.docker.io/ai/SmolLM2")
    assert same_model("ai/x:1", "ai/x@sha256:" + "a" * 64)  # a digest of the same repository may be that tag
    assert not same_model("ai/x:1", "ai/x:2")
    assert not same_model("ai/x", "registry.example/ai/x")
    assert not same_model("ai/x", "not a reference")


# -- the CLI ------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelpull.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_dry_run_pull_list_and_rm(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.modelpack_artifact(registry)
    name = name_of(registry.host, pushed)
    root = tmp_path / "models"

    out = cli("pull", "oci", name, "-o", "insecure=true", "-o", f"models_dir={root}", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["total_bytes"] == pushed_total(pushed)
    assert {item["digest"]: item["size"] for item in plan["items"]} == {d: len(b) for d, b in pushed.blobs.items()}
    assert [item["kind"] for item in plan["items"]] == ["config"] + ["layer"] * 4
    assert plan["items"][1]["name"] == "model.safetensors"
    notes = "\n".join(plan["notes"])
    for layer in pushed.manifest_json["layers"]:
        assert layer["mediaType"] in notes
    assert "format: modelpack" in notes and "file model.safetensors" in notes and "unpacked into" in notes
    assert not root.exists()

    out = cli("pull", "docker", name, "-o", "insecure=true", "-o", f"models_dir={root}", "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["status"] == "starting" and events[-1]["status"] == "complete"
    assert model_files(Path(events[-1]["path"])) == pushed.files

    listed = cli("list", "oci", "--docker-models", str(root), "--json")
    assert listed.returncode == 0, listed.stderr
    models = json.loads(listed.stdout)["models"]
    assert [(m["name"], m["provider"], m["size_bytes"], m["path"]) for m in models] == [
        (name, "oci", pushed_total(pushed), events[-1]["path"])
    ]
    removed = cli("rm", "oci", name, "-y", "--docker-models", str(root))
    assert removed.returncode == 0, removed.stderr
    assert json.loads(cli("list", "oci", "--docker-models", str(root), "--json").stdout)["models"] == []
    assert list((root / "blobs" / "sha256").iterdir()) == []
    assert not Path(events[-1]["path"]).exists()


async def test_the_service_lists_and_deletes_oci_models(
    registry: DockerRegistry, tmp_path: Path, start_service: Callable[..., Any]
) -> None:
    pushed = build.docker_v01_gguf(registry)
    root = tmp_path / "models"
    assert (await pull(name_of(registry.host, pushed), insecure=True, models_dir=str(root)))[-1].status is COMPLETE
    service = start_service(docker_models_dir=str(root))
    with service.client() as client:
        listed = client.get("/models", params={"provider": "oci"}).json()["models"]
        assert [(m["provider"], m["name"], m["size_bytes"], m["format"]) for m in listed] == [
            ("oci", name_of(registry.host, pushed), pushed_total(pushed), "gguf")
        ]
        assert name_of(registry.host, pushed) in [m["name"] for m in client.get("/models").json()["models"]]
        gone = client.delete(f"/models/oci/{name_of(registry.host, pushed)}")
        assert gone.status_code == 200, gone.text
        assert client.get("/models", params={"provider": "oci"}).json()["models"] == []
    assert not (root / "manifests" / "sha256").exists() or not any((root / "manifests" / "sha256").iterdir())


async def test_a_destination_that_is_not_a_folder_is_an_invalid_option(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("not a folder")
    for option, where in (("local_dir", not_a_folder), ("models_dir", not_a_folder),
                          ("local_dir", not_a_folder / "below"), ("models_dir", not_a_folder / "below")):
        events = await pull(name_of(registry.host, pushed), insecure=True, **{option: str(where)})
        assert_contract(events)
        assert events[-1].error_code == "invalid_option", events[-1].message
        assert option in events[-1].message and str(not_a_folder) in events[-1].message
    assert not_a_folder.read_text() == "not a folder"
