"""The push side of the distribution API: blobs in chunks that survive a cut, the manifest last.

:class:`RegistryPush` puts one model's blobs and manifest into one repository
of one registry, through an :class:`~modelpull._oci.OciClient` (its session,
credentials, token realms and retry policy):

* ``HEAD /v2/<name>/blobs/<digest>`` first: a blob the registry has is skipped;
* ``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`` when another
  repository of the same registry is known to hold it (a cross-repository
  mount: no byte moves); a registry that does not mount answers with an upload;
* otherwise a chunked upload: ``POST`` opens it, ``PATCH`` sends chunks with
  ``Content-Range``, ``PUT ?digest=`` closes it (the registry checks the digest).
  After every chunk the upload's ``Location`` goes to a small state file
  (:class:`UploadRecord`), so a push cut or killed half-way asks the registry
  (``GET`` on that location, its ``Range``) how much it holds and sends only
  the rest;
* ``PUT /v2/<name>/manifests/<tag>`` last: the tag exists only once every blob
  does.

Chunks are sized to last about :data:`CHUNK_SECONDS` at the speed measured so
far (within ``[MIN_CHUNK, chunk_size]``). When the caller stops a push, the
chunk in flight is given :data:`DRAIN_SECONDS` to finish: a registry that keeps
a cut chunk's bytes (CNCF Distribution does) can no longer resume an upload
whose last chunk it never confirmed, and answers the next run's ``GET`` with
an error; the upload then starts over, and the message says so.

Refusals become typed errors with stable codes: 401 and 403 ``auth_required``
(a 403 that speaks of a quota is ``disk_full``), 413, 507 and quotas
``disk_full``, a digest the registry computes otherwise ``checksum_mismatch``,
a manifest it will not take ``incompatible_model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from yarl import URL

from .._durable import write_atomic
from .._lazy import lazy
from .._transfer import ServerBusy, TooManyRedirects, retry_after, retry_request, send
from ..errors import (
    AuthRequired,
    ChecksumMismatch,
    DiskFull,
    IncompatibleModel,
    IncompleteTransfer,
    ModelpullError,
    ServerError,
    TransferTimeout,
)
from .client import OciClient, error_codes
from .manifest import digest_hex

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")


__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_CHUNK",
    "DRAIN_SECONDS",
    "MIN_CHUNK",
    "RegistryPush",
    "UploadRecord",
]

log = logging.getLogger("modelpull.push")
T = TypeVar("T")

#: the largest chunk one PATCH carries (the ``chunk_size`` option changes it)
DEFAULT_CHUNK = 512 << 20
#: the smallest chunk (but a blob's last one)
MIN_CHUNK = 4 << 20
#: chunks are sized to take about this long at the speed measured so far
CHUNK_SECONDS = 1.0
#: a stopped push lets the chunk in flight finish for this long, so the registry stays resumable
DRAIN_SECONDS = 1.5
#: bytes read from the file at a time
_BLOCK = 1 << 20
_ERROR_BODY = 4096
_QUOTA = re.compile(r"quota|exceed|insufficient storage|storage limit", re.IGNORECASE)


@dataclass
class UploadRecord:
    """Where an unfinished upload of one blob continues: kept in a small file between runs.

    ``location`` is the registry's upload URL (its own opaque upload token is
    in it; never a credential of ours); ``offset`` the bytes it confirmed.
    """

    path: Path
    registry: str
    repository: str
    digest: str
    location: str | None = None
    offset: int = 0

    @classmethod
    def load(cls, folder: Path, registry: str, repository: str, digest: str) -> UploadRecord:
        key = hashlib.sha256(f"{registry}\n{repository}\n{digest}".encode()).hexdigest()[:32]
        record = cls(folder / f"{key}.json", registry, repository, digest)
        try:
            data = json.loads(record.path.read_bytes())
        except (OSError, ValueError):
            return record
        if (
            isinstance(data, dict) and data.get("registry") == registry and data.get("repository") == repository
            and data.get("digest") == digest and isinstance(data.get("location"), str)
            and isinstance(data.get("offset"), int) and data["offset"] >= 0
        ):
            record.location, record.offset = data["location"], data["offset"]
        return record

    def save(self, location: str, offset: int) -> None:
        self.location, self.offset = location, offset
        data = {"registry": self.registry, "repository": self.repository, "digest": self.digest,
                "location": location, "offset": offset, "saved_at": time.time()}
        with contextlib.suppress(OSError):  # a state file we cannot write costs only the resume
            write_atomic(self.path, json.dumps(data).encode(), mode=0o600)

    def clear(self) -> None:
        self.location, self.offset = None, 0
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


class _StaleUpload(Exception):
    """The registry no longer knows (or will not continue) the recorded upload: start a new one."""


class RegistryPush:
    """One model's blobs and manifest into ``repository`` on the client's registry."""

    def __init__(
        self, client: OciClient, repository: str, state_dir: Path, *, label: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        self.client = client
        self.repository = repository
        self.state_dir = state_dir
        self.label = label or repository
        self.chunk_size = max(1, chunk_size)
        #: what happened that a person may want to know (an upload started over)
        self.notes: list[str] = []
        self._speed: float | None = None

    @property
    def where(self) -> str:
        return f"{self.client.registry}/{self.repository}"

    # -- what the registry has ----------------------------------------------
    async def has_blob(self, digest: str, size: int) -> bool:
        """Does the repository hold this blob (``HEAD``)? Mounts and uploads are not needed then."""
        url = self.client.url(self.repository, "blobs", digest)

        async def once() -> bool:
            async with self.client._mapped_errors(f"a blob of {self.where}"):
                response = await self._send("HEAD", url)
                async with response:
                    if response.status == 200:
                        length = response.headers.get("Content-Length")
                        return length is None or not length.isdigit() or int(length) == size
                    if response.status == 404:
                        return False
                    raise self._refusal(response, "", f"asking whether {self.where} holds {digest[:19]}…")

        return await self.client_retry(once, f"blob check of {self.label}")

    def record(self, digest: str) -> UploadRecord:
        return UploadRecord.load(self.state_dir, str(self.client.registry), self.repository, digest)

    async def resumable_offset(self, digest: str) -> int:
        """Bytes of an interrupted upload of ``digest`` the registry still holds (0: none)."""
        record = self.record(digest)
        if record.location is None:
            return 0
        try:
            return await self._status(record)
        except _StaleUpload:
            return 0

    async def mount(self, digest: str, source_repository: str) -> bool:
        """Ask the registry to mount ``digest`` from another of its repositories; True when it did."""
        url = (self.client.url(self.repository, "blobs", "uploads") / "").with_query(
            {"mount": digest, "from": source_repository}
        )

        async def once() -> bool:
            async with self.client._mapped_errors(f"a mount into {self.where}"):
                response = await self._send("POST", url)
                async with response:
                    if response.status == 201:
                        return True
                    if response.status == 202:
                        # No mount, an upload instead: cancel it, the normal path opens its own.
                        location = response.headers.get("Location")
                        if location:
                            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                                (await self._send("DELETE", self._location(response, location))).release()
                        return False
                    body = (await response.content.read(_ERROR_BODY)).decode("utf-8", "replace")
                    raise self._refusal(response, body, f"mounting a blob into {self.where}")

        return await self.client_retry(once, f"mount into {self.label}")

    # -- one blob ------------------------------------------------------------
    async def upload(
        self, digest: str, size: int, path: Path, progress: Callable[[int], None],
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        """Upload the file at ``path`` (``size`` bytes, ``digest``) as a blob, resuming a recorded upload.

        ``progress(n)`` is told the bytes the registry holds so far (it may go
        back when an upload has to start over; callers keep the maximum).
        Failed attempts are retried as the policy says; raises typed errors.
        """
        digest_hex(digest)
        record = self.record(digest)
        failures = 0
        restarted = False
        while True:
            try:
                await self._upload_once(record, digest, size, path, progress)
                record.clear()
                return
            except _StaleUpload as exc:
                record.clear()
                if restarted:
                    raise IncompleteTransfer(
                        f"the registry {self.where} dropped the upload of {path.name} twice ({exc}); "
                        "run the push again"
                    ) from None
                restarted = True
                self.notes.append(
                    f"the registry did not continue the interrupted upload of {path.name} ({exc}); "
                    "it was sent again from the start"
                )
                log.info("upload of %s starts over: %s", digest[:19], exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                retry = self.client.policy.retry(exc, failures, progressed=record.offset > 0,
                                                 retry_after=getattr(exc, "retry_after", None))
                if retry is None or cancelled():
                    raise
                failures = retry.failures
                log.info("retrying the upload of %s in %.1fs: %s", digest[:19], retry.delay,
                         getattr(exc, "message", type(exc).__name__))
                await asyncio.sleep(retry.delay)

    async def _upload_once(
        self, record: UploadRecord, digest: str, size: int, path: Path, progress: Callable[[int], None]
    ) -> None:
        offset = 0
        resumed = record.location is not None
        if resumed:
            offset = await self._status(record)
        else:
            location = await self._open()
            record.save(location, 0)
        progress(offset)
        assert record.location is not None
        fd = os.open(path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != size:
                raise ChecksumMismatch(
                    f"{path} changed size since it was described ({size} bytes expected); nothing was tagged"
                )
            while offset < size:
                length = min(self._next_chunk(), size - offset)
                offset = await self._patch(record, fd, offset, length, progress)
        finally:
            os.close(fd)
        await self._close_upload(record, digest, path, resumed)

    def _next_chunk(self) -> int:
        if self._speed is None:
            return min(self.chunk_size, MIN_CHUNK * 4)
        wanted = int(self._speed * CHUNK_SECONDS)
        return max(min(MIN_CHUNK, self.chunk_size), min(self.chunk_size, wanted))

    async def _open(self) -> str:
        url = self.client.url(self.repository, "blobs", "uploads") / ""
        async with self.client._mapped_errors(f"an upload to {self.where}"):
            response = await self._send("POST", url)
            async with response:
                location = response.headers.get("Location")
                if response.status == 202 and location:
                    return str(self._location(response, location))
                body = (await response.content.read(_ERROR_BODY)).decode("utf-8", "replace")
                raise self._refusal(response, body, f"starting an upload to {self.where}")

    async def _status(self, record: UploadRecord) -> int:
        """The bytes the registry holds of a recorded upload (``GET`` its location, read ``Range``)."""
        assert record.location is not None
        url = URL(record.location, encoded=True)
        async with self.client._mapped_errors(f"an upload to {self.where}"):
            response = await self._send("GET", url)
            async with response:
                body = (await response.content.read(_ERROR_BODY)).decode("utf-8", "replace")
                if response.status in (200, 204):
                    offset = _range_end(response.headers.get("Range"))
                    location = response.headers.get("Location")
                    record.save(str(self._location(response, location)) if location else record.location, offset)
                    return offset
                if response.status in (400, 404, 416) or error_codes(body) & {
                    "BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID", "RANGE_INVALID"
                }:
                    raise _StaleUpload(f"HTTP {response.status} {', '.join(sorted(error_codes(body)))}".strip())
                raise self._refusal(response, body, f"resuming an upload to {self.where}")

    async def _patch(
        self, record: UploadRecord, fd: int, offset: int, length: int, progress: Callable[[int], None]
    ) -> int:
        """Send ``length`` bytes from ``offset`` as one chunk; return the offset the registry confirms."""
        assert record.location is not None
        url = URL(record.location, encoded=True)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Content-Range": f"{offset}-{offset + length - 1}",
        }
        sent = [0, time.monotonic()]  # bytes handed to the connection, when it last took some
        started = time.monotonic()

        def body() -> AsyncIterator[bytes]:
            sent[0] = 0
            return self._read(fd, offset, length, sent, progress)

        async def request() -> int:
            async with self.client._mapped_errors(f"an upload to {self.where}"):
                response = await self._send("PATCH", url, headers, body)
                async with response:
                    text = (await response.content.read(_ERROR_BODY)).decode("utf-8", "replace")
                    if response.status == 202:
                        confirmed = _range_end(response.headers.get("Range"), offset + length)
                        location = response.headers.get("Location")
                        new = str(self._location(response, location)) if location else record.location
                        assert new is not None
                        record.save(new, confirmed)
                        return confirmed
                    if response.status == 416 or "RANGE_INVALID" in error_codes(text):
                        raise _StaleUpload("the registry holds another offset than recorded")
                    if response.status in (400, 404) and error_codes(text) & {
                        "BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"
                    }:
                        raise _StaleUpload(f"HTTP {response.status}")
                    raise self._refusal(response, text, f"uploading {length} bytes to {self.where}")

        task = asyncio.ensure_future(request())
        try:
            confirmed = await self._watch(task, sent)
        except asyncio.CancelledError:
            # The caller stopped the push: a chunk cut now would make the upload unresumable
            # on registries that keep what they received, so let it finish for a moment.
            if not task.done():
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(task), DRAIN_SECONDS)
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            elif not task.cancelled():
                task.exception()
            raise
        elapsed = time.monotonic() - started
        if elapsed > 0.05:
            self._speed = length / elapsed
        progress(confirmed)
        return confirmed

    async def _watch(self, task: asyncio.Future[int], sent: list[Any]) -> int:
        """``task``'s result, or :class:`TransferTimeout` when it sends nothing for the stall timeout."""
        stall = self.client.policy.stall_timeout
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(1.0, stall))
            if done:
                return task.result()
            if time.monotonic() - sent[1] > stall:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise TransferTimeout(
                    f"the registry {self.where} took no bytes for {stall:g} s; run the push again to resume"
                )

    async def _read(
        self, fd: int, offset: int, length: int, sent: list[Any], progress: Callable[[int], None]
    ) -> AsyncIterator[bytes]:
        limit = self.client.policy.rate_limit()
        done = 0
        while done < length:
            size = min(_BLOCK, length - done)
            block = await asyncio.to_thread(os.pread, fd, size, offset + done)
            if not block:
                raise ChecksumMismatch(f"the file being uploaded to {self.where} got shorter; nothing was tagged")
            if limit is not None:
                await limit.take(len(block))
            yield block
            done += len(block)
            sent[0], sent[1] = done, time.monotonic()
            progress(offset + done)

    async def _close_upload(self, record: UploadRecord, digest: str, path: Path, resumed: bool) -> None:
        assert record.location is not None
        url = URL(record.location, encoded=True)
        url = url.update_query({"digest": digest})
        async with self.client._mapped_errors(f"an upload to {self.where}"):
            response = await self._send("PUT", url, {"Content-Length": "0", "Content-Type": "application/octet-stream"})
            async with response:
                text = (await response.content.read(_ERROR_BODY)).decode("utf-8", "replace")
                if response.status in (201, 204):
                    return
                codes = error_codes(text)
                if "DIGEST_INVALID" in codes or "SIZE_INVALID" in codes:
                    if resumed:  # what it kept of the interrupted upload was not what we thought
                        raise _StaleUpload(f"the resumed upload of {path.name} did not add up to {digest[:19]}…")
                    raise ChecksumMismatch(
                        f"the registry {self.where} computed another digest for {path} than {digest}; the "
                        "file on disk does not match what its store recorded. Pull the model again"
                    )
                if response.status in (400, 404) and codes & {"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"}:
                    raise _StaleUpload(f"HTTP {response.status}")
                raise self._refusal(response, text, f"finishing the upload of {path.name} to {self.where}")

    # -- the manifest ------------------------------------------------------------
    async def put_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        """``PUT`` the manifest under ``reference`` (a tag); returns its digest as the registry has it."""
        url = self.client.url(self.repository, "manifests", reference)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()

        async def once() -> str:
            async with self.client._mapped_errors(f"the manifest of {self.where}"):
                response = await self._send("PUT", url, {"Content-Type": media_type}, lambda: body)
                async with response:
                    text = (await response.content.read(_ERROR_BODY)).decode("utf-8", "replace")
                    if response.status in (200, 201, 202, 204):
                        served = response.headers.get("Docker-Content-Digest", digest)
                        if served.startswith("sha256:") and served != digest:
                            raise ServerError(
                                f"the registry {self.where} stored the manifest under {served}, not its digest "
                                f"{digest}"
                            )
                        return digest
                    codes = error_codes(text)
                    if codes & {"MANIFEST_INVALID", "MANIFEST_UNVERIFIED", "UNSUPPORTED", "TAG_INVALID"} or \
                            response.status == 415:
                        raise IncompatibleModel(
                            f"the registry {self.client.registry} refused the manifest of {self.label} "
                            f"(HTTP {response.status} {', '.join(sorted(codes))}: {_message(text)}); some registries "
                            "accept only some artifact formats: try the other format (--format docker or modelpack)"
                        )
                    if "MANIFEST_BLOB_UNKNOWN" in codes or "BLOB_UNKNOWN" in codes:
                        raise IncompleteTransfer(
                            f"the registry {self.where} lost a blob before the manifest was written; run the "
                            "push again"
                        )
                    raise self._refusal(response, text, f"tagging {self.label} on {self.where}")

        return await self.client_retry(once, f"manifest of {self.label}")

    async def manifest_digest(self, reference: str, media_type: str) -> str | None:
        """The digest the registry serves for ``reference`` now (``HEAD``), None when it has no such tag."""
        url = self.client.url(self.repository, "manifests", reference)

        async def once() -> str | None:
            async with self.client._mapped_errors(f"the manifest of {self.where}"):
                response = await self._send("HEAD", url, {"Accept": media_type})
                async with response:
                    if response.status == 404:
                        return None
                    if response.status != 200:
                        raise self._refusal(response, "", f"reading the tag of {self.where}")
                    return response.headers.get("Docker-Content-Digest")

        return await self.client_retry(once, f"manifest check of {self.label}")

    # -- plumbing ------------------------------------------------------------------
    async def client_retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        return await retry_request(self.client.policy, call, what=what)

    async def _send(
        self, method: str, url: URL, headers: dict[str, str] | None = None,
        body: Callable[[], Any] | None = None,
    ) -> aiohttp.ClientResponse:
        """One request with a body made afresh for each attempt: a ``401`` is answered once through
        the registry's auth, a ``307``/``308`` followed (credentials only to the registry's origin)."""
        try:
            return await send(self.client.session, url, headers or {}, self.client.auth, method, body)
        except TooManyRedirects:
            raise ServerError(f"too many redirects talking to {self.where}") from None

    def _location(self, response: aiohttp.ClientResponse, location: str) -> URL:
        """An upload ``Location`` (often relative) as an absolute URL on the registry."""
        return response.url.join(URL(location, encoded=True))

    def _refusal(self, response: aiohttp.ClientResponse, body: str, doing: str) -> ModelpullError:
        """A refused push request as a typed error whose message says what to do."""
        status = response.status
        codes = error_codes(body)
        said = _message(body)
        quota = bool(_QUOTA.search(body))
        if status == 413 or status == 507 or (quota and status in (400, 402, 403, 409, 412, 429)):
            what = "its storage quota is used up" if quota or status == 507 else (
                "it (or a proxy in front of it) refuses a request that large")
            error = DiskFull(
                f"the registry {self.client.registry} refused {doing}: {what} (HTTP {status}"
                f"{': ' + said if said else ''}). Free space or raise the quota there, or for a proxy's "
                "body limit push with a smaller chunk_size; nothing was tagged"
            )
            error.resumable = False
            return error
        if status in (401, 403) or codes & {"UNAUTHORIZED", "DENIED"}:
            sent = self.client._has_credential
            if status == 403 or "DENIED" in codes:
                message = (
                    f"the registry {self.client.registry} denied {doing} (HTTP {status}"
                    f"{': ' + said if said else ''}); the credential needs push rights on {self.repository}"
                    if sent else
                    f"the registry {self.client.registry} denied {doing} (HTTP {status}); pass token=... "
                    "(a token with push rights, or 'user:password')"
                )
            else:
                message = (
                    f"the registry {self.client.registry} refused the credential while {doing} (HTTP {status}); "
                    "check the token" if sent else
                    f"the registry {self.client.registry} requires credentials for {doing} (HTTP {status}); pass "
                    "token=... (or --token); 'user:password' works for Basic and token realms"
                )
            return AuthRequired(message + "; nothing was tagged")
        if self.client.policy.retryable_status(status):
            return ServerBusy(f"the registry {self.client.registry} answered HTTP {status} while {doing}",
                              retry_after(response))
        return ServerError(
            f"the registry {self.client.registry} answered HTTP {status} while {doing}"
            f"{': ' + said if said else ''}; nothing was tagged"
        )


def _range_end(header: str | None, default: int = 0) -> int:
    """``Range: 0-<last>`` (or ``bytes=0-<last>``) → the bytes held (``last + 1``).

    Distribution answers ``0-0`` both for an empty upload and for one byte:
    ``default`` (what the caller expects, 0 before any chunk) decides.
    """
    match = re.fullmatch(r"\s*(?:bytes=)?0-(\d+)\s*", header or "")
    if match is None:
        return default
    last = int(match.group(1))
    if last == 0:
        return min(1, default)
    return last + 1


def _message(body: str) -> str:
    """The registry's own words from an error body, short."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list):
        words = [str(e.get("message") or e.get("code") or "") for e in errors if isinstance(e, dict)]
        return "; ".join(w for w in words if w)[:300]
    return ""
