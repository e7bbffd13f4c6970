"""OCI manifests: real ones pushed to docker-registry parse to what was pushed; lies are refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from yarl import URL

from modelpull._oci import (
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_BLOB_SIZE,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    OCI_MANIFEST,
    OLLAMA_LAYER_PREFIX,
    OciClient,
    is_index,
    parse_index,
    parse_manifest,
)
from modelpull._transfer import POLICIES, new_session
from modelpull.errors import UnsafeSource
from tests.servers.registry import CONFIG_V1, DockerRegistry, _http, sha256_digest

DMR_CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"
DMR_GGUF = "application/vnd.docker.ai.gguf.v3"
CNCF_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
async def client(registry: DockerRegistry) -> AsyncIterator[OciClient]:
    session = new_session(POLICIES["default"])
    try:
        yield OciClient(session, URL(registry.url), POLICIES["default"])
    finally:
        await session.close()


def put_manifest(registry: DockerRegistry, repo: str, tag: str, manifest: dict[str, Any]) -> bytes:
    body = json.dumps(manifest).encode()
    status, _, _ = _http("PUT", f"{registry.url}/v2/{repo}/manifests/{tag}", body,
                         {"Content-Type": manifest["mediaType"]})
    assert status == 201
    return body


def push_model_artifact(registry: DockerRegistry, repo: str) -> tuple[bytes, dict[str, bytes]]:
    """A Docker Model Runner style OCI artifact: annotated layers, an artifact type."""
    config = json.dumps({"config": {"format": "gguf", "quantization": "Q4_K_M"}}).encode()
    weights, template = b"GGUF" + bytes(range(256)) * 40, b"{{ .Prompt }}"
    blobs = {registry.push_blob(repo, b): b for b in (config, weights, template)}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CNCF_ARTIFACT,
        "config": {"mediaType": DMR_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [
            {"mediaType": DMR_GGUF, "digest": sha256_digest(weights), "size": len(weights),
             "annotations": {"org.cncf.model.filepath": "model.gguf"}},
            {"mediaType": "application/vnd.docker.ai.chat.template.jinja",
             "digest": sha256_digest(template), "size": len(template),
             "annotations": {"org.cncf.model.filepath": "template.jinja"}},
        ],
        "annotations": {"org.opencontainers.image.created": "2025-09-01T00:00:00Z"},
    }
    return put_manifest(registry, repo, "q4", manifest), blobs


# ------------------------------------------------------------------ real manifests
async def test_a_pushed_ollama_manifest_parses_to_its_config_and_layers(
    registry: DockerRegistry, client: OciClient
) -> None:
    model = registry.push_tiny()
    fetched = await client.fetch_manifest(model.repo, model.tag)
    assert fetched.body == model.manifest  # exactly the bytes the registry holds
    assert fetched.digest == sha256_digest(model.manifest)
    assert fetched.media_type == DOCKER_MANIFEST and not fetched.is_index
    manifest = fetched.manifest()
    assert manifest.media_type == DOCKER_MANIFEST and manifest.artifact_type is None
    assert manifest.raw == model.manifest
    assert manifest.config.digest == model.config_digest
    assert manifest.config.media_type == CONFIG_V1
    assert [layer.digest for layer in manifest.layers] == model.layer_digests
    assert all(layer.media_type.startswith(OLLAMA_LAYER_PREFIX) for layer in manifest.layers)
    assert [b.digest for b in manifest.blobs] == [model.config_digest, *model.layer_digests]
    assert {b.digest: b.size for b in manifest.blobs} == {d: len(b) for d, b in model.blobs.items()}
    assert manifest.total_size == model.total_size
    assert all(b.annotations == {} and b.platform is None for b in manifest.blobs)


async def test_an_oci_artifact_keeps_its_artifact_type_and_annotations(
    registry: DockerRegistry, client: OciClient
) -> None:
    body, blobs = push_model_artifact(registry, "ai/smollm")
    fetched = await client.fetch_manifest("ai/smollm", "q4", accept=(OCI_MANIFEST,))
    assert fetched.body == body and fetched.media_type == OCI_MANIFEST
    manifest = fetched.manifest()
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.artifact_type == CNCF_ARTIFACT
    assert manifest.annotations == {"org.opencontainers.image.created": "2025-09-01T00:00:00Z"}
    assert manifest.config.media_type == DMR_CONFIG
    assert [layer.annotations["org.cncf.model.filepath"] for layer in manifest.layers] == [
        "model.gguf", "template.jinja"
    ]
    assert {b.digest for b in manifest.blobs} == set(blobs)


async def test_an_index_is_handed_back_for_the_caller_to_decide(
    registry: DockerRegistry, client: OciClient
) -> None:
    body, _ = push_model_artifact(registry, "ai/multi")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256_digest(body), "size": len(body),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"org.opencontainers.image.ref.name": "q4"}}],
    }
    put_manifest(registry, "ai/multi", "latest", index)
    fetched = await client.fetch_manifest("ai/multi", "latest", accept=(*MANIFEST_TYPES, *INDEX_TYPES))
    assert fetched.is_index and fetched.media_type == OCI_INDEX
    (entry,) = fetched.index()
    assert entry.digest == sha256_digest(body) and entry.size == len(body)
    assert entry.platform == {"architecture": "amd64", "os": "linux"}
    assert entry.annotations == {"org.opencontainers.image.ref.name": "q4"}
    with pytest.raises(UnsafeSource, match="index"):
        fetched.manifest()
    # the entry leads to the manifest, fetched by digest
    by_digest = await client.fetch_manifest("ai/multi", entry.digest, accept=(OCI_MANIFEST,))
    assert by_digest.body == body and by_digest.digest == entry.digest


# ------------------------------------------------------------------ what is refused
def manifest_with(layer: dict[str, Any] | None = None, **top: Any) -> bytes:
    good: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": CONFIG_V1, "digest": A, "size": 10},
        "layers": [{"mediaType": OLLAMA_LAYER_PREFIX + "model", "digest": B, "size": 20, **(layer or {})}],
    }
    return json.dumps({**good, **top}).encode()


def test_a_well_formed_manifest_parses() -> None:
    manifest = parse_manifest(manifest_with())
    assert [(b.digest, b.size) for b in manifest.blobs] == [(A, 10), (B, 20)]


@pytest.mark.parametrize("layer", [
    {"digest": "sha256:../../../../etc/passwd"},
    {"digest": "sha256:" + "A" * 64},
    {"digest": "sha256:" + "g" * 64},
    {"digest": "md5:" + "a" * 32},
    {"digest": "sha512:" + "a" * 128},
    {"digest": None},
    {"size": -1},
    {"size": MAX_BLOB_SIZE + 1},
    {"size": "12"},
    {"size": 1.5},
    {"size": True},
    {"mediaType": 7},
    {"mediaType": "x" * 500},
    {"annotations": ["not", "a", "map"]},
    {"annotations": {"org.cncf.model.filepath": 5}},
    {"annotations": {"k": {"nested": "map"}}},
    {"artifactType": {"not": "a string"}},
])
def test_a_layer_that_lies_is_refused(layer: dict[str, Any]) -> None:
    with pytest.raises(UnsafeSource):
        parse_manifest(manifest_with(layer))


@pytest.mark.parametrize("body", [
    b"not json",
    b"[1, 2]",
    manifest_with(schemaVersion=1),
    manifest_with(config=None),
    manifest_with(layers={"not": "a list"}),
    manifest_with(layers=["sha256:" + "b" * 64]),
    manifest_with(annotations={"k": 1}),
    manifest_with(mediaType=OCI_INDEX),
    manifest_with(layers=[{"digest": B, "size": MAX_BLOB_SIZE}, {"digest": A, "size": MAX_BLOB_SIZE}]),
    b" " * (MAX_MANIFEST_SIZE + 1),
])
def test_a_manifest_that_is_not_one_we_can_act_on_is_refused(body: bytes) -> None:
    with pytest.raises(UnsafeSource):
        parse_manifest(body)


def test_an_index_entry_that_lies_is_refused() -> None:
    entry = {"mediaType": OCI_MANIFEST, "digest": A, "size": 100}
    assert parse_index(json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode())[0].digest == A
    for bad in ({**entry, "platform": "linux/amd64"}, {**entry, "digest": "sha256:short"},
                {**entry, "size": -5}):
        with pytest.raises(UnsafeSource):
            parse_index(json.dumps({"schemaVersion": 2, "manifests": [bad]}).encode())
    with pytest.raises(UnsafeSource):
        parse_index(json.dumps({"schemaVersion": 2, "layers": []}).encode())


def test_an_index_is_known_by_its_content_type_or_its_body() -> None:
    listing = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert is_index("application/vnd.oci.image.index.v1+json; charset=utf-8")
    assert is_index("application/vnd.docker.distribution.manifest.list.v2+json")
    assert is_index("application/json", listing)
    assert is_index(None, json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX}).encode())
    assert not is_index(DOCKER_MANIFEST, manifest_with())
    assert not is_index(None, b"not json")


def test_one_tib_in_one_layer_passes_the_parser() -> None:
    """Sizes are bounded, not small: a huge layer is the disk check's to refuse (disk_full)."""
    assert parse_manifest(manifest_with({"size": 1 << 40})).layers[0].size == 1 << 40
