"""Models as OCI artifacts: Docker Model Runner, CNCF ModelPack and KitOps models from any registry.

``download_model("oci", "ai/smollm2")`` resolves the reference as Docker Model
Runner does, fetches the manifest and config through
:class:`modelpull._oci.OciClient`, decides the format from them alone
(:func:`modelpull._oci.artifacts.describe_artifact`), moves every layer through
the transfer engine (parallel ranged parts, resume, sha256 verification) and
publishes the model:

* by default into Docker Model Runner's store (``models_dir``, else
  ``$MODELS_PATH``, else ``~/.docker/models``): blobs first, then the runtime
  bundle (tar layers are unpacked there, after their digest is verified and
  every entry checked), then the manifest and the ``models.json`` entry with its
  tag, so ``docker model ls`` lists the model only once it is whole. ``path`` on
  ``COMPLETE`` is the bundle's ``model/`` folder, the folder Docker Model Runner
  hands to its runtimes;
* with ``local_dir``, into that folder instead: raw layers at their paths, tar
  layers unpacked, ready for llama.cpp or vLLM. ``path`` is the folder.

Where the reference goes (see :mod:`modelpull._oci.reference`): a name on the
default registry (Docker Hub, ``registry-1.docker.io``, tokens from
``auth.docker.io``) goes to ``base_url`` when one is given (a mirror or
pull-through cache), else to Docker Hub; a name with its own registry goes
there, whatever ``base_url`` says. Plain http only when the caller says so
(``insecure=True`` or an ``http://`` base_url). An image index is not guessed
from: the plan lists its entries in its notes and the download fails with them
listed, so the caller pulls one by digest.

``oci-layout:PATH[:NAME]`` reads an OCI image layout folder (or a ``.tar`` of
one, see :mod:`modelpull._oci.layout`) instead of a registry, with no network:
the manifest, config and blobs are copied from it and checked like any other,
and land in the same places. That is how an air-gapped machine installs what
a disk carried across (``push(…, "oci-layout:PATH")`` writes one).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from filelock import Timeout as FileLockTimeout
from yarl import URL

from .._oci import (
    DOCKER_HUB_AUTH,
    DOCKER_HUB_REGISTRY,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    FetchedManifest,
    OciClient,
    OciReference,
    digest_hex,
    parse_reference,
    registry_url,
)
from .._oci.artifacts import (
    ArtifactLayer,
    FilePlacement,
    IndexEntry,
    ModelArtifact,
    UnpackPlacement,
    describe_artifact,
    describe_index,
    index_entries,
)
from .._oci.layout import (
    REF_NAME,
    LayoutBlobs,
    LayoutReader,
    is_layout_reference,
    layout_model_name,
    parse_layout_reference,
)
from .._secrets import Secret
from .._transfer import FileTransfer, TransferEngine, present_bytes
from ..errors import (
    DiskFull,
    IncompatibleModel,
    IncompleteTransfer,
    InvalidModel,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
)
from ..plan import LocalCopy, Plan, PlanDetail, PlanItem
from ..progress import ProgressTracker
from ..stores.docker_models import (
    DockerModelStore,
    ModelFolder,
    delete_local,
    find_blob,
    list_local,
)
from ._places import scan_partials
from ._source import (
    COMMON_OPTIONS,
    TRANSFER_OPTIONS,
    LocalModel,
    Location,
    Option,
    PartialDownload,
    Place,
    Settings,
    Source,
)
from .base import Provider, bool_option

__all__ = ["DOCKER_MODELS", "DOCKER_MODELS_DIR", "OCI", "OciProvider"]

#: what we read, preferred first: model artifacts are OCI image manifests; an index is listed
ACCEPT = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST)


@dataclass
class OciPlanDetail(PlanDetail):
    ref: OciReference
    #: the manifest (or index) exactly as served, and its digest (the model id)
    manifest: bytes
    model_id: str
    config: Descriptor | None = None
    config_bytes: bytes = b""
    #: None when the reference is an image index (then ``index`` lists its entries)
    artifact: ModelArtifact | None = None
    index: list[IndexEntry] = field(default_factory=list)
    #: each blob to fetch once, in manifest order, and its plan item's name
    layers: list[ArtifactLayer] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)


class OciProvider(Provider):
    """A model artifact from an OCI registry into Docker Model Runner's store or a folder."""

    name = "oci"

    def __init__(self, model: str, token: Secret | None, base_url: str | None, options: dict[str, Any]) -> None:
        super().__init__(model, token, base_url, options)
        self.layout = parse_layout_reference(model) if is_layout_reference(model) else None
        self.ref = self._layout_ref() if self.layout is not None else parse_reference(model)
        self._reader: LayoutReader | None = None
        self.insecure = bool_option(self.opts, "insecure")
        models_dir, local_dir = _folder_option(self.opts, "models_dir"), _folder_option(self.opts, "local_dir")
        if models_dir and local_dir:
            raise InvalidOption("give models_dir (Docker Model Runner's store) or local_dir (a plain folder), not both")
        self.store = DockerModelStore(models_dir)
        self.folder = ModelFolder(local_dir) if local_dir else None
        host = self.ref.registry_host
        self.registry: URL = registry_url(
            host, default_host=host if self.ref.default_domain else "", base_url=base_url, insecure=self.insecure
        )
        self._client: OciClient | None = None

    @property
    def client(self) -> OciClient:
        if self._client is None:
            # Docker Hub's registry sends its clients to its token service on another host.
            realm_hosts = (DOCKER_HUB_AUTH,) if self.registry.host == DOCKER_HUB_REGISTRY else ()
            self._client = OciClient(self.session, self.registry, self.policy, self.token, realm_hosts)
        return self._client

    # -- what is on disk ------------------------------------------------------
    async def local_copy(self) -> LocalCopy | None:
        """The model in Docker Model Runner's store (by tag, or by digest: then pinned)."""
        if self.folder is not None:
            return None
        try:
            stored = await asyncio.to_thread(self.store.read_model, self.model)
        except (ModelpullError, OSError):
            return None
        items = []
        for blob in stored.blobs:
            here = self.store.has_blob(blob.digest, blob.size)
            items.append(PlanItem(
                "config" if blob is stored.blobs[0] else f"layer {digest_hex(blob.digest)[:12]}", blob.size,
                blob.digest, local=here, present_bytes=blob.size if here else 0,
                kind="config" if blob is stored.blobs[0] else "layer",
            ))
        folder = self.store.model_folder(stored.id)
        if not folder.is_dir():  # the runtime view is part of a complete copy
            items.append(PlanItem("runtime bundle", 0, None, local=False))
        plan = Plan(self.name, self.ref.short, items, destination=str(folder), revision=self.ref.digest or self.ref.tag)
        return LocalCopy(plan, str(folder), stored.manifest_path.stat().st_mtime, pinned=self.ref.digest is not None)

    # -- plan --------------------------------------------------------------
    async def plan(self) -> Plan:
        fetched = await self._fetch_manifest()
        ref = self.ref
        model_id = fetched.digest
        if fetched.is_index:
            return self._index_plan(fetched)
        manifest = fetched.manifest()
        config = await self._config(manifest.config)
        artifact = describe_artifact(json.loads(manifest.raw), config)
        detail = OciPlanDetail(ref, manifest.raw, model_id, manifest.config, config, artifact)
        items = [self._config_item(detail)]
        notes = [f"format: {artifact.format.value}" + (f", {artifact.model_format} weights" if artifact.model_format
                                                        else "")]
        for layer in artifact.layers:
            if layer.digest in detail.keys:
                notes.append(f"layer {layer.digest} is named twice; fetched once ({_where(layer)})")
                continue
            if self.folder is not None and layer.placement is None:
                notes.append(f"layer {layer.digest} ({layer.media_type}) names no file path: not fetched into "
                             "local_dir (Docker Model Runner's store keeps such layers)")
                continue
            key = _unique(_label(layer), detail.keys.values(), layer.digest)
            detail.keys[layer.digest] = key
            detail.layers.append(layer)
            present = self._present(layer, key)
            items.append(PlanItem(key, layer.size, layer.digest, local=present == layer.size,
                                  present_bytes=present, kind="layer"))
            notes.append(f"{key}: {layer.media_type or 'no media type'}, {_where(layer)}")
        if self.folder is not None:
            self._check_folder_layers(artifact)
        notes.extend(artifact.notes)
        notes.extend(self._registry_notes())
        return Plan(
            self.name, ref.short, items,
            destination=str(self._destination(model_id)),
            revision=ref.digest or ref.tag, notes=notes, detail=detail,
        )

    def _index_plan(self, fetched: FetchedManifest) -> Plan:
        fetched.index()  # every entry checked before any is shown
        raw = json.loads(fetched.body).get("manifests")
        entries = index_entries(raw if isinstance(raw, list) else [])
        detail = OciPlanDetail(self.ref, fetched.body, fetched.digest, index=entries)
        count = f"{len(entries)} manifest{'s' if len(entries) != 1 else ''}"
        notes = [f"{self.ref.short} is an image index of {count}, not one model; pull one of them by digest:"]
        notes.extend(
            f"{self.ref.name}@{entry.digest} ({entry.platform or 'no platform'}, "
            f"{entry.artifact_type or entry.media_type or 'no media type'})"
            for entry in entries
        )
        notes.extend(self._registry_notes())
        return Plan(self.name, self.ref.short, [], destination=None, revision=self.ref.digest or self.ref.tag,
                    notes=notes, detail=detail)

    def _index_message(self, detail: OciPlanDetail) -> str:
        return (
            f"{self.ref.short} on {self.registry} is an image index, not one model: it lists "
            f"{describe_index(detail.index)}. Pull one of them by digest ({self.ref.name}@sha256:…)"
        )

    def _registry_notes(self) -> list[str]:
        if self.base_url and not self.ref.default_domain:
            return [f"base_url is ignored: the name names its own registry {self.ref.domain}"]
        return []

    async def _config(self, config: Descriptor) -> bytes:
        """The config blob: from the destination when it is there (and intact), else from the registry."""
        local = self.store.blob_path(config.digest) if self.folder is None else self.folder.blob_path(config.digest)
        try:
            data = local.read_bytes()
        except OSError:
            data = b""
        if len(data) == config.size and "sha256:" + hashlib.sha256(data).hexdigest() == config.digest:
            return data
        if self.layout is not None:
            return self._layout_reader().read_blob(config.digest)
        return await self.client.fetch_blob(self.ref.repository, config, name=self.ref.short)

    def _config_item(self, detail: OciPlanDetail) -> PlanItem:
        assert detail.config is not None
        config = detail.config
        key = f"config {digest_hex(config.digest)[:12]}"
        detail.keys[config.digest] = key
        present = config.size if self._has_config(config) else 0
        return PlanItem(key, config.size, config.digest, local=present == config.size, present_bytes=present,
                        kind="config")

    def _has_config(self, config: Descriptor) -> bool:
        if self.folder is not None:
            return self.folder.has_blob(config.digest, config.size)
        return self.store.has_blob(config.digest, config.size)

    def _present(self, layer: ArtifactLayer, key: str) -> int:
        if self.folder is not None and self.folder.has_layer(layer):
            return layer.size
        return present_bytes(self._transfer(layer, key))

    def _check_folder_layers(self, artifact: ModelArtifact) -> None:
        raw = {layer.digest for layer in artifact.layers if isinstance(layer.placement, FilePlacement)}
        tar = {layer.digest for layer in artifact.layers if isinstance(layer.placement, UnpackPlacement)}
        if raw & tar:
            raise IncompatibleModel(
                f"{self.ref.short} uses one blob both as a file and as a tar archive ({min(raw & tar)}); "
                "it cannot be laid out in a folder. Pull it into Docker Model Runner's store instead"
            )

    def _destination(self, model_id: str) -> Path:
        return self.folder.root if self.folder is not None else self.store.model_folder(model_id)

    def _transfer(self, layer: ArtifactLayer, key: str) -> FileTransfer:
        url = self.client.blob_url(self.ref.repository, layer.digest)
        owner = {"provider": self.name, "model": self.ref.short}
        if self.folder is None:
            return FileTransfer(url=url, dest=self.store.blob_path(layer.digest), size=layer.size,
                                digest=layer.digest, key=key, partial=self.store.partial_path(layer.digest),
                                lock=self.store.lock_path(layer.digest), owner=owner,
                                copies=self.copies_elsewhere(layer.digest, layer.size))
        if isinstance(layer.placement, FilePlacement):
            # Straight to its place; what is there already counts only when the folder's notes vouch for it.
            return FileTransfer(url=url, dest=self.folder.file_path(layer.placement.path), size=layer.size,
                                digest=layer.digest, key=key, partial=self.folder.partial_path(layer.digest),
                                lock=self.folder.lock_path(layer.digest), trust_existing=False, owner=owner)
        return FileTransfer(url=url, dest=self.folder.blob_path(layer.digest), size=layer.size,
                            digest=layer.digest, key=key, partial=self.folder.partial_path(layer.digest),
                            lock=self.folder.lock_path(layer.digest), owner=owner)

    # -- fetch -------------------------------------------------------------
    async def fetch(self, plan: Plan, tracker: ProgressTracker) -> str:
        detail = plan.detail
        assert isinstance(detail, OciPlanDetail)
        if detail.artifact is None:
            raise IncompatibleModel(self._index_message(detail))
        assert detail.config is not None
        engine: Any = LayoutBlobs(self._layout_reader(), tracker) if self.layout is not None else TransferEngine(
            self.session, self.policy, tracker, auth=self.client.auth,
            error_for_response=partial(self.client.error_for_response, name=self.ref.short),
        )
        where = self.folder.root if self.folder is not None else self.store.root
        try:
            if self.folder is None:
                return await self._fetch_into_store(detail, detail.artifact, detail.config, tracker, engine)
            return await self._fetch_into_folder(detail, detail.artifact, detail.config, tracker, engine)
        except FileLockTimeout:
            raise IncompleteTransfer(
                f"another process kept {where} locked for too long while {self.ref.short} was being "
                "published; run the download again"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(
                    f"the disk filled while laying out {self.ref.short} in {where}; free some space and run "
                    "the download again"
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
                option = "local_dir" if self.folder is not None else "models_dir"
                raise InvalidOption(
                    f"cannot write {self.ref.short} into {where} ({os.strerror(exc.errno)}); choose a folder "
                    f"you can write to with {option}"
                ) from None
            raise

    async def _fetch_into_store(
        self, detail: OciPlanDetail, artifact: ModelArtifact, config: Descriptor,
        tracker: ProgressTracker, engine: TransferEngine | LayoutBlobs,
    ) -> str:
        store = self.store
        store.ensure_layout()  # Docker Model Runner writes layout.json and models.json before any blob
        if not store.has_blob(config.digest, config.size):
            store.write_blob(config.digest, detail.config_bytes)
        tracker.update(detail.keys[config.digest], config.size)
        await engine.fetch_all(self._transfer(layer, detail.keys[layer.digest]) for layer in detail.layers)
        if any(not store.has_blob(layer.digest, layer.size) for layer in detail.layers):
            raise self._vanished()
        self._say_unpacking(tracker, detail, artifact)
        tags = [tag for tag in (self.ref.stored_tag,) if tag is not None]

        def publish() -> Path:
            # The runtime view first: a tar layer refused there leaves the model unlisted.
            try:
                folder = store.build_bundle(detail.model_id, artifact, detail.config_bytes)
                store.write_model(detail.manifest, tags)
            except RuntimeError:  # a blob missing after all: another process removed a model using it
                raise self._vanished() from None
            return folder

        return str(await asyncio.to_thread(publish))

    def _vanished(self) -> ModelNotFound:
        return ModelNotFound(
            f"a blob of {self.ref.short} vanished from {self.store.blobs} during the pull (another process "
            "removed a model using it); run the download again"
        )

    async def _fetch_into_folder(
        self, detail: OciPlanDetail, artifact: ModelArtifact, config: Descriptor,
        tracker: ProgressTracker, engine: TransferEngine | LayoutBlobs,
    ) -> str:
        folder = self.folder
        assert folder is not None
        if not folder.has_blob(config.digest, config.size):
            folder.write_blob(config.digest, detail.config_bytes)
        tracker.update(detail.keys[config.digest], config.size)
        wanted = [layer for layer in detail.layers if not folder.has_layer(layer)]
        for layer in detail.layers:
            if layer not in wanted:
                tracker.update(detail.keys[layer.digest], layer.size)
        await engine.fetch_all(self._transfer(layer, detail.keys[layer.digest]) for layer in wanted)
        fetched = {layer.digest for layer in wanted if isinstance(layer.placement, FilePlacement)}
        self._say_unpacking(tracker, detail, artifact)
        return str(await asyncio.to_thread(folder.lay_out, artifact, fetched))

    @staticmethod
    def _say_unpacking(tracker: ProgressTracker, detail: OciPlanDetail, artifact: ModelArtifact) -> None:
        tars = [detail.keys[layer.digest] for layer in artifact.layers
                if isinstance(layer.placement, UnpackPlacement) and layer.digest in detail.keys]
        if tars:
            tracker.verifying = f"{tars[0]}{' and the other tar layers' if len(tars) > 1 else ''} (checking " \
                                "every entry while unpacking)"

    def space_needed(self, plan: Plan) -> list[tuple[Path, int]]:
        detail = plan.detail
        if not isinstance(detail, OciPlanDetail) or detail.artifact is None:
            return []
        # Tar layers take their unpacked size again in the model folder (at least their own size).
        unpacked = sum(layer.size for layer in detail.layers if isinstance(layer.placement, UnpackPlacement))
        if self.folder is not None:
            return [(self.folder.root, plan.missing_bytes + unpacked)]
        if self.store.model_folder(detail.model_id).is_dir():
            unpacked = 0
        return [(self.store.root, plan.missing_bytes + unpacked)]

    def starting_message(self, plan: Plan) -> str:
        detail = plan.detail
        if isinstance(detail, OciPlanDetail) and detail.artifact is None:
            return self._index_message(detail)
        return f"Pulling {self.ref.short} from {self.layout or self.registry}: {plan.summary()}"

    def progress_message(self, tracker: ProgressTracker) -> str:
        if tracker.current:
            return f"Pulling {self.ref.short}: {tracker.current}"
        return f"Pulling {self.ref.short}"

    # -- an OCI layout on disk instead of a registry ------------------------------------
    def _layout_ref(self) -> OciReference:
        """The name a model read from a layout is known (and tagged) by; see :func:`layout_model_name`."""
        assert self.layout is not None
        try:
            return parse_reference(layout_model_name(self.layout.ref, self.layout.path))
        except InvalidModel:
            return parse_reference(layout_model_name(None, self.layout.path))

    def _layout_reader(self) -> LayoutReader:
        assert self.layout is not None
        if self._reader is None:
            self._reader = LayoutReader(self.layout)
        return self._reader

    async def _fetch_manifest(self) -> FetchedManifest:
        """The manifest: from the registry, or from the layout's index (no network)."""
        if self.layout is None:
            ref = self.ref
            return await self.client.fetch_manifest(ref.repository, ref.reference, ACCEPT, name=ref.short)
        reader = self._layout_reader()
        entry = reader.find(self.layout.ref)
        digest = entry.get("digest")
        body = reader.read_blob(str(digest))
        if self.layout.ref is None:  # the only manifest: its own name names it
            named = (entry.get("annotations") or {}).get(REF_NAME)
            with contextlib.suppress(InvalidModel):
                self.ref = parse_reference(layout_model_name(named if isinstance(named, str) else None,
                                                             self.layout.path))
        kind = entry.get("mediaType") if isinstance(entry.get("mediaType"), str) else OCI_MANIFEST
        return FetchedManifest(body, str(kind), str(digest))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        await super().close()


def _parse_model(model: str) -> object:
    """Offline check of a reference: a registry's, or an ``oci-layout:PATH[:NAME]``."""
    return parse_layout_reference(model) if is_layout_reference(model) else parse_reference(model)


def _folder_option(options: dict[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise InvalidOption(f"option {name!r} must be a folder path, got {value!r}")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidOption(f"option {name!r} must be a folder, and {path} is a file")
    return str(value)


def _label(layer: ArtifactLayer) -> str:
    """A plan item's name: the file a raw layer becomes, else what the layer is and its digest."""
    if isinstance(layer.placement, FilePlacement):
        return layer.placement.path.as_posix()
    short = digest_hex(layer.digest)[:12]
    if isinstance(layer.placement, UnpackPlacement):
        packing = "tar" if layer.placement.compression == "none" else f"tar+{layer.placement.compression}"
        return f"{layer.role.value} {packing} {short}"
    kind = re.sub(r"[^A-Za-z0-9.+_-]", "", layer.media_type.rsplit("/", 1)[-1])[-40:] or "layer"
    return f"{kind} {short}"


def _unique(key: str, taken: Any, digest: str) -> str:
    return key if key not in set(taken) else f"{key} {digest_hex(digest)}"


def _where(layer: ArtifactLayer) -> str:
    if isinstance(layer.placement, FilePlacement):
        return f"file {layer.placement.path.as_posix()}"
    if isinstance(layer.placement, UnpackPlacement):
        into = layer.placement.folder.as_posix()
        return f"unpacked into {'the model folder' if into == '.' else into + '/'}"
    return "kept in the store only"


# -- where models land: Docker Model Runner's store ------------------------------------

DOCKER_MODELS_DIR = Location(
    "docker_models_dir", "--docker-models",
    "Docker Model Runner's model store (default MODELS_PATH or ~/.docker/models).",
)


def _list(settings: Settings) -> list[LocalModel]:
    return [
        LocalModel(
            provider="", name=str(entry["name"]), size_bytes=int(entry["size"]), source="docker-models",
            kind="OCI" + (f" · {str(entry['format']).upper()}" if entry["format"] else ""),
            path=entry["bundle"] or entry["path"], modified=entry["modified"], files=entry["layers"],
            complete=bool(entry["complete"]), format=entry["format"],
        )
        for entry in list_local(DOCKER_MODELS_DIR.value(settings))
    ]


def _delete(source: Source, model: str, settings: Settings) -> dict[str, Any]:
    result = delete_local(model, DOCKER_MODELS_DIR.value(settings))
    return {"provider": source.name, "name": result["name"], "freed_bytes": int(result["freed_bytes"]),
            "source": "docker-models"}


def same_model(a: str, b: str) -> bool:
    """Do two references name one model in the store? A tag and a digest of one repository might."""
    try:
        first, second = parse_reference(a), parse_reference(b)
    except InvalidModel:
        return False
    if (first.domain, first.repository) != (second.domain, second.repository):
        return False
    if first.digest and second.digest:
        return first.digest == second.digest
    return first.tag == second.tag or first.tag is None or second.tag is None


def _partials(settings: Settings) -> list[PartialDownload]:
    store = DockerModelStore(DOCKER_MODELS_DIR.value(settings))
    if not store.work.is_dir():
        return []
    return scan_partials(
        sorted(p for p in store.work.iterdir() if p.name.endswith(".partial")), "docker-models", "oci",
        lambda path: "?", lambda path: "layer " + path.name.removeprefix("sha256-")[:12],
    )


DOCKER_MODELS = Place(
    name="docker-models",
    title="Docker Model Runner",
    locations=(DOCKER_MODELS_DIR,),
    list=_list,
    delete=_delete,
    same_model=same_model,
    partials=_partials,
    find_blob=lambda sha256, size, settings: find_blob(sha256, size, DOCKER_MODELS_DIR.value(settings)),
)


def _build(source: Any, model: str, token: Any, base_url: str | None, options: dict[str, Any]) -> Provider:
    return OciProvider(model, token, base_url, options)


OCI = Source(
    name="oci",
    aliases=("docker",),
    title="OCI model artifact",
    summary="A Docker Model Runner, CNCF ModelPack or KitOps model from any OCI registry, into Docker Model "
            "Runner's store or a folder.",
    example="ai/smollm2",
    reference="[registry/][namespace/]name[:tag|@sha256:…] or oci-layout:PATH[:NAME]",
    parse=_parse_model,
    build=_build,
    options=(
        Option("insecure", "bool", "allow plain http to the registry", False),
        Option("models_dir", "path", "Docker Model Runner's store (default MODELS_PATH, else ~/.docker/models)"),
        Option("local_dir", "path", "lay the model's files out in this folder instead of Docker Model Runner's store"),
        *TRANSFER_OPTIONS,
        *COMMON_OPTIONS,
    ),
    base_url_help="registry mirror for names on the default registry (Docker Hub); a name with its own "
                  "registry goes there",
    place=DOCKER_MODELS,
    folder_option="models_dir",
    folder_setting=DOCKER_MODELS_DIR,
    rank=70,
)
