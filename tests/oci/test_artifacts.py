"""The format classifier against real artifacts pushed to docker-registry and read back over HTTP.

Every artifact is described from its manifest and config, then laid out in a
folder (raw layers placed, tar layers unpacked) from blobs fetched over HTTP;
the folder must be exactly what the builder says a correct pull produces.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from modelpull._oci.artifacts import (
    ArtifactFormat,
    FilePlacement,
    LayerRole,
    UnpackPlacement,
    describe_artifact,
    describe_index,
    index_entries,
)
from modelpull.errors import IncompatibleModel, UnsafeSource
from tests.oci.conftest import fetch_artifact, folder_files, http_get, materialise
from tests.servers import oci_artifacts as build
from tests.servers.registry import DockerRegistry, RegistryFront
from tests.servers.token_server import TokenAuthRegistry, TokenServer


def _describe(registry: DockerRegistry, pushed: build.PushedArtifact) -> Any:
    fetched = fetch_artifact(registry.url, pushed.repo, pushed.tag)
    assert fetched.manifest == pushed.manifest  # the registry serves what was pushed
    return describe_artifact(fetched.json, fetched.config)


def _lay_out(registry: DockerRegistry, pushed: build.PushedArtifact, tmp_path: Path) -> dict[str, bytes]:
    artifact = _describe(registry, pushed)
    materialise(registry.url, pushed.repo, artifact, tmp_path / "model", tmp_path / "work")
    return folder_files(tmp_path / "model")


def test_docker_v01_unannotated_layers_get_docker_model_runner_names(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    artifact = _describe(registry, pushed)

    assert artifact.format is ArtifactFormat.DOCKER_V01
    assert artifact.model_format == "gguf"
    assert [(layer.role, str(layer.path)) for layer in artifact.layers] == [
        (LayerRole.GGUF, "model.gguf"),
        (LayerRole.MMPROJ, "model.mmproj"),
        (LayerRole.LICENSE, "LICENSE"),
        (LayerRole.CHAT_TEMPLATE, "template.jinja"),
    ]
    assert artifact.primary_path == PurePosixPath("model.gguf")
    assert artifact.total_size == len(pushed.config) + sum(len(f) for f in pushed.files.values())
    assert [layer.digest for layer in artifact.layers] == [d["digest"] for d in pushed.manifest_json["layers"]]
    assert _lay_out(registry, pushed, tmp_path) == pushed.files


def test_docker_v01_annotated_layers_keep_their_file_names(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry, annotated=True)
    artifact = _describe(registry, pushed)
    assert [str(layer.path) for layer in artifact.layers] == list(pushed.files)
    assert _lay_out(registry, pushed, tmp_path) == pushed.files


@pytest.mark.parametrize("annotated", [True, False])
def test_a_split_gguf_keeps_its_shards_in_order(registry: DockerRegistry, tmp_path: Path, annotated: bool) -> None:
    pushed = build.docker_v01_split_gguf(registry, annotated=annotated)
    artifact = _describe(registry, pushed)

    assert [layer.role for layer in artifact.layers] == [LayerRole.GGUF_SHARD] * 3
    assert [layer.shard for layer in artifact.layers] == [(1, 3), (2, 3), (3, 3)]
    assert [str(layer.path) for layer in artifact.layers] == list(pushed.files)
    assert artifact.primary_path == PurePosixPath(next(iter(pushed.files)))
    assert _lay_out(registry, pushed, tmp_path) == pushed.files


def test_docker_v02_places_every_file_by_its_path(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v02_safetensors(registry)
    artifact = _describe(registry, pushed)

    assert artifact.format is ArtifactFormat.DOCKER_V02
    assert artifact.model_format == "safetensors"
    roles = {str(layer.path): layer.role for layer in artifact.layers}
    assert roles == {
        "model.safetensors": LayerRole.WEIGHTS,
        "text_encoder/model.safetensors": LayerRole.WEIGHTS,
        "config.json": LayerRole.CONFIG,
        "tokenizer/tokenizer.json": LayerRole.CONFIG,
        "chat_template.jinja": LayerRole.CHAT_TEMPLATE,
        "LICENSE": LayerRole.LICENSE,
    }
    assert artifact.primary_path == PurePosixPath("model.safetensors")
    assert _lay_out(registry, pushed, tmp_path) == pushed.files


def test_modelpack_raw_and_tar_layers_with_each_compression(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.modelpack_artifact(registry)
    artifact = _describe(registry, pushed)

    assert artifact.format is ArtifactFormat.MODELPACK
    assert artifact.artifact_type == "application/vnd.cncf.model.manifest.v1+json"
    assert [(layer.role, layer.placement) for layer in artifact.layers] == [
        (LayerRole.WEIGHTS, FilePlacement(PurePosixPath("model.safetensors"))),
        (LayerRole.CONFIG, UnpackPlacement(PurePosixPath("."), "gzip")),
        (LayerRole.DOC, UnpackPlacement(PurePosixPath("."), "zstd")),
        (LayerRole.CODE, UnpackPlacement(PurePosixPath("."), "none")),
    ]
    assert _lay_out(registry, pushed, tmp_path) == pushed.files


@pytest.mark.parametrize("legacy", [False, True])
def test_kitops_modelkit_in_its_own_types(registry: DockerRegistry, tmp_path: Path, legacy: bool) -> None:
    pushed = build.kitops_modelkit(registry, legacy=legacy)
    artifact = _describe(registry, pushed)

    assert artifact.format is ArtifactFormat.KITOPS
    assert artifact.kitfile is not None and artifact.kitfile["package"]["name"] == "tiny"
    assert artifact.model_format == "gguf"
    assert [layer.role for layer in artifact.layers] == [
        LayerRole.WEIGHTS, LayerRole.MODEL_PART, LayerRole.CODE, LayerRole.DOC,
    ]
    folders = [layer.placement.folder for layer in artifact.layers if isinstance(layer.placement, UnpackPlacement)]
    expected = ["models", "models", ".", "."] if legacy else [".", ".", ".", "."]
    assert [str(f) for f in folders] == expected
    assert artifact.layers[1].placement == UnpackPlacement(PurePosixPath(expected[1]), "gzip")
    assert _lay_out(registry, pushed, tmp_path) == pushed.files


def test_kitops_modelpack_form_is_told_apart_by_its_kitfile(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.kitops_modelpack(registry)
    artifact = _describe(registry, pushed)

    assert artifact.format is ArtifactFormat.KITOPS_MODELPACK
    assert artifact.kitfile is not None and artifact.kitfile["model"]["path"] == "models/tiny.gguf"
    assert [layer.role for layer in artifact.layers] == [LayerRole.GGUF, LayerRole.CONFIG, LayerRole.DOC]
    assert artifact.primary_path == PurePosixPath("models/tiny.gguf")
    assert _lay_out(registry, pushed, tmp_path) == pushed.files


def test_the_name_does_not_decide_the_format(registry: DockerRegistry) -> None:
    # The same ModelPack bytes under a Docker-ish name and tag.
    source = build.modelpack_artifact(registry)
    for digest, blob in source.blobs.items():
        assert registry.push_blob("ai/looks-like-docker", blob) == digest
    build.put_manifest(registry, "ai/looks-like-docker", "Q4_K_M", source.manifest, build.OCI_MANIFEST)
    fetched = fetch_artifact(registry.url, "ai/looks-like-docker", "Q4_K_M")
    assert describe_artifact(fetched.json, fetched.config).format is ArtifactFormat.MODELPACK


def test_an_image_index_is_listed_not_guessed(registry: DockerRegistry) -> None:
    pushed = build.image_index(registry)
    fetched = fetch_artifact(registry.url, pushed.repo, pushed.tag)
    assert fetched.json["mediaType"] == build.OCI_INDEX

    with pytest.raises(IncompatibleModel) as refused:
        describe_artifact(fetched.json, b"")

    message = str(refused.value)
    for platform, entry in pushed.entries:
        assert platform in message and entry.digest in message
    entries = index_entries(fetched.json["manifests"])
    assert [(e.platform, e.digest) for e in entries] == [(p, m.digest) for p, m in pushed.entries]
    assert describe_index(entries).startswith("2 manifests: linux/amd64")


def test_a_container_image_is_refused_naming_its_media_type(registry: DockerRegistry) -> None:
    pushed = build.container_image(registry)
    with pytest.raises(IncompatibleModel, match=re.escape("application/vnd.oci.image.config.v1+json")):
        _describe(registry, pushed)


@pytest.mark.parametrize(
    ("config_type", "artifact_type", "named"),
    [
        ("application/vnd.example.unknown+json", None, "application/vnd.example.unknown+json"),
        ("application/vnd.example.unknown+json", build.MODELPACK_ARTIFACT, "application/vnd.example.unknown+json"),
        ("", "application/vnd.example.thing", "application/vnd.example.thing"),
    ],
)
def test_unknown_config_or_artifact_types_are_incompatible(
    registry: DockerRegistry, config_type: str, artifact_type: str | None, named: str
) -> None:
    layer = build.Layer("application/octet-stream", b"data")
    pushed = build.push_artifact(registry, build.fresh_repo("odd"), "v1", config_type or "application/json",
                                 b"{}", [layer], artifact_type=artifact_type)
    data = fetch_artifact(registry.url, pushed.repo, pushed.tag).json
    if not config_type:
        data["config"].pop("mediaType")
    with pytest.raises(IncompatibleModel, match=re.escape(named)):
        describe_artifact(data, b"{}")


@pytest.mark.parametrize("kind", build.HOSTILE_TARS)
def test_a_hostile_tar_layer_is_described_then_refused_when_unpacked(
    registry: DockerRegistry, tmp_path: Path, kind: str
) -> None:
    pushed = build.hostile_modelpack(registry, kind)
    artifact = _describe(registry, pushed)
    assert artifact.layers[1].placement == UnpackPlacement(PurePosixPath("."), "gzip")
    with pytest.raises(UnsafeSource):
        materialise(registry.url, pushed.repo, artifact, tmp_path / "model", tmp_path / "work")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "work"]
    assert folder_files(tmp_path / "model") == {"model.safetensors": pushed.blobs[artifact.layers[0].digest]}


@pytest.mark.parametrize("path", ["../escape.gguf", "/etc/passwd", "a/../../b", "bad\x01name", "a\\b", ""])
def test_a_file_path_annotation_that_leaves_the_folder_is_unsafe(registry: DockerRegistry, path: str) -> None:
    content = build.fake_gguf(512)
    layer = build.Layer("application/vnd.docker.ai.gguf.v3", content, {build.FILEPATH: path})
    pushed = build.push_artifact(registry, build.fresh_repo("ai"), "bad-path", build.DOCKER_V02,
                                 build.docker_config("gguf", [layer]), [layer])
    with pytest.raises(UnsafeSource):
        _describe(registry, pushed)


def test_two_layers_on_one_path_are_unsafe(registry: DockerRegistry) -> None:
    a, b = build.fake_gguf(512), build.fake_gguf(600)
    layers = [build.Layer(build.GGUF, a, {build.FILEPATH: "model.gguf"}),
              build.Layer(build.GGUF, b, {build.FILEPATH: "model.gguf"})]
    pushed = build.push_artifact(registry, build.fresh_repo("ai"), "clash", build.DOCKER_V02,
                                 build.docker_config("gguf", layers), layers)
    with pytest.raises(UnsafeSource, match="both land on 'model.gguf'"):
        _describe(registry, pushed)


def test_a_file_where_another_layer_needs_a_folder_is_unsafe(registry: DockerRegistry) -> None:
    layers = [build.Layer(build.MODEL_FILE, b"1", {build.FILEPATH: "tokenizer"}),
              build.Layer(build.MODEL_FILE, b"2", {build.FILEPATH: "tokenizer/vocab.json"}),
              build.Layer(build.SAFETENSORS, build.fake_safetensors(64), {build.FILEPATH: "m.safetensors"})]
    pushed = build.push_artifact(registry, build.fresh_repo("ai"), "nested-clash", build.DOCKER_V02,
                                 build.docker_config("safetensors", layers), layers)
    with pytest.raises(UnsafeSource, match="below 'tokenizer'"):
        _describe(registry, pushed)


def test_a_modelpack_layer_without_a_path_is_kept_in_the_store_only(registry: DockerRegistry) -> None:
    weights = build.fake_safetensors(128)
    layers = [build.Layer("application/vnd.cncf.model.weight.v1.raw", weights)]
    pushed = build.push_artifact(registry, build.fresh_repo("modelpack"), "nopath", build.MODELPACK_CONFIG,
                                 build.modelpack_config("safetensors", [build.sha256_digest(weights)]), layers,
                                 artifact_type=build.MODELPACK_ARTIFACT)
    artifact = _describe(registry, pushed)
    assert artifact.layers[0].placement is None
    assert any("names no file path" in note for note in artifact.notes)


def test_a_manifest_served_under_a_digest_it_does_not_have_is_detectable(registry: DockerRegistry) -> None:
    lie = build.mismatched_manifest(registry)
    with RegistryFront(registry.url) as front:
        lie.apply(front)
        for reference in (lie.pushed.tag, lie.pushed.digest):
            body, headers = http_get(f"{front.url}/v2/{lie.pushed.repo}/manifests/{reference}")
            assert headers["Docker-Content-Digest"] == lie.pushed.digest
            assert "sha256:" + hashlib.sha256(body).hexdigest() != lie.pushed.digest
            assert body == lie.served
        # the blobs behind it are the real ones
        config_digest = lie.pushed.manifest_json["config"]["digest"]
        assert http_get(f"{front.url}/v2/{lie.pushed.repo}/blobs/{config_digest}")[0] == lie.pushed.config


def test_docker_hub_token_flow_through_the_local_realm(
    registry: DockerRegistry, auth_registry: TokenAuthRegistry, tokens: TokenServer
) -> None:
    pushed = build.docker_v01_gguf(registry)
    url = f"{auth_registry.url}/v2/{pushed.repo}/manifests/{pushed.tag}"
    with pytest.raises(urllib.error.HTTPError) as challenge:
        http_get(url)
    assert challenge.value.code == 401
    header = challenge.value.headers["WWW-Authenticate"]
    params = dict(re.findall(r'(\w+)="([^"]*)"', header))
    assert params == {"realm": tokens.realm, "service": "registry.docker.io",
                      "scope": f"repository:{pushed.repo}:pull"}

    token_url = f"{params['realm']}?service={params['service']}&scope={params['scope']}"
    with pytest.raises(urllib.error.HTTPError) as no_credentials:
        http_get(token_url)
    assert no_credentials.value.code == 401
    answer = json.loads(http_get(token_url, {"Authorization": "Basic YWxpY2U6czNjcmV0"})[0])  # alice:s3cret
    assert answer["token"] == answer["access_token"] and answer["expires_in"] == 300

    fetched = fetch_artifact(auth_registry.url, pushed.repo, pushed.tag, {"Authorization": f"Bearer {answer['token']}"})
    assert fetched.manifest == pushed.manifest
    assert describe_artifact(fetched.json, fetched.config).format is ArtifactFormat.DOCKER_V01
    assert tokens.requests[-1]["scopes"] == [f"repository:{pushed.repo}:pull"]
    assert tokens.requests[-1]["user"] == "alice"

    other = tokens.make_token([f"repository:{pushed.repo}x:pull"])
    with pytest.raises(urllib.error.HTTPError) as wrong_scope:
        http_get(url, {"Authorization": f"Bearer {other}"})
    assert wrong_scope.value.code == 401


def test_docker_tar_layers_unpack_into_the_model_folder(registry: DockerRegistry, tmp_path: Path) -> None:
    weights, encoder, vllm_config = build.fake_gguf(), build.fake_safetensors(256), b'{"max_model_len": 2048}'
    layers = [
        build.Layer(build.GGUF, weights),
        # dir.tar carries its folder's name inside; its own filepath names the archive, not a place
        build.Layer("application/vnd.docker.ai.dir.tar",
                    build.tar_bytes({"text_encoder": None, "text_encoder/model.safetensors": encoder}),
                    {build.FILEPATH: "text_encoder.tar"}),
        build.Layer("application/vnd.docker.ai.vllm.config.tar", build.tar_bytes({"config.json": vllm_config})),
        build.Layer(build.MODEL_FILE, b'{"v": 1}', build.file_annotations("tokenizer.json", b'{"v": 1}')),
        build.Layer(build.MODEL_FILE, b"no path"),
    ]
    pushed = build.push_artifact(registry, build.fresh_repo("ai"), "tars", build.DOCKER_V01,
                                 build.docker_config("gguf", layers), layers)
    artifact = _describe(registry, pushed)

    assert [(layer.role, layer.placement) for layer in artifact.layers] == [
        (LayerRole.GGUF, FilePlacement(PurePosixPath("model.gguf"))),
        (LayerRole.FILES, UnpackPlacement(PurePosixPath("."), "none")),
        (LayerRole.CONFIG, UnpackPlacement(PurePosixPath("."), "none")),
        (LayerRole.CONFIG, FilePlacement(PurePosixPath("tokenizer.json"))),
        (LayerRole.CONFIG, None),
    ]
    assert any("kept in the store only" in note for note in artifact.notes)
    assert _lay_out(registry, pushed, tmp_path) == {
        "model.gguf": weights, "text_encoder/model.safetensors": encoder, "config.json": vllm_config,
        "tokenizer.json": b'{"v": 1}',
    }


def test_a_tar_entry_over_a_raw_layers_file_is_refused(registry: DockerRegistry, tmp_path: Path) -> None:
    weights = build.fake_safetensors(128)
    layers = [
        build.Layer("application/vnd.cncf.model.weight.v1.raw", weights, build.file_annotations("model.safetensors", weights)),
        build.Layer("application/vnd.cncf.model.doc.v1.tar", build.tar_bytes({"model.safetensors": b"not weights"})),
    ]
    pushed = build.push_artifact(registry, build.fresh_repo("modelpack"), "overwrite", build.MODELPACK_CONFIG,
                                 build.modelpack_config("safetensors", [layer.digest for layer in layers]), layers,
                                 artifact_type=build.MODELPACK_ARTIFACT)
    with pytest.raises(UnsafeSource, match="another layer"):
        _lay_out(registry, pushed, tmp_path)
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == weights
