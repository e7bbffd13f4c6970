"""Where a push goes: a registry (``oci://host[:port]/namespace/name[:tag]``) or an OCI layout.

A destination answers four questions, in the push's order: which blobs it
holds already (and how much of an interrupted upload), sending the others,
naming the manifest (last: a tag appears only when every blob is there), and
checking that it now serves the manifest pushed. Both kinds share that shape:

* :class:`RegistryDestination`: the distribution API through
  :class:`modelpull._oci.push.RegistryPush` (HEAD, cross-repository mount,
  chunked uploads resumed from the registry's offset, manifest last); plain
  http only when the caller says ``insecure``.
* :class:`LayoutDestination`: an OCI image layout folder (blobs copied and
  checked, ``index.json`` last) or a ``.tar`` of one (written whole, then
  renamed into place).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from yarl import URL

from .._durable import write_atomic
from .._lazy import lazy
from .._oci import OciClient, check_repository
from .._oci.layout import (
    LayoutBlob,
    LayoutReader,
    LayoutReference,
    LayoutWriter,
    check_ref_name,
    parse_layout_reference,
)
from .._oci.push import DEFAULT_CHUNK, RegistryPush
from .._oci.reference import parse_reference
from .._secrets import Secret
from .._transfer import TransferPolicy
from ..errors import IncompleteTransfer, InvalidModel, InvalidOption, ModelpullError
from .artifact import BuiltArtifact

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")


__all__ = ["Blob", "Destination", "LayoutDestination", "RegistryDestination", "parse_destination"]

REGISTRY_PREFIX = "oci://"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Blob:
    """One blob to push: a file on disk or bytes in memory, and the progress key it counts under."""

    digest: str
    size: int
    key: str
    path: Path | None = None
    data: bytes | None = None


class Destination:
    """What every destination does, in the order a push calls it."""

    #: how people see it in messages (never a credential)
    label: str = ""

    async def present(self, blobs: Sequence[Blob]) -> dict[str, int]:
        """Bytes of each blob (by digest) the destination holds already: all of it, part of an upload, or 0."""
        raise NotImplementedError

    async def send(self, blobs: Sequence[Blob], progress: Callable[[Blob, int], None]) -> None:
        """Every blob it lacks; ``progress(blob, n)`` says how much of it is there."""
        raise NotImplementedError

    async def name(self, artifact: BuiltArtifact, blobs: Sequence[Blob],
                   progress: Callable[[Blob, int], None]) -> str:
        """Name the manifest (last); return the reference to pull it by."""
        raise NotImplementedError

    async def check(self, artifact: BuiltArtifact) -> None:
        """The destination serves this manifest under its name now (else a typed error)."""
        raise NotImplementedError

    @property
    def notes(self) -> list[str]:
        return []

    async def close(self) -> None:
        """Release connections and files."""


def parse_destination(text: object) -> tuple[str, object]:
    """Offline: ``("registry", (host, repository, tag))`` or ``("layout", LayoutReference)``."""
    if not isinstance(text, str) or not text:
        raise InvalidModel("the destination must be oci://registry[:port]/namespace/name[:tag] or oci-layout:PATH")
    if text.startswith("oci-layout:"):
        where = parse_layout_reference(text)
        return "layout", where
    if not text.startswith(REGISTRY_PREFIX):
        raise InvalidModel(
            f"unknown destination {text[:100]!r}: use oci://registry[:port]/namespace/name[:tag] or "
            "oci-layout:PATH[:NAME] (a folder, or a .tar)"
        )
    rest = text[len(REGISTRY_PREFIX):]
    if "@" in rest or "?" in rest or "#" in rest:
        raise InvalidModel(f"a push names a tag, not a digest, user or query: {text[:100]!r}")
    first = rest.split("/", 1)[0]
    if "/" not in rest or not ("." in first or ":" in first or first == "localhost"):
        raise InvalidModel(
            f"name the registry in {text[:100]!r}: oci://registry[:port]/namespace/name[:tag] "
            "(e.g. oci://registry.example:5000/team/model:v1)"
        )
    ref = parse_reference(rest)
    check_repository(ref.repository)
    return "registry", (ref.domain, ref.repository, ref.tag or "latest")


# -- a registry -------------------------------------------------------------------------------


class RegistryDestination(Destination):
    """A repository and tag on an OCI registry."""

    def __init__(
        self, host: str, repository: str, tag: str, *, session: aiohttp.ClientSession, policy: TransferPolicy,
        credential: Secret | None, insecure: bool, state_dir: Path, chunk_size: int = DEFAULT_CHUNK,
        mount_from: Sequence[str] = (), max_parallel: int = 4,
    ) -> None:
        self.host, self.repository, self.tag = host, repository, tag
        self.registry = URL(f"{'http' if insecure else 'https'}://{host}")
        self.client = OciClient(session, self.registry, policy, credential)
        self.uploads = RegistryPush(self.client, repository, state_dir / "uploads", label=f"{host}/{repository}:{tag}",
                                    chunk_size=chunk_size)
        self.mount_record = state_dir / "mounts" / (hashlib.sha256(host.encode()).hexdigest()[:24] + ".json")
        self.mount_from = [repo for repo in mount_from if repo and repo != repository]
        self.max_parallel = max(1, max_parallel)
        self.label = f"{host}/{repository}:{tag}"
        self._present: dict[str, int] = {}

    @property
    def notes(self) -> list[str]:
        return self.uploads.notes

    async def present(self, blobs: Sequence[Blob]) -> dict[str, int]:
        found: dict[str, int] = {}
        for blob in {b.digest: b for b in blobs}.values():
            if await self.uploads.has_blob(blob.digest, blob.size):
                found[blob.digest] = blob.size
            else:
                found[blob.digest] = min(blob.size, await self.uploads.resumable_offset(blob.digest))
        self._present.update(found)
        return found

    async def send(self, blobs: Sequence[Blob], progress: Callable[[Blob, int], None]) -> None:
        gate = asyncio.Semaphore(self.max_parallel)
        unique = list({b.digest: b for b in blobs}.values())
        # The largest first: the long uploads start at once, small ones fill in beside them.
        unique.sort(key=lambda b: -b.size)

        async def one(blob: Blob) -> None:
            async with gate:
                await self._send_one(blob, progress)

        tasks = [asyncio.ensure_future(one(blob)) for blob in unique]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _send_one(self, blob: Blob, progress: Callable[[Blob, int], None]) -> None:
        if self._present.get(blob.digest) == blob.size or await self.uploads.has_blob(blob.digest, blob.size):
            progress(blob, blob.size)
            return
        for source in self._mount_sources(blob.digest):
            if await self.uploads.mount(blob.digest, source):
                self.uploads.notes.append(f"{blob.key} was mounted from {source} (no bytes sent)")
                progress(blob, blob.size)
                return
        if blob.path is not None:
            await self.uploads.upload(blob.digest, blob.size, blob.path, lambda n: progress(blob, n))
        else:
            assert blob.data is not None
            await self._upload_bytes(blob)
        progress(blob, blob.size)

    async def _upload_bytes(self, blob: Blob) -> None:
        """A small blob (the config) from memory, through a temporary file (one upload path for all)."""
        import tempfile

        assert blob.data is not None
        with tempfile.TemporaryDirectory(prefix="modelpull-push-") as tmp:
            path = Path(tmp) / "blob"
            path.write_bytes(blob.data)
            await self.uploads.upload(blob.digest, blob.size, path, lambda n: None)

    def _mount_sources(self, digest: str) -> list[str]:
        sources = list(self.mount_from)
        try:
            recorded = json.loads(self.mount_record.read_bytes())
        except (OSError, ValueError):
            recorded = {}
        repos = recorded.get(digest) if isinstance(recorded, dict) else None
        if isinstance(repos, list):
            sources.extend(str(r) for r in repos if isinstance(r, str))
        return [s for s in dict.fromkeys(sources) if s != self.repository][:3]

    def _remember(self, blobs: Sequence[Blob]) -> None:
        """Which repository of this registry holds these blobs, so a later push can mount them."""
        try:
            recorded = json.loads(self.mount_record.read_bytes())
        except (OSError, ValueError):
            recorded = {}
        if not isinstance(recorded, dict):
            recorded = {}
        for blob in blobs:
            repos = [r for r in recorded.get(blob.digest, []) if isinstance(r, str) and r != self.repository]
            recorded[blob.digest] = [self.repository, *repos][:4]
        with contextlib.suppress(OSError):
            write_atomic(self.mount_record, json.dumps(recorded).encode(), mode=0o600)

    async def name(self, artifact: BuiltArtifact, blobs: Sequence[Blob],
                   progress: Callable[[Blob, int], None]) -> str:
        await self.uploads.put_manifest(self.tag, artifact.manifest, artifact.media_type)
        self._remember(blobs)
        return f"{self.host}/{self.repository}:{self.tag}"

    async def check(self, artifact: BuiltArtifact) -> None:
        served = await self.uploads.manifest_digest(self.tag, artifact.media_type)
        if served != artifact.manifest_digest:
            raise IncompleteTransfer(
                f"{self.label} names {served or 'nothing'} instead of the manifest just pushed "
                f"({artifact.manifest_digest}); another push may have moved the tag. Run the push again"
            )


# -- an OCI layout ------------------------------------------------------------------------------


class LayoutDestination(Destination):
    """An OCI image layout folder, or a ``.tar`` of one."""

    def __init__(self, where: LayoutReference, default_ref: str) -> None:
        self.where = where
        self.ref = check_ref_name(where.ref or default_ref)
        self.writer = LayoutWriter(where)
        self.label = f"oci-layout:{where.path}:{self.ref}"
        self._cancel = threading.Event()

    async def present(self, blobs: Sequence[Blob]) -> dict[str, int]:
        return {b.digest: b.size if self.writer.has_blob(b.digest, b.size) else 0 for b in blobs}

    async def send(self, blobs: Sequence[Blob], progress: Callable[[Blob, int], None]) -> None:
        if self.writer.tar:
            return  # the tar is written whole when the manifest is named
        for blob in {b.digest: b for b in blobs}.values():
            if self.writer.has_blob(blob.digest, blob.size):
                progress(blob, blob.size)
                continue
            await self._thread(self.writer.write_folder_blob,
                               LayoutBlob(blob.digest, blob.size, blob.path, blob.data),
                               lambda n, blob=blob: progress(blob, n), self._cancel)

    async def name(self, artifact: BuiltArtifact, blobs: Sequence[Blob],
                   progress: Callable[[Blob, int], None]) -> str:
        descriptor = artifact.descriptor()
        manifest = LayoutBlob(artifact.manifest_digest, len(artifact.manifest), data=artifact.manifest)
        if self.writer.tar:
            by_digest: dict[str, Blob] = {b.digest: b for b in blobs}
            everything = [LayoutBlob(b.digest, b.size, b.path, b.data) for b in by_digest.values()] + [manifest]

            def counted(digest: str, n: int) -> None:
                blob = by_digest.get(digest)
                if blob is not None:
                    progress(blob, n)

            await self._thread(self.writer.write_tar, everything, self.ref, descriptor, counted, self._cancel)
        else:
            await self._thread(self.writer.write_folder_blob, manifest, lambda n: None, self._cancel)
            await self._thread(self.writer.tag_folder, self.ref, descriptor)
        return f"oci-layout:{self.where.path}:{self.ref}"

    async def check(self, artifact: BuiltArtifact) -> None:
        def read() -> str | None:
            with LayoutReader(LayoutReference(self.where.path, None)) as reader:
                entry = reader.find(self.ref)
                digest = entry.get("digest")
                reader.read_blob(str(digest))
                return str(digest)

        served = await self._thread(read)
        if served != artifact.manifest_digest:
            raise IncompleteTransfer(
                f"{self.label} names {served} instead of the manifest just written; another process wrote it "
                "too. Run the push again"
            )

    async def _thread(self, call: Callable[..., object], *args: object) -> object:
        try:
            return await asyncio.to_thread(call, *args)
        except asyncio.CancelledError:
            self._cancel.set()
            raise
        except InterruptedError:
            raise asyncio.CancelledError() from None

    async def close(self) -> None:
        self.writer.close()


def default_layout_name(provider: str, model: str) -> str:
    """The name a push gives a model in a layout when the destination names none: ``org/name:tag``."""
    text = model.split("oci-layout:", 1)[-1]
    name, _, tag = text.rpartition(":") if ":" in text.rsplit("/", 1)[-1] else (text, "", "latest")
    name = re.sub(r"[^a-z0-9._/-]+", "-", name.lower()).strip("-./") or provider
    name = re.sub(r"/+", "/", name)
    if "/" not in name:  # a name, not a bare tag, so a store that pulls it tags it sensibly
        name = f"library/{name}"
    tag = tag if _TAG.fullmatch(tag or "") else "latest"
    try:
        return check_ref_name(f"{name}:{tag}")
    except ModelpullError:
        return "latest"


def check_destination_options(insecure: object) -> bool:
    if isinstance(insecure, bool):
        return insecure
    if isinstance(insecure, str) and insecure.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return insecure.lower() in ("1", "true", "yes", "on")
    raise InvalidOption(f"option 'insecure' must be true or false, got {insecure!r}")
