"""Real model artifacts, pushed to a test docker-registry with the OCI distribution API.

Each builder uploads blobs (``POST`` an upload, ``PUT`` it with its digest),
then ``PUT``s the manifest with its media type as ``Content-Type``, and returns
a :class:`PushedArtifact`: what was pushed, and ``files``, the model folder a
correct pull must produce (relative path -> bytes) once raw layers are placed
and tar layers unpacked. Contents are a few KB so tests stay fast.

Artifacts (docs PROTOCOLS.md §8, §9):

* :func:`docker_v01_gguf` - Docker Model Runner v0.1: GGUF + mmproj + license + chat
  template, with or without layer annotations (older builds had none);
* :func:`docker_v01_split_gguf` - v0.1 with a GGUF split in three shards;
* :func:`docker_v02_safetensors` - v0.2: one layer per file, nested paths;
* :func:`modelpack_artifact` - CNCF ModelPack: raw, tar, tar+gzip and tar+zstd layers;
* :func:`kitops_modelkit` - a KitOps ModelKit in its own types (``legacy``: as
  KitOps before 0.5 packed it, tar paths relative to each entry's folder);
* :func:`kitops_modelpack` - KitOps' ModelPack form (Kitfile in a manifest annotation);
* :func:`image_index` - an OCI image index over two platforms;
* :func:`container_image` - a plain container image (not a model);
* :func:`hostile_modelpack` / :func:`hostile_tar` - tar layers with one trick each
  (:data:`HOSTILE_TARS`);
* :func:`mismatched_manifest` - a manifest served with a ``Docker-Content-Digest``
  (and under a digest) it does not have, through a :class:`RegistryFront`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import struct
import tarfile
from dataclasses import dataclass, field
from typing import Any, Literal

import zstandard

from .registry import DockerRegistry, RegistryFront, _http, sha256_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
DOCKER_V02 = "application/vnd.docker.ai.model.config.v0.2+json"
GGUF = "application/vnd.docker.ai.gguf.v3"
SAFETENSORS = "application/vnd.docker.ai.safetensors"
MMPROJ = "application/vnd.docker.ai.mmproj"
LICENSE = "application/vnd.docker.ai.license"
TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"
MODEL_FILE = "application/vnd.docker.ai.model.file"
MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
KITOPS_ARTIFACT = "application/vnd.kitops.modelkit.manifest.v1+json"
KITOPS_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"
FILEPATH = "org.cncf.model.filepath"
KITFILE = "ml.kitops.modelkit.kitfile"

Compression = Literal["none", "gzip", "zstd"]
_names = itertools.count(1)


@dataclass
class Layer:
    """A layer to push: media type, bytes, annotations."""

    media_type: str
    content: bytes
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256_digest(self.content)


@dataclass
class PushedArtifact:
    """An artifact in the registry, and the model folder a pull must produce."""

    repo: str
    tag: str
    manifest: bytes
    media_type: str
    config: bytes
    blobs: dict[str, bytes]
    files: dict[str, bytes]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def manifest_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.manifest)
        return data

    @property
    def reference(self) -> str:
        return f"{self.repo}:{self.tag}"


# -- pushing ---------------------------------------------------------------------------


def push_artifact(
    registry: DockerRegistry,
    repo: str,
    tag: str,
    config_media_type: str,
    config: bytes,
    layers: list[Layer],
    *,
    files: dict[str, bytes] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> PushedArtifact:
    """Upload the config and layers, then the OCI manifest naming them."""
    blobs = {registry.push_blob(repo, config): config}
    for layer in layers:
        blobs[registry.push_blob(repo, layer.content)] = layer.content
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    manifest["config"] = {"mediaType": config_media_type, "digest": sha256_digest(config), "size": len(config)}
    manifest["layers"] = [_descriptor(layer) for layer in layers]
    if annotations:
        manifest["annotations"] = annotations
    body = json.dumps(manifest, indent=2).encode()
    put_manifest(registry, repo, tag, body, OCI_MANIFEST)
    return PushedArtifact(repo, tag, body, OCI_MANIFEST, config, blobs, dict(files or {}))


def put_manifest(registry: DockerRegistry, repo: str, reference: str, body: bytes, media_type: str) -> None:
    status, _, _ = _http(
        "PUT", f"{registry.url}/v2/{repo}/manifests/{reference}", body, {"Content-Type": media_type}
    )
    assert status == 201, status


def _descriptor(layer: Layer) -> dict[str, Any]:
    descriptor: dict[str, Any] = {"mediaType": layer.media_type, "digest": layer.digest, "size": len(layer.content)}
    if layer.annotations:
        descriptor["annotations"] = layer.annotations
    return descriptor


def fresh_repo(prefix: str) -> str:
    return f"{prefix}/model{next(_names)}"


# -- contents ---------------------------------------------------------------------------


def fake_gguf(size: int = 4096) -> bytes:
    """Bytes that start like a GGUF v3 file (magic, version), then noise."""
    return b"GGUF" + struct.pack("<I", 3) + os.urandom(size - 8)


def fake_safetensors(size: int = 2048) -> bytes:
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    return struct.pack("<Q", len(header)) + header + os.urandom(size)


def tar_bytes(entries: dict[str, bytes | None], compression: Compression = "none") -> bytes:
    """A tar of ``entries`` (path -> content, None for a folder), sorted, constant metadata."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            content = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return compress(buffer.getvalue(), compression)


def compress(data: bytes, compression: Compression) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def file_annotations(path: str, content: bytes) -> dict[str, str]:
    """The three annotations current Docker Model Runner and ModelPack tools put on a file layer."""
    metadata = {"name": path.rsplit("/", 1)[-1], "mode": 0o644, "uid": 0, "gid": 0, "size": len(content),
                "mtime": "2025-01-01T00:00:00Z", "typeflag": 0}
    return {
        FILEPATH: path,
        "org.cncf.model.file.metadata+json": json.dumps(metadata, separators=(",", ":")),
        "org.cncf.model.file.mediatype.untested": "false",
    }


def docker_config(fmt: str, layers: list[Layer], **extra: Any) -> bytes:
    """A Docker model config (v0.1 and v0.2 share it): config, descriptor, rootfs."""
    config = {"format": fmt, "quantization": "Q4_K_M", "parameters": "1.2M", "architecture": "llama",
              "size": "12KB", **extra}
    return json.dumps(
        {
            "config": config,
            "descriptor": {"created": "2025-01-01T00:00:00Z"},
            "rootfs": {"type": "rootfs", "diff_ids": [layer.digest for layer in layers]},
        }
    ).encode()


def modelpack_config(fmt: str, diff_ids: list[str]) -> bytes:
    return json.dumps(
        {
            "descriptor": {"createdAt": "2025-01-01T00:00:00Z", "name": "tiny", "family": "llama"},
            "config": {"format": fmt, "paramSize": "1M", "architecture": "llama"},
            "modelfs": {"type": "layers", "diffIds": diff_ids},
        }
    ).encode()


# -- Docker Model Runner ---------------------------------------------------------------------------


def docker_v01_gguf(registry: DockerRegistry, annotated: bool = False, tag: str = "Q4_K_M") -> PushedArtifact:
    """v0.1: GGUF weights, mmproj, license, chat template (no annotations, as older builds)."""
    weights, projector = fake_gguf(), fake_gguf(2048)
    license_text, template = b"Apache License 2.0 (test)\n", b"{{ messages }}\n"
    named = {"tiny-Q4_K_M.gguf": weights, "mmproj-tiny-F16.gguf": projector, "LICENSE.txt": license_text,
             "template.jinja": template}
    kinds = [GGUF, MMPROJ, LICENSE, TEMPLATE]
    layers = [
        Layer(kind, content, file_annotations(name, content) if annotated else {})
        for kind, (name, content) in zip(kinds, named.items())
    ]
    files = named if annotated else {"model.gguf": weights, "model.mmproj": projector,
                                     "LICENSE": license_text, "template.jinja": template}
    return push_artifact(registry, fresh_repo("ai"), tag, DOCKER_V01, docker_config("gguf", layers), layers,
                         files=files)


def docker_v01_split_gguf(registry: DockerRegistry, annotated: bool = True) -> PushedArtifact:
    """v0.1: one model split in three GGUF shards, in order."""
    shards = [fake_gguf(3000 + i) for i in range(3)]
    names = [f"tiny-Q8_0-{i:05d}-of-00003.gguf" for i in range(1, 4)]
    layers = [Layer(GGUF, s, file_annotations(n, s) if annotated else {}) for n, s in zip(names, shards)]
    if not annotated:
        names = [f"model-{i:05d}-of-00003.gguf" for i in range(1, 4)]
    return push_artifact(registry, fresh_repo("ai"), "Q8_0", DOCKER_V01, docker_config("gguf", layers), layers,
                         files=dict(zip(names, shards)))


def docker_v02_safetensors(registry: DockerRegistry) -> PushedArtifact:
    """v0.2: one layer per file with its relative path, nested folders included."""
    files = {
        "model.safetensors": fake_safetensors(),
        "text_encoder/model.safetensors": fake_safetensors(1024),
        "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
        "tokenizer/tokenizer.json": b'{"version": "1.0"}',
        "chat_template.jinja": b"{{ messages }}",
        "LICENSE": b"MIT (test)\n",
    }
    kinds = {"model.safetensors": SAFETENSORS, "text_encoder/model.safetensors": SAFETENSORS,
             "chat_template.jinja": TEMPLATE, "LICENSE": LICENSE}
    layers = [Layer(kinds.get(path, MODEL_FILE), content, file_annotations(path, content))
              for path, content in files.items()]
    return push_artifact(registry, fresh_repo("ai"), "latest", DOCKER_V02,
                         docker_config("safetensors", layers), layers, files=files)


# -- CNCF ModelPack and KitOps --------------------------------------------------------------------


def modelpack_artifact(registry: DockerRegistry) -> PushedArtifact:
    """ModelPack: raw weights, tar+gzip weight config, tar+zstd docs, plain tar code."""
    weights = fake_safetensors()
    config_files: dict[str, bytes | None] = {"config.json": b'{"model_type": "llama"}',
                                             "tokenizer.json": b'{"version": "1.0"}'}
    docs: dict[str, bytes | None] = {"README.md": b"# tiny\n", "LICENSE": b"Apache-2.0 (test)\n"}
    code: dict[str, bytes | None] = {"scripts": None, "scripts/run.py": b"print('hi')\n"}
    tars = [
        ("application/vnd.cncf.model.weight.config.v1.tar+gzip", config_files, "gzip", "config.json"),
        ("application/vnd.cncf.model.doc.v1.tar+zstd", docs, "zstd", "README.md"),
        ("application/vnd.cncf.model.code.v1.tar", code, "none", "scripts"),
    ]
    layers = [Layer("application/vnd.cncf.model.weight.v1.raw", weights, file_annotations("model.safetensors", weights))]
    diff_ids = [sha256_digest(weights)]
    for media_type, entries, compression, path in tars:
        plain = tar_bytes(entries)
        diff_ids.append(sha256_digest(plain))
        layers.append(Layer(media_type, compress(plain, compression), {FILEPATH: path}))  # type: ignore[arg-type]
    files = {"model.safetensors": weights}
    for _, entries, _, _ in tars:
        files.update({k: v for k, v in entries.items() if v is not None})
    return push_artifact(registry, fresh_repo("modelpack"), "v1", MODELPACK_CONFIG,
                         modelpack_config("safetensors", diff_ids), layers, files=files,
                         artifact_type=MODELPACK_ARTIFACT)


def _kitfile(entries: dict[str, Layer | None], legacy: bool) -> dict[str, Any]:
    def info(layer: Layer | None) -> dict[str, str]:
        return {} if legacy or layer is None else {"digest": layer.digest, "diffId": layer.digest}

    return {
        "manifestVersion": "1.0.0",
        "package": {"name": "tiny", "version": "1.0.0", "authors": ["modelpull tests"]},
        "model": {"name": "tiny", "path": "models/tiny.gguf", "format": "gguf",
                  "parts": [{"path": "models/tokenizer.json", **info(entries.get("modelpart"))}],
                  **info(entries.get("model"))},
        "docs": [{"path": "README.md", **info(entries.get("docs"))}],
        "code": [{"path": "src", **info(entries.get("code"))}],
    }


def kitops_modelkit(registry: DockerRegistry, legacy: bool = False) -> PushedArtifact:
    """A ModelKit in KitOps' own types: tar layers (one gzip), Kitfile as config.

    ``legacy``: as KitOps before 0.5 packed it - Kitfile entries without layer
    digests, tar paths relative to the folder of each entry's ``path``.
    """
    weights, tokenizer = fake_gguf(), b'{"version": "1.0"}'
    readme, script = b"# tiny ModelKit\n", b"print('hi')\n"
    if legacy:
        model_tar = tar_bytes({"tiny.gguf": weights})
        part_tar = tar_bytes({"tokenizer.json": tokenizer}, "gzip")
        code_tar = tar_bytes({"src": None, "src/run.py": script})
    else:
        model_tar = tar_bytes({"models": None, "models/tiny.gguf": weights})
        part_tar = tar_bytes({"models/tokenizer.json": tokenizer}, "gzip")
        code_tar = tar_bytes({"src": None, "src/run.py": script})
    layers = {
        "model": Layer("application/vnd.kitops.modelkit.model.v1.tar", model_tar),
        "modelpart": Layer("application/vnd.kitops.modelkit.modelpart.v1.tar+gzip", part_tar),
        "code": Layer("application/vnd.kitops.modelkit.code.v1.tar", code_tar),
        "docs": Layer("application/vnd.kitops.modelkit.docs.v1.tar", tar_bytes({"README.md": readme})),
    }
    config = json.dumps(_kitfile(dict(layers), legacy)).encode()
    files = {"models/tiny.gguf": weights, "models/tokenizer.json": tokenizer, "README.md": readme,
             "src/run.py": script}
    return push_artifact(registry, fresh_repo("kitops"), "latest", KITOPS_CONFIG, config, list(layers.values()),
                         files=files, artifact_type=KITOPS_ARTIFACT,
                         annotations={"ml.kitops.modelkit.cli-version": "1.9.0"})


def kitops_modelpack(registry: DockerRegistry) -> PushedArtifact:
    """KitOps' ModelPack form (``kit pack --use-model-pack``): CNCF types, Kitfile in an annotation."""
    weights, tokenizer, readme = fake_gguf(), b'{"version": "1.0"}', b"# tiny\n"
    weight_layer = Layer("application/vnd.cncf.model.weight.v1.raw", weights,
                         file_annotations("models/tiny.gguf", weights))
    part_tar = tar_bytes({"models/tokenizer.json": tokenizer}, "gzip")
    part_layer = Layer("application/vnd.cncf.model.weight.config.v1.tar+gzip", part_tar,
                       {FILEPATH: "models/tokenizer.json"})
    doc_layer = Layer("application/vnd.cncf.model.doc.v1.tar", tar_bytes({"README.md": readme}),
                      {FILEPATH: "README.md"})
    layers = [weight_layer, part_layer, doc_layer]
    kitfile = _kitfile({"model": weight_layer, "modelpart": part_layer, "docs": doc_layer}, legacy=False)
    kitfile.pop("code")
    config = modelpack_config("gguf", [weight_layer.digest, sha256_digest(tar_bytes({"models/tokenizer.json": tokenizer})),
                                       doc_layer.digest])
    return push_artifact(registry, fresh_repo("kitops"), "modelpack", MODELPACK_CONFIG, config, layers,
                         files={"models/tiny.gguf": weights, "models/tokenizer.json": tokenizer, "README.md": readme},
                         artifact_type=MODELPACK_ARTIFACT,
                         annotations={KITFILE: json.dumps(kitfile), "ml.kitops.modelkit.cli-version": "1.10.0"})


# -- not (one) model --------------------------------------------------------------------------------


@dataclass
class PushedIndex:
    repo: str
    tag: str
    body: bytes
    entries: list[tuple[str, PushedArtifact]]  # (platform, manifest)


def image_index(registry: DockerRegistry) -> PushedIndex:
    """An OCI image index over two platforms, each a v0.1 GGUF model in the same repository."""
    repo = fresh_repo("ai")
    entries = []
    descriptors = []
    for arch in ("amd64", "arm64"):
        layers = [Layer(GGUF, fake_gguf(1024), {})]
        pushed = push_artifact(registry, repo, f"only-{arch}", DOCKER_V01, docker_config("gguf", layers), layers,
                               files={"model.gguf": layers[0].content})
        entries.append((f"linux/{arch}", pushed))
        descriptors.append({"mediaType": OCI_MANIFEST, "digest": pushed.digest, "size": len(pushed.manifest),
                            "platform": {"os": "linux", "architecture": arch}})
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}).encode()
    put_manifest(registry, repo, "latest", body, OCI_INDEX)
    return PushedIndex(repo, "latest", body, entries)


def container_image(registry: DockerRegistry) -> PushedArtifact:
    """A plain container image: OCI image config, one tar+gzip filesystem layer."""
    rootfs = tar_bytes({"bin": None, "bin/hello": b"#!/bin/sh\necho hi\n"})
    layer = Layer("application/vnd.oci.image.layer.v1.tar+gzip", compress(rootfs, "gzip"))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/hello"]},
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(rootfs)]}}).encode()
    return push_artifact(registry, fresh_repo("library"), "latest", "application/vnd.oci.image.config.v1+json",
                         config, [layer])


# -- hostile tars --------------------------------------------------------------------------------

#: each trick a tar layer can play; every one must be refused as unsafe_source
HOSTILE_TARS = ("absolute", "dotdot", "symlink", "hardlink", "device", "fifo", "duplicate", "below_file")


def hostile_tar(kind: str, compression: Compression = "none", target_name: str = "escaped.txt") -> bytes:
    """A tar whose one bad entry tries ``kind``, after a harmless first entry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "ok.txt", b"harmless\n")
        if kind == "absolute":
            _add(tar, f"/tmp/{target_name}", b"owned\n")
        elif kind == "dotdot":
            _add(tar, f"sub/../../{target_name}", b"owned\n")
        elif kind in ("symlink", "hardlink"):
            info = tarfile.TarInfo("link")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd" if kind == "symlink" else "ok.txt"
            tar.addfile(info)
            if kind == "symlink":
                _add(tar, "link/escaped.txt", b"owned\n")  # writing through the link
        elif kind == "device":
            info = tarfile.TarInfo("null")
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
        elif kind == "fifo":
            info = tarfile.TarInfo("pipe")
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
        elif kind == "duplicate":
            _add(tar, "ok.txt", b"second copy\n")
        elif kind == "below_file":
            _add(tar, "ok.txt/inner.txt", b"below a file\n")
        else:
            raise ValueError(kind)
    return compress(buffer.getvalue(), compression)


def _add(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(content), 0o644
    tar.addfile(info, io.BytesIO(content))


def hostile_modelpack(registry: DockerRegistry, kind: str) -> PushedArtifact:
    """A ModelPack artifact whose one tar layer plays ``kind`` (see :data:`HOSTILE_TARS`)."""
    weights = fake_safetensors(512)
    bad = hostile_tar(kind, "gzip")
    layers = [
        Layer("application/vnd.cncf.model.weight.v1.raw", weights, file_annotations("model.safetensors", weights)),
        Layer("application/vnd.cncf.model.weight.config.v1.tar+gzip", bad, {FILEPATH: "config"}),
    ]
    config = modelpack_config("safetensors", [sha256_digest(weights), sha256_digest(gzip.decompress(bad))])
    return push_artifact(registry, fresh_repo("hostile"), kind.replace("_", "-"), MODELPACK_CONFIG, config, layers,
                         artifact_type=MODELPACK_ARTIFACT)


# -- a registry that lies about a manifest ---------------------------------------------------------


@dataclass
class MismatchedManifest:
    """A pushed model, and the bytes a lying front serves in place of its manifest."""

    pushed: PushedArtifact
    served: bytes

    def apply(self, front: RegistryFront) -> None:
        """Make ``front`` serve the altered bytes under the tag and the real digest, claiming the real digest."""
        for reference in (self.pushed.tag, self.pushed.digest):
            path = f"/v2/{self.pushed.repo}/manifests/{reference}"
            front.overrides[path] = (OCI_MANIFEST, self.served)
            front.override_headers[path] = {"Docker-Content-Digest": self.pushed.digest}


def mismatched_manifest(registry: DockerRegistry) -> MismatchedManifest:
    """A v0.1 model whose manifest, as served, has one layer size changed (same length, other digest)."""
    pushed = docker_v01_gguf(registry)
    data = pushed.manifest_json
    data["layers"][0]["size"] += 1
    served = json.dumps(data, indent=2).encode()
    assert hashlib.sha256(served).hexdigest() != pushed.digest.split(":")[1]
    return MismatchedManifest(pushed, served)
