"""Pull Ollama models straight from a registry (OCI distribution v2), no Ollama server needed.

``download_model("ollama-registry", "gemma3:1b")`` resolves the name by
Ollama's rules, fetches the manifest, moves every blob through the transfer
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

import asyncio
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from .._secrets import Secret
from .._transfer import FileTransfer, TransferEngine, present_bytes
from .._transfer.oci_auth import RegistryAuth
from ..errors import (
    AuthRequired,
    ConnectionFailed,
    IncompatibleModel,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
    ServerError,
    TransferTimeout,
    UnsafeSource,
)
from ..plan import Plan, PlanItem
from ..progress import ProgressTracker
from ..refs import OLLAMA_DEFAULT_HOST, OllamaName, parse_ollama_name
from ..stores.ollama_store import (
    MAX_MANIFEST_SIZE,
    ManifestLayer,
    OllamaStore,
    blob_hex,
    parse_manifest,
)
from .base import TRANSFER_OPTIONS, Provider, bool_option

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
_INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
_OLLAMA_TYPE = "application/vnd.ollama.image."
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10
#: attempts at the manifest when the registry is unreachable or failing
_MANIFEST_ATTEMPTS = 3


@dataclass
class RegistryPlanDetail:
    name: OllamaName
    registry: str
    manifest: bytes
    layers: list[ManifestLayer]
    keys: dict[str, str]  # digest -> progress key (the plan item's name)


def registry_url(name: OllamaName, base_url: str | None, insecure: bool) -> URL:
    """The registry a name is fetched from (see the module docstring)."""
    if base_url and name.host == OLLAMA_DEFAULT_HOST:
        url = URL(base_url.strip())
        if url.scheme not in ("http", "https") or not url.host or url.user or url.query_string or url.fragment:
            raise InvalidOption(
                f"base_url must be http(s)://host[:port][/path] of a registry, got {base_url[:100]!r}"
            )
        return url.with_path(url.path.rstrip("/"))
    return URL(f"{'http' if insecure else 'https'}://{name.host}")


def layer_label(layer: ManifestLayer) -> str:
    """A short word for a layer: ``model``, ``template``, ``params``, ``config``…"""
    if layer.is_config:
        return "config"
    kind = layer.media_type
    kind = kind.removeprefix(_OLLAMA_TYPE)
    kind = re.sub(r"[^A-Za-z0-9.+_-]", "", kind)[-40:]
    return kind or "layer"


class OllamaRegistryProvider(Provider):
    """Ollama models from an OCI registry into Ollama's store."""

    name = "ollama-registry"
    options = frozenset({"insecure", "models_dir"}) | TRANSFER_OPTIONS

    def __init__(self, model: str, token: Secret | None, base_url: str | None, options: dict[str, Any]) -> None:
        super().__init__(model, token, base_url, options)
        self.ref = parse_ollama_name(model)
        self.insecure = bool_option(self.opts, "insecure")
        models_dir = self.opts.get("models_dir")
        if models_dir is not None and (not isinstance(models_dir, (str, os.PathLike)) or models_dir == ""):
            raise InvalidOption(f"option 'models_dir' must be a folder path, got {models_dir!r}")
        self.store = OllamaStore(models_dir)
        self.registry = registry_url(self.ref, base_url, self.insecure)
        self.auth = RegistryAuth(self.registry, token)

    # -- plan --------------------------------------------------------------
    async def plan(self) -> Plan:
        body = await self._fetch_manifest()
        layers = parse_manifest(body)
        items: list[PlanItem] = []
        keys: dict[str, str] = {}
        unique: list[ManifestLayer] = []
        for layer in layers:
            if layer.digest in keys:
                continue  # a blob named twice is fetched and counted once
            key = f"{layer_label(layer)} {blob_hex(layer.digest)[:12]}"
            if key in keys.values():
                key = f"{layer_label(layer)} {blob_hex(layer.digest)}"
            keys[layer.digest] = key
            unique.append(layer)
            present = present_bytes(self._transfer(layer, key))
            items.append(
                PlanItem(
                    key, layer.size, layer.digest, local=present == layer.size,
                    present_bytes=present, kind="config" if layer.is_config else "layer",
                )
            )
        notes = [f"{item.name}: {layer.media_type or 'no media type'}" for item, layer in zip(items, unique)]
        if self.base_url and self.ref.host != OLLAMA_DEFAULT_HOST:
            notes.append(f"base_url is ignored: the name names its own registry {self.ref.host}")
        return Plan(
            self.name, self.ref.short, items,
            destination=str(self.store.manifest_path(self.ref)),
            revision=self.ref.tag, notes=notes,
            detail=RegistryPlanDetail(self.ref, str(self.registry), body, unique, keys),
        )

    def _blob_url(self, digest: str) -> str:
        return str(self.registry / "v2" / self.ref.namespace / self.ref.model / "blobs" / digest)

    def _transfer(self, layer: ManifestLayer, key: str) -> FileTransfer:
        return FileTransfer(
            url=self._blob_url(layer.digest),
            dest=self.store.blob_path(layer.digest),
            size=layer.size,
            digest=layer.digest,
            key=key,
            partial=self.store.partial_path(layer.digest),
            lock=self.store.lock_path(layer.digest),
        )

    # -- fetch -------------------------------------------------------------
    async def fetch(self, plan: Plan, tracker: ProgressTracker) -> str:
        detail: RegistryPlanDetail = plan.detail
        engine = TransferEngine(
            self.session, self.policy, tracker, auth=self.auth,
            error_for_response=self._error_for_response,
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

    # -- the manifest ------------------------------------------------------
    def _manifest_url(self) -> URL:
        return self.registry / "v2" / self.ref.namespace / self.ref.model / "manifests" / self.ref.tag

    async def _fetch_manifest(self) -> bytes:
        for attempt in range(1, _MANIFEST_ATTEMPTS + 1):
            try:
                return await self._manifest_once()
            except (ConnectionFailed, ServerError, TransferTimeout) as exc:
                if attempt == _MANIFEST_ATTEMPTS or not exc.resumable:
                    raise
                await asyncio.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    async def _manifest_once(self) -> bytes:
        url = self._manifest_url()
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        refreshed = False
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                async with self.session.get(
                    url, headers={**headers, **self.auth.headers_for(url)}, allow_redirects=False
                ) as response:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        url = url.join(URL(response.headers["Location"], encoded=True))
                        continue
                    if response.status == 401 and not refreshed:
                        refreshed = True
                        if await self.auth.refresh(self.session, response):
                            continue
                    if response.status != 200:
                        body = (await response.content.read(4096)).decode("utf-8", "replace")
                        raise self._manifest_error(response, body)
                    return await self._read_manifest(response)
        except asyncio.TimeoutError:
            raise TransferTimeout(f"the registry {self.registry} did not answer in time") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise _final(ConnectionFailed(
                f"the TLS certificate of {self.registry} is not trusted ({exc.certificate_error}); "
                "modelpull never skips certificate checks"
            )) from None
        except aiohttp.ClientSSLError:
            raise _final(ConnectionFailed(
                f"cannot speak TLS with {self.registry}; if that registry serves plain http, "
                "pass insecure=True (-o insecure=true) or an http:// base_url"
            )) from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionFailed(
                f"cannot connect to the registry at {self.registry} ({exc.os_error}); check the "
                "name's host or base_url"
            ) from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"the request to {self.registry} failed: {type(exc).__name__}") from None
        raise ServerError(f"too many redirects fetching the manifest of {self.ref.short}")

    async def _read_manifest(self, response: aiohttp.ClientResponse) -> bytes:
        kind = response.headers.get("Content-Type", "").split(";")[0].strip()
        if kind in _INDEX_TYPES:
            raise IncompatibleModel(
                f"{self.ref.short} on {self.registry} is a multi-platform image index, not an "
                "Ollama model"
            )
        body = await response.content.read(MAX_MANIFEST_SIZE + 1)
        if len(body) > MAX_MANIFEST_SIZE:
            raise UnsafeSource(f"the manifest of {self.ref.short} is larger than {MAX_MANIFEST_SIZE} bytes")
        served = response.headers.get("Docker-Content-Digest", "")
        if served.startswith("sha256:") and served != "sha256:" + hashlib.sha256(body).hexdigest():
            raise ServerError(
                f"the manifest of {self.ref.short} does not match the digest the registry "
                "announced; the transfer was corrupted, try again"
            )
        return body

    def _manifest_error(self, response: aiohttp.ClientResponse, body: str) -> ModelpullError:
        codes = _error_codes(body)
        where = f"{self.registry}"
        if response.status in (401, 403) or codes & {"UNAUTHORIZED", "DENIED"}:
            return self._auth_error(response.status)
        if response.status == 404 or codes & {"NAME_UNKNOWN", "MANIFEST_UNKNOWN"}:
            what = f"tag {self.ref.tag!r} of " if "MANIFEST_UNKNOWN" in codes else ""
            return ModelNotFound(
                f"{what}model {self.ref.namespace}/{self.ref.model} was not found on the registry "
                f"{where}; check the name and tag"
            )
        if response.status == 429 or response.status >= 500:
            return ServerError(f"the registry {where} answered HTTP {response.status}; try again later")
        return ServerError(f"the registry {where} answered HTTP {response.status}: {body[:200]}")

    def _auth_error(self, status: int) -> AuthRequired:
        if self.token:
            return AuthRequired(
                f"the registry {self.registry} refused the credential for {self.ref.short} "
                f"(HTTP {status}); check the token"
            )
        return AuthRequired(
            f"the registry {self.registry} requires credentials for {self.ref.short} (HTTP {status}); "
            "pass token=... (or --token); 'user:password' works for Basic and token realms"
        )

    def _error_for_response(self, response: aiohttp.ClientResponse, body: str) -> ModelpullError | None:
        codes = _error_codes(body)
        if response.status in (401, 403) or codes & {"UNAUTHORIZED", "DENIED"}:
            return self._auth_error(response.status)
        if response.status == 404 or "BLOB_UNKNOWN" in codes:
            return ModelNotFound(
                f"the registry {self.registry} is missing a blob of {self.ref.short}; the model "
                "is incomplete there"
            )
        return None


def _final(error: ModelpullError) -> ModelpullError:
    """The same error, marked as one that running the download again will not fix."""
    error.resumable = False
    return error


def _error_codes(body: str) -> set[str]:
    try:
        data = json.loads(body)
    except ValueError:
        return set()
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return set()
    return {str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")}
