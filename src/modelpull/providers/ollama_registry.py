"""Pull Ollama models straight from a registry (OCI distribution v2), no Ollama server needed.

``download_model("ollama-registry", "gemma3:1b")`` resolves the name by
Ollama's rules, fetches the manifest (through :class:`modelpull._oci.OciClient`),
moves every blob through the transfer
engine (parallel ranged parts, resume, sha256 verification) and writes them
into Ollama's model store, manifest last, so an Ollama server started later
lists the model.

Where the name goes:

* a name on the default host (``registry.ollama.ai``) goes to ``base_url`` when
  one is given (a mirror or pull-through cache), else to the default host;
* a name with its own host (``127.0.0.1:5000/library/tiny:1b``) goes to that
  host, whatever ``base_url`` says;
* the scheme is https, or http when ``insecure=True`` or when the caller chose
  an ``http://`` base_url. A loopback host gets no exception: plain http is
  always the caller's explicit choice, as in Ollama itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from yarl import URL

from .._oci import (
    MANIFEST_TYPES,
    OLLAMA_LAYER_PREFIX,
    Descriptor,
    OciClient,
    digest_hex,
    parse_manifest,
)
from .._oci import registry_url as oci_registry_url
from .._secrets import Secret
from .._transfer import FileTransfer, TransferEngine, present_bytes
from ..errors import IncompatibleModel, InvalidOption, ModelNotFound, ModelpullError
from ..plan import LocalCopy, Plan, PlanDetail, PlanItem
from ..progress import ProgressTracker
from ..refs import OLLAMA_DEFAULT_HOST, OllamaName, parse_ollama_name
from ..stores.ollama_store import OllamaStore
from ._places import OLLAMA, OLLAMA_MODELS_DIR
from ._source import COMMON_OPTIONS, TRANSFER_OPTIONS, Option, Source
from .base import Provider, bool_option


@dataclass
class RegistryPlanDetail(PlanDetail):
    name: OllamaName
    registry: str
    manifest: bytes
    layers: list[Descriptor]  # the config first, each blob once
    keys: dict[str, str]  # digest -> progress key (the plan item's name)


def registry_url(name: OllamaName, base_url: str | None, insecure: bool) -> URL:
    """The registry a name is fetched from (see the module docstring)."""
    return oci_registry_url(
        name.host, default_host=OLLAMA_DEFAULT_HOST, base_url=base_url, insecure=insecure
    )


def layer_label(layer: Descriptor, is_config: bool = False) -> str:
    """A short word for a layer: ``model``, ``template``, ``params``, ``config``…"""
    if is_config:
        return "config"
    kind = layer.media_type
    kind = kind.removeprefix(OLLAMA_LAYER_PREFIX)
    kind = re.sub(r"[^A-Za-z0-9.+_-]", "", kind)[-40:]
    return kind or "layer"


class OllamaRegistryProvider(Provider):
    """Ollama models from an OCI registry into Ollama's store."""

    name = "ollama-registry"

    def __init__(self, model: str, token: Secret | None, base_url: str | None, options: dict[str, Any]) -> None:
        super().__init__(model, token, base_url, options)
        self.ref = parse_ollama_name(model)
        self.insecure = bool_option(self.opts, "insecure")
        models_dir = self.opts.get("models_dir")
        if models_dir is not None and (not isinstance(models_dir, (str, os.PathLike)) or models_dir == ""):
            raise InvalidOption(f"option 'models_dir' must be a folder path, got {models_dir!r}")
        self.store = OllamaStore(models_dir)
        self.registry = registry_url(self.ref, base_url, self.insecure)
        self._client: OciClient | None = None

    @property
    def client(self) -> OciClient:
        if self._client is None:
            self._client = OciClient(self.session, self.registry, self.policy, self.token)
        return self._client

    @property
    def repository(self) -> str:
        return f"{self.ref.namespace}/{self.ref.model}"

    # -- plan --------------------------------------------------------------
    async def plan(self) -> Plan:
        fetched = await self.client.fetch_manifest(
            self.repository, self.ref.tag, MANIFEST_TYPES, name=self.ref.short
        )
        if fetched.is_index:
            raise IncompatibleModel(
                f"{self.ref.short} on {self.registry} is a multi-platform image index, not an "
                "Ollama model"
            )
        manifest = fetched.manifest()
        items: list[PlanItem] = []
        keys: dict[str, str] = {}
        unique: list[Descriptor] = []
        for layer in manifest.blobs:
            if layer.digest in keys:
                continue  # a blob named twice is fetched and counted once
            is_config = layer is manifest.config
            key = f"{layer_label(layer, is_config)} {digest_hex(layer.digest)[:12]}"
            if key in keys.values():
                key = f"{layer_label(layer, is_config)} {digest_hex(layer.digest)}"
            keys[layer.digest] = key
            unique.append(layer)
            present = present_bytes(self._transfer(layer, key))
            items.append(
                PlanItem(
                    key, layer.size, layer.digest, local=present == layer.size,
                    present_bytes=present, kind="config" if is_config else "layer",
                )
            )
        notes = [f"{item.name}: {layer.media_type or 'no media type'}" for item, layer in zip(items, unique)]
        if self.base_url and self.ref.host != OLLAMA_DEFAULT_HOST:
            notes.append(f"base_url is ignored: the name names its own registry {self.ref.host}")
        notes += self.copies_note((i.digest, i.size or 0) for i in items if not i.local)
        return Plan(
            self.name, self.ref.short, items,
            destination=str(self.store.manifest_path(self.ref)),
            revision=self.ref.tag, notes=notes,
            detail=RegistryPlanDetail(self.ref, str(self.registry), manifest.raw, unique, keys),
        )

    def _transfer(self, layer: Descriptor, key: str) -> FileTransfer:
        return FileTransfer(
            url=self.client.blob_url(self.repository, layer.digest),
            dest=self.store.blob_path(layer.digest),
            size=layer.size,
            digest=layer.digest,
            key=key,
            partial=self.store.partial_path(layer.digest),
            lock=self.store.lock_path(layer.digest),
            owner={"provider": self.name, "model": self.ref.short},
            copies=self.copies_elsewhere(layer.digest, layer.size),
        )

    # -- what is on disk ------------------------------------------------------
    async def local_copy(self) -> LocalCopy | None:
        path = self.store.manifest_path(self.ref)
        copy = local_ollama_copy(self.name, self.ref, self.store)
        if copy is not None:
            copy.path = str(path)
        return copy

    # -- fetch -------------------------------------------------------------
    async def fetch(self, plan: Plan, tracker: ProgressTracker) -> str:
        detail = plan.detail
        assert isinstance(detail, RegistryPlanDetail)
        engine = TransferEngine(
            self.session, self.policy, tracker, auth=self.client.auth,
            error_for_response=partial(self.client.error_for_response, name=self.ref.short),
        )
        await engine.fetch_all(self._transfer(layer, detail.keys[layer.digest]) for layer in detail.layers)
        for layer in detail.layers:
            if not self.store.has_blob(layer.digest, layer.size):
                raise ModelNotFound(
                    f"blob {layer.digest[:19]}… vanished from {self.store.blobs} during the pull; "
                    "run it again"
                )
        return str(self.store.write_manifest(detail.name, detail.manifest))

    def space_needed(self, plan: Plan) -> list[tuple[Path, int]]:
        return [(self.store.root, plan.missing_bytes)]

    def starting_message(self, plan: Plan) -> str:
        return f"Pulling {self.ref.short} from {self.registry}: {plan.summary()}"

    def progress_message(self, tracker: ProgressTracker) -> str:
        if tracker.current:
            return f"Pulling {self.ref.short}: {tracker.current}"
        return f"Pulling {self.ref.short}"


def local_ollama_copy(provider: str, ref: OllamaName, store: OllamaStore) -> LocalCopy | None:
    """A model in an Ollama store, read from its manifest: every blob, and whether it is there."""
    path = store.manifest_path(ref)
    try:
        body = path.read_bytes()
        since = path.stat().st_mtime
        blobs = parse_manifest(body).blobs
    except (OSError, ModelpullError):
        return None
    items, seen = [], set()
    for blob in blobs:
        if blob.digest in seen:
            continue
        seen.add(blob.digest)
        here = store.has_blob(blob.digest, blob.size)
        items.append(PlanItem(
            f"{layer_label(blob, blob is blobs[0])} {digest_hex(blob.digest)[:12]}", blob.size, blob.digest, local=here,
            present_bytes=blob.size if here else 0, kind="config" if blob is blobs[0] else "layer",
        ))
    plan = Plan(provider, ref.short, items, destination=str(path), revision=ref.tag)
    return LocalCopy(plan, ref.short, since)


# -- the declaration -------------------------------------------------------------------
def _build(source: Any, model: str, token: Any, base_url: str | None, options: dict[str, Any]) -> Provider:
    return OllamaRegistryProvider(model, token, base_url, options)


OLLAMA_REGISTRY = Source(
    name="ollama-registry",
    title="Ollama registry",
    summary="An Ollama model straight from its registry into Ollama's store, no Ollama server needed.",
    example="gemma3:1b",
    reference="[host/][namespace/]model[:tag]",
    parse=parse_ollama_name,
    build=_build,
    options=(
        Option("insecure", "bool", "allow plain http to the registry", False),
        Option("models_dir", "path", "Ollama's models folder (default OLLAMA_MODELS, else ~/.ollama/models)"),
        *TRANSFER_OPTIONS,
        *COMMON_OPTIONS,
    ),
    base_url_help="registry mirror for names on the default host (a name with its own host goes there)",
    place=OLLAMA,
    folder_option="models_dir",
    folder_setting=OLLAMA_MODELS_DIR,
    rank=60,
)
