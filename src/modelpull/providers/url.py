"""A file at a URL (``url``): any http(s) link, such as a GGUF someone handed you.

    modelpull pull url https://host/path/model.gguf [-o sha256=HEX] [--local-dir D]

Plan: a ``HEAD`` (redirects followed) tells the size, whether the server
honours ``Range`` and the file's name (``Content-Disposition``, else the URL's
last path segment); when it tells no size, one byte is asked for with ``GET``
(``Range: bytes=0-0``), whose answer does. Fetch: the transfer engine, as for
every source: parallel ranged parts when the server honours ``Range``, one
stream when it does not, resume from the partial file, retries and stall
detection.

Verification: with a sha256 (option ``sha256`` or a ``#sha256=HEX`` fragment)
the file is checked before it gets its name; a mismatch is
``checksum_mismatch`` and nothing is published. Without one there is nothing
to check against: the sha256 of the bytes received is computed while they
arrive and reported, in the ``COMPLETE`` message and in the plan's notes, and
the messages say the file was not verified.

Files land in ``local_dir``, else ``<data>/url`` (platformdirs' user data
folder for modelpull: ``~/.local/share/modelpull/url`` on Linux), laid out as:

    <folder>/<name>                               the file, once complete (and verified)
    <folder>/.modelpull/<name>.json               where it came from (URL without query), size,
                                                  sha256 and whether it was verified
    <folder>/.modelpull/<name>.<key>.incomplete   a partial download and its part state
    <folder>/.modelpull/<name>.lock

A file already there is not fetched again when its sha256 matches the one
given, or, without one, when modelpull downloaded it from the same URL and the
server's validator (``ETag``, else ``Last-Modified``) and size are unchanged.
A name with a path in it (``../``, ``/``, ``\\``), control characters, a
leading dot or more than 200 bytes is ``unsafe_source``.

A token goes as ``Authorization: Bearer`` to the URL's own origin only:
redirects to another host are followed without it. ``base_url`` means nothing
here (the URL is the address), so the source takes none.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from yarl import URL

from .._data import data_dir
from .._lazy import lazy
from .._safepath import join_inside
from .._secrets import Secret
from .._transfer import (
    BearerAuth,
    FileTransfer,
    ServerBusy,
    TransferEngine,
    describe,
    file_has_digest,
    present_bytes,
    retry_after,
    retry_request,
    send,
)
from .._transfer.hashing import HashCancelled
from ..errors import (
    AuthRequired,
    ConnectionFailed,
    IncompatibleModel,
    InvalidModel,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
    ServerError,
    TransferTimeout,
    UnsafeSource,
)
from ..plan import LocalCopy, Plan, PlanDetail, PlanItem
from ..progress import ProgressTracker
from ..stores.paths import FileSlot
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
from .base import Provider, str_option

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy

    from .._transfer.writer import DiskWriter

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")

__all__ = ["URL_FILES", "URL_SOURCE", "UrlFolder", "UrlRef", "default_url_dir", "parse_url_ref"]

#: where modelpull keeps records, partial files and locks inside the folder
STATE_FOLDER = ".modelpull"
#: the longest URL accepted (browsers and servers stop around here)
_MAX_URL = 8192
#: the longest file name accepted, in bytes (room left for the partial's suffixes)
_MAX_NAME = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_FRAGMENT = re.compile(r"sha256=([0-9a-fA-F]{64})")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", re.IGNORECASE)
_DISPOSITION = re.compile(
    r'(?:^|;)\s*(filename\*?)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.IGNORECASE
)

_EXAMPLE = "https://host/path/model.gguf"


# -- the reference -------------------------------------------------------------------------
@dataclass(frozen=True)
class UrlRef:
    """A parsed reference: the URL (without its fragment) and the sha256 its fragment gave."""

    url: URL
    sha256: str | None = None


def parse_url_ref(model: object) -> UrlRef:
    """Parse an ``http(s)://`` URL, optionally ending in ``#sha256=<64 hex>`` (offline).

    Raises :class:`~modelpull.errors.InvalidModel` for anything else.
    """
    if not isinstance(model, str) or not model.strip():
        raise InvalidModel(f"a URL is required, e.g. {_EXAMPLE!r}")
    text = model.strip()
    shown = text.split("?", 1)[0]
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    if len(text) > _MAX_URL:
        raise InvalidModel(f"the URL {shown!r} is longer than {_MAX_URL} characters")
    if _CONTROL.search(text) or any(c.isspace() for c in text):
        raise InvalidModel(
            f"the URL {shown!r} contains spaces or control characters; percent-encode them"
        )
    try:
        url = URL(text)
        scheme, host, _ = url.scheme, url.host, url.port
    except (ValueError, TypeError):
        raise InvalidModel(f"{shown!r} is not a valid URL; expected e.g. {_EXAMPLE!r}") from None
    if scheme not in ("http", "https") or not host:
        raise InvalidModel(f"{shown!r} is not an http(s) URL with a host; expected e.g. {_EXAMPLE!r}")
    if url.raw_user is not None or url.raw_password is not None:
        raise InvalidModel(
            f"the URL {describe(url.with_user(None))!r} carries credentials; pass the token "
            "with --token (or MODELPULL_TOKEN) instead: it is sent as 'Authorization: Bearer' "
            "to that host only"
        )
    sha256 = None
    if url.raw_fragment:
        match = _FRAGMENT.fullmatch(url.fragment)
        if match is None:
            raise InvalidModel(
                f"the URL {shown!r} ends in an unknown fragment; the only one understood is "
                "#sha256=<64 hex digits>"
            )
        sha256 = match.group(1).lower()
    return UrlRef(url.with_fragment(None), sha256)


def check_file_name(name: str, where: str) -> str:
    """``name`` if it is a plain file name for the folder, else :class:`UnsafeSource`."""
    shown = repr(name[:80])
    if not name or name in (".", ".."):
        raise UnsafeSource(f"{where} names no file; refusing it (give a URL that ends in the file name)")
    if "/" in name or "\\" in name:
        raise UnsafeSource(
            f"{where} names the file {shown}, a path that could lead outside the folder; refusing it"
        )
    if _CONTROL.search(name):
        raise UnsafeSource(f"{where} names the file {shown}, with control characters in it; refusing it")
    if name.startswith("."):
        raise UnsafeSource(f"{where} names the file {shown}, a hidden name; refusing it")
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME:
        raise UnsafeSource(f"{where} names a file longer than {_MAX_NAME} bytes; refusing it")
    return name


def disposition_filename(header: str) -> str | None:
    """The file name a ``Content-Disposition`` header gives (``filename*`` first), unchecked."""
    found: dict[str, str] = {}
    for key, raw in _DISPOSITION.findall(header):
        value = raw.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r'\\(["\\])', r"\1", value[1:-1])
        found.setdefault(key.lower(), value)
    extended = found.get("filename*")
    if extended is not None:
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            codecs.lookup(charset or "utf-8")
            return unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass
    return found.get("filename")


def default_url_dir() -> Path:
    """``<user data folder>/modelpull/url`` (platformdirs: ``~/.local/share`` or
    ``$XDG_DATA_HOME`` on Linux, ``~/Library/Application Support`` on macOS, ...)."""
    return data_dir("url")


# -- the folder ----------------------------------------------------------------------------
class UrlFolder:
    """Files downloaded by URL, side by side in one folder (layout: the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / STATE_FOLDER

    def slot(self, name: str, key: str) -> FileSlot:
        return FileSlot(
            join_inside(self.root, name),
            self.state / f"{name}.{key}.incomplete",
            self.state / f"{name}.lock",
        )

    def record(self, name: str) -> dict[str, Any] | None:
        """What modelpull wrote down when it placed ``name``, if the file is unchanged since."""
        try:
            record = json.loads((self.state / f"{name}.json").read_text())
            stat = (self.root / name).stat()
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        if record.get("size") != stat.st_size or record.get("mtime_ns") != stat.st_mtime_ns:
            return None
        return record

    def write_record(self, name: str, **facts: Any) -> None:
        stat = (self.root / name).stat()
        record = {**facts, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        self.state.mkdir(parents=True, exist_ok=True)
        tmp = self.state / f".{name}.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record, sort_keys=True))
        os.replace(tmp, self.state / f"{name}.json")

    def partial_bytes(self) -> dict[str, int]:
        """Bytes of unfinished downloads, by file name."""
        sizes: dict[str, int] = {}
        for partial in _files(self.state, ".incomplete"):
            name = partial.name[: -len(".incomplete")].rsplit(".", 1)[0]
            sizes[name] = sizes.get(name, 0) + partial.stat().st_size
        return sizes

    def list(self) -> list[LocalModel]:
        """Every file modelpull downloaded here, and every unfinished download."""
        partials = self.partial_bytes()
        found: dict[str, LocalModel] = {}
        for record_file in _files(self.state, ".json"):
            name = record_file.name[: -len(".json")]
            path = self.root / name
            if self.record(name) is None or not path.is_file():
                continue
            stat = path.stat()
            found[name] = LocalModel(
                provider="", name=name, size_bytes=stat.st_size, source="url", path=str(path),
                modified=stat.st_mtime, files=1, partial_bytes=partials.get(name, 0),
                format="gguf" if name.lower().endswith(".gguf") else None,
            )
        for name, size in partials.items():
            if name not in found:
                found[name] = LocalModel(
                    provider="", name=name, size_bytes=0, source="url", files=0,
                    partial_bytes=size, complete=False,
                    format="gguf" if name.lower().endswith(".gguf") else None,
                )
        return sorted(found.values(), key=lambda m: m.name)

    def delete(self, name: str) -> int:
        """Remove a file modelpull downloaded here, with its record and partials; bytes freed.

        Raises :class:`ModelNotFound` when there is none of those under that name.
        """
        try:
            check_file_name(name, "the name given")
        except UnsafeSource as exc:
            raise InvalidModel(exc.message) from None
        freed = 0
        leftovers = [p for p in _files(self.state, "") if p.name.startswith(f"{name}.")
                     and p.name[len(name) + 1:].count(".") <= 3]
        owned = self.record(name) is not None or (self.state / f"{name}.json").is_file()
        if owned and (self.root / name).is_file():
            freed += (self.root / name).stat().st_size
            (self.root / name).unlink()
        elif not any(p.name.endswith(".incomplete") for p in leftovers):
            raise ModelNotFound(f"{name!r} was not downloaded by URL into {self.root}")
        for leftover in leftovers:
            if leftover.name.endswith(".incomplete"):
                freed += leftover.stat().st_size
            leftover.unlink(missing_ok=True)
        return freed


def _files(folder: Path, suffix: str) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))
    except OSError:
        return []


# -- the provider --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Probe:
    """What the server said about the file before any byte of it moved."""

    size: int | None
    #: True: it honours Range; False: it sends the whole file; None: it did not say
    ranges: bool | None
    disposition: str | None
    #: ETag, else Last-Modified: tells whether the file changed since it was fetched
    validator: str | None


@dataclass
class _UrlPlan(PlanDetail):
    name: str
    transfer: FileTransfer
    validator: str | None
    #: the sha256 known before the fetch (given, or recorded for a file already here)
    known_sha256: str | None
    verified: bool


class _HashingEngine(TransferEngine):
    """The engine for a file without a published digest.

    It computes the sha256 of what arrived (while it arrives, as always) and
    keeps it in :attr:`sha256` instead of comparing it; everything else -
    parts, resume, retries, stall detection, the rename into place - is the
    engine's own. The engine has no such mode yet, hence this subclass; the
    digest it is given only names the part state (it changes with the URL,
    size and validator, so a partial of another version is never resumed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sha256: dict[str, str] = {}

    async def _verify(self, transfer: FileTransfer, writer: DiskWriter) -> None:
        label = f"{transfer.key}: computing its sha256 (no sha256 was given to check it against)"
        self.tracker.verifying = label
        try:
            await writer.finish()
            self.sha256[transfer.key] = writer.hexdigest()
        except HashCancelled:
            raise asyncio.CancelledError() from None
        finally:
            if self.tracker.verifying == label:
                self.tracker.verifying = None


class UrlProvider(Provider):
    """One file from an http(s) URL into a folder."""

    def __init__(self, source: Source, model: str, token: Secret | None, options: dict[str, Any]) -> None:
        ref = parse_url_ref(model)
        super().__init__(describe(ref.url), token, None, options)
        self.name = source.name
        self.url = ref.url
        self.sha256 = _expected_sha256(ref, options)
        local_dir = options.get("local_dir")
        if local_dir is not None and not isinstance(local_dir, (str, os.PathLike)):
            raise InvalidOption(f"option 'local_dir' must be a folder path, got {local_dir!r}")
        self.folder = UrlFolder(Path(local_dir).expanduser() if local_dir else default_url_dir())
        self._auth = BearerAuth(token, self.url.origin())
        self._file = ""
        #: (sha256, verified) of the file once fetched
        self._fetched: tuple[str, bool] | None = None

    # -- plan ----------------------------------------------------------------
    async def plan(self) -> Plan:
        probe = await retry_request(self.policy, self._probe, what=f"request for {self.model}")
        name = self._file_name(probe)
        if probe.size is None:
            raise IncompatibleModel(
                f"{self.model} does not say how large the file is (no Content-Length or "
                "Content-Range), so it cannot be fetched resumably and checked for completeness"
            )
        size = probe.size
        known, verified = await self._already_here(name, size, probe)
        key = (self.sha256 or _version_key(self.model, size, probe.validator))[:16]
        slot = self.folder.slot(name, key)
        digest = f"sha256:{self.sha256 or _version_key(self.model, size, probe.validator)}"
        local = known is not None
        transfer = FileTransfer(
            url=str(self.url), dest=slot.final, size=size, digest=digest, key=name,
            partial=slot.partial, lock=slot.lock, trust_existing=local,
            owner={"provider": self.name, "model": self.model},
        )
        present = size if local else present_bytes(transfer)
        shown_digest = f"sha256:{known or self.sha256}" if (known or self.sha256) else None
        item = PlanItem(name, size, shown_digest, local=local, present_bytes=present)
        notes = [self._range_note(probe)]
        if self.sha256:
            notes.append(f"Verified against sha256 {self.sha256} before it gets its name")
        elif known:
            notes.append(f"Already here, not verified (no sha256 was given): its sha256 is {known}")
        else:
            notes.append(
                "Not verified: no sha256 was given (option sha256=HEX or a #sha256=HEX fragment); "
                "the sha256 of the bytes received is computed and reported"
            )
        detail = _UrlPlan(name, transfer, probe.validator, known, verified)
        self._file = name
        return Plan(self.name, self.model, [item], str(slot.final), None, notes=notes, detail=detail)

    async def _already_here(self, name: str, size: int, probe: _Probe) -> tuple[str | None, bool]:
        """(sha256, verified) of the file already at its place when it is this file, else (None, False)."""
        record = self.folder.record(name)
        if record is not None and record.get("size") == size:
            recorded = record.get("sha256")
            if self.sha256 and recorded == self.sha256:
                return recorded, True
            same_source = record.get("url") == self.model and (
                probe.validator is None or record.get("validator") == probe.validator
            )
            if not self.sha256 and same_source and isinstance(recorded, str):
                return recorded, bool(record.get("verified"))
        final = self.folder.root / name
        if not self.sha256 or not final.is_file() or final.stat().st_size != size:
            return None, False
        # a file modelpull did not place (or another version of it): it counts once its sha256 matches
        cancel = threading.Event()
        try:
            same = await asyncio.to_thread(file_has_digest, final, f"sha256:{self.sha256}", size, cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        if not same:
            return None, False
        self.folder.write_record(name, url=self.model, sha256=self.sha256, verified=True,
                                 validator=probe.validator)
        return self.sha256, True

    def _file_name(self, probe: _Probe) -> str:
        if probe.disposition:
            named = disposition_filename(probe.disposition)
            if named is not None:
                return check_file_name(named, f"the Content-Disposition of {self.model}")
        last = unquote(self.url.raw_path.rsplit("/", 1)[-1])
        return check_file_name(last, f"the URL {self.model}")

    @staticmethod
    def _range_note(probe: _Probe) -> str:
        if probe.ranges is True:
            return "The server honours Range: the file comes in parallel parts and resumes where it stopped"
        if probe.ranges is False:
            return ("The server ignores Range: the file comes as one stream, and an interrupted "
                    "download is sent again from its start (the bytes already here are skipped)")
        return "The server did not say whether it honours Range: the first response tells"

    # -- talking to the server ---------------------------------------------------
    async def _probe(self) -> _Probe:
        status, headers, wait = await self._ask("HEAD", {})
        length = headers.get("Content-Length", "")
        if 200 <= status < 300 and length.isdigit() and int(length) > 0:
            accepts = headers.get("Accept-Ranges", "").strip().lower()
            return _Probe(int(length), {"bytes": True, "none": False}.get(accepts),
                          headers.get("Content-Disposition"), _validator(headers))
        if status not in (401, 403, 405, 501) and status >= 300:
            raise self._status_error(status, wait)
        # No size from HEAD (or HEAD refused: a URL signed for GET only): ask for one byte.
        status, headers, wait = await self._ask("GET", {"Range": "bytes=0-0"})
        if status in (206, 416):
            match = _CONTENT_RANGE.fullmatch(headers.get("Content-Range", "").strip())
            size = int(match.group(1)) if match else None
            ranges: bool | None = True
        elif 200 <= status < 300:
            length = headers.get("Content-Length", "")
            size, ranges = (int(length) if length.isdigit() else None), False
        else:
            raise self._status_error(status, wait)
        return _Probe(size, ranges, headers.get("Content-Disposition"), _validator(headers))

    async def _ask(
        self, method: str, headers: dict[str, str]
    ) -> tuple[int, CIMultiDictProxy[str], float | None]:
        """Status and headers of ``method url`` (redirects followed), the body left unread."""
        try:
            response = await send(
                self.session, self.url, {"Accept-Encoding": "identity", **headers}, self._auth,
                method=method,
            )
        except asyncio.TimeoutError:
            raise TransferTimeout(
                f"{self.model} did not answer within {self.policy.stall_timeout:.0f} s"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionFailed(f"cannot connect to {self.url.host}: {exc.os_error}") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"the request for {self.model} failed ({type(exc).__name__})") from None
        status, answer, wait = response.status, response.headers, retry_after(response)
        response.close()  # a GET answered with the whole file: its body is not wanted here
        return status, answer, wait

    def _status_error(self, status: int, wait: float | None = None) -> ModelpullError:
        if status in (401, 403):
            return self._auth_error(status)
        if status in (404, 410):
            return ModelNotFound(f"{self.model} does not exist (HTTP {status}); check the URL")
        if status == 429 or status >= 500:
            return ServerBusy(f"{self.model} answered HTTP {status}; the server is failing or "
                              "overloaded, try again later", wait)
        return ServerError(f"{self.model} answered HTTP {status}, not the file")

    def _auth_error(self, status: int) -> AuthRequired:
        host = self.url.host
        if self.token:
            return AuthRequired(f"{host} refused the token for {self.model} (HTTP {status}); check "
                                "that it is valid and grants access to this file")
        return AuthRequired(f"{self.model} needs credentials (HTTP {status}): pass a token (--token "
                            f"or MODELPULL_TOKEN); it is sent as 'Authorization: Bearer' to {host} only")

    def _error_for_response(self, response: aiohttp.ClientResponse, body: str) -> ModelpullError | None:
        if response.status in (401, 403):
            return self._auth_error(response.status)
        if response.status in (404, 410):
            return ModelNotFound(f"{self.model} is no longer there (HTTP {response.status}); check the URL")
        return None

    # -- fetch ---------------------------------------------------------------
    async def fetch(self, plan: Plan, tracker: ProgressTracker) -> str:
        detail = plan.detail
        assert isinstance(detail, _UrlPlan)
        transfer = detail.transfer
        engine_class = TransferEngine if self.sha256 or detail.known_sha256 else _HashingEngine
        engine = engine_class(self.session, self.policy, tracker, auth=self._auth,
                              error_for_response=self._error_for_response)
        await engine.fetch(transfer)
        sha256 = detail.known_sha256 or self.sha256
        if sha256 is None:
            assert isinstance(engine, _HashingEngine)
            sha256 = engine.sha256[detail.name]
        verified = bool(self.sha256) or detail.verified
        if not transfer.trust_existing:
            self.folder.write_record(detail.name, url=self.model, sha256=sha256, verified=verified,
                                     validator=detail.validator)
        if not verified:
            plan.notes.append(
                f"sha256 of {detail.name}: {sha256} (computed from the bytes received; not verified)"
            )
        self._fetched = (sha256, verified)
        return str(transfer.dest)

    # -- what is on disk ---------------------------------------------------------
    async def local_copy(self) -> LocalCopy | None:
        """The file a previous download of this URL (or of this sha256) placed, as recorded.

        The name comes from the server, so offline it is found through the records;
        with a sha256 the copy is pinned: content named by its digest needs no network.
        """
        for record_file in _files(self.folder.state, ".json"):
            name = record_file.name[: -len(".json")]
            record = self.folder.record(name)
            if record is None:
                continue
            same_sha = bool(self.sha256) and record.get("sha256") == self.sha256
            if record.get("url") != self.model and not same_sha:
                continue
            if self.sha256 and not same_sha:
                continue  # this URL once gave other bytes than the ones asked for now
            path = self.folder.root / name
            size = int(record["size"])
            sha256 = record.get("sha256")
            item = PlanItem(name, size, f"sha256:{sha256}" if sha256 else None, local=True, present_bytes=size)
            self._file = name
            plan = Plan(self.name, self.model, [item], str(path))
            return LocalCopy(plan, str(path), path.stat().st_mtime, pinned=same_sha)
        return None

    def space_needed(self, plan: Plan) -> list[tuple[Path, int]]:
        return [(self.folder.root, plan.missing_bytes)]

    # -- messages ------------------------------------------------------------
    def starting_message(self, plan: Plan) -> str:
        text = f"Downloading {self._file} from {self.model}: {plan.summary()}"
        if not self.sha256:
            text += "; no sha256 was given, so it will not be verified (its sha256 is reported)"
        return text

    def progress_message(self, tracker: ProgressTracker) -> str:
        return f"Downloading {self._file or self.model}"

    def verified_message(self, plan: Plan, fetched: list[PlanItem]) -> str:
        sha256, verified = self._fetched or (None, True)
        if verified:
            return super().verified_message(plan, fetched)
        return f"{self._file}: computing its sha256 gave {sha256} (no sha256 was given to check it against)"

    def complete_message(self, plan: Plan, path: str) -> str:
        sha256, verified = self._fetched or (None, True)
        if verified:
            return super().complete_message(plan, path)
        return (f"Downloaded {self._file} to {path} (not verified: no sha256 was given; the sha256 of "
                f"the bytes received is {sha256})")


def _expected_sha256(ref: UrlRef, options: dict[str, Any]) -> str | None:
    given = str_option(options, "sha256")
    if given is not None and not _HEX64.fullmatch(given.strip()):
        raise InvalidOption(f"option 'sha256' must be 64 hex digits, got {given[:80]!r}")
    given = given.strip().lower() if given else None
    if given and ref.sha256 and given != ref.sha256:
        raise InvalidOption("the sha256 option and the URL's #sha256= fragment differ; give one")
    return given or ref.sha256


def _version_key(url: str, size: int, validator: str | None) -> str:
    """Names the part state of a file without a published digest: one version of one URL."""
    return hashlib.sha256(f"modelpull url\0{url}\0{size}\0{validator or ''}".encode()).hexdigest()


def _validator(headers: CIMultiDictProxy[str]) -> str | None:
    value = headers.get("ETag") or headers.get("Last-Modified")
    return value.strip()[:200] if value else None


def _build(source: Source, model: str, token: Secret | None, base_url: str | None,
           options: dict[str, Any]) -> UrlProvider:
    if base_url:
        raise InvalidOption(f"provider {source.name!r} takes no base_url: the URL is the address")
    return UrlProvider(source, model, token, options)


# -- the folder as a place -----------------------------------------------------------------
URL_DIR = Location(
    "url_dir", "--url-dir",
    "Folder of files downloaded by URL (default: url/ in modelpull's data folder, "
    "~/.local/share/modelpull/url on Linux).",
)


def _folder_of(settings: Settings) -> UrlFolder:
    value = URL_DIR.value(settings)
    return UrlFolder(Path(value).expanduser() if value else default_url_dir())


def name_of(reference: str) -> str:
    """The file a reference names: a URL's last path segment, or the name itself."""
    text = reference.strip().split("#", 1)[0].split("?", 1)[0].rstrip("/")
    return unquote(text.rsplit("/", 1)[-1])


def _partials(settings: Settings) -> list[PartialDownload]:
    folder = _folder_of(settings)

    def name(path: Path) -> str:  # <name>.<key>.incomplete
        return path.name.removesuffix(".incomplete").rsplit(".", 1)[0]

    return scan_partials(_files(folder.state, ".incomplete"), "url", "url", name, name)


def _delete(source: Source, model: str, settings: Settings) -> dict[str, Any]:
    name = name_of(model)
    freed = _folder_of(settings).delete(name)
    return {"provider": source.name, "name": name, "freed_bytes": freed, "source": "url"}


URL_FILES = Place(
    name="url",
    title="Files downloaded by URL",
    locations=(URL_DIR,),
    list=lambda settings: _folder_of(settings).list(),
    delete=_delete,
    same_model=lambda a, b: name_of(a) == name_of(b),
    partials=_partials,
)

URL_SOURCE = Source(
    name="url",
    title="A file by URL",
    summary="One file from an http(s) link (a GGUF someone handed you), resumable, verified when "
            "you give its sha256.",
    example="https://huggingface.co/bartowski/Qwen_Qwen3-8B-GGUF/resolve/main/Qwen_Qwen3-8B-Q4_K_M.gguf",
    reference="http(s)://host/path/file[#sha256=HEX]",
    parse=parse_url_ref,
    build=_build,
    options=(
        Option("sha256", "str", "the file's sha256 (64 hex digits): it is verified before it gets "
                                "its name"),
        Option("local_dir", "path", "put the file into this folder (default: url/ in modelpull's "
                                    "data folder)"),
        *TRANSFER_OPTIONS,
        *COMMON_OPTIONS,
    ),
    base_url_help=None,
    place=URL_FILES,
    folder_option="local_dir",
    folder_setting=URL_DIR,
    rank=80,
)
