"""Part state: which byte ranges of a file are on disk, kept beside the partial file.

A file being fetched is cut into parts, each a ``Range`` request of its own.
The state (digest, size, every part's ``[start, end)`` and how far it got) is
saved as JSON next to the partial file, so a later run resumes every part
from the byte where it stopped. A state that does not describe the same file
(digest, size) or whose parts do not tile it exactly is ignored: the file
starts over rather than trusting it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .hashing import check_digest

log = logging.getLogger("modelpull.transfer")

STATE_SUFFIX = ".parts.json"


@dataclass
class FileTransfer:
    """One file to fetch: where from, where to, how big, and its digest."""

    url: str
    dest: Path
    size: int
    digest: str
    key: str
    partial: Path | None = None
    lock: Path | None = None
    #: a file already at ``dest`` with the right size counts as done
    trust_existing: bool = True
    #: whose file this is (``provider``, ``model``), kept in the part state so partial
    #: downloads can be listed by model
    owner: dict[str, str] = field(default_factory=dict)
    #: other files on this machine said to hold the same bytes (another store's copy of
    #: the blob): asked just before the file would be fetched, trusted once verified
    copies: Callable[[], Iterable[Path]] | None = None

    def __post_init__(self) -> None:
        check_digest(self.digest)
        if self.partial is None:
            self.partial = self.dest.with_name(self.dest.name + ".incomplete")
        if self.lock is None:
            self.lock = self.partial.with_name(self.partial.name + ".lock")

    @property
    def state_path(self) -> Path:
        assert self.partial is not None
        return self.partial.with_name(self.partial.name + STATE_SUFFIX)


@dataclass
class Part:
    start: int
    end: int
    done: int  # absolute offset: bytes [start, done) are on disk

    @property
    def finished(self) -> bool:
        return self.done >= self.end


@dataclass
class PartState:
    digest: str
    size: int
    parts: list[Part] = field(default_factory=list)
    #: bytes received so far (on disk or about to be written); drives progress
    received: int = 0
    #: resolved by the first response of a multi-part fetch: does the server honour Range?
    ranges_ok: asyncio.Future[bool] | None = field(default=None, compare=False)
    #: whose partial this is (``provider``, ``model``, ``file``), for listings of partial downloads
    owner: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def present(self) -> int:
        return sum(p.done - p.start for p in self.parts)

    def contiguous_end(self) -> int:
        """How far the file is complete from byte 0 (parts are contiguous, sorted by start)."""
        end = 0
        for part in sorted(self.parts, key=lambda p: p.start):
            if part.start != end:
                break
            end = part.done
            if not part.finished:
                break
        return end

    def to_json(self) -> str:
        data: dict[str, object] = {
            "version": 1,
            "digest": self.digest,
            "size": self.size,
            "parts": [[p.start, p.end, p.done] for p in self.parts],
        }
        if self.owner:
            data["owner"] = self.owner
        return json.dumps(data)

    @classmethod
    def load(cls, path: Path, digest: str, size: int) -> PartState | None:
        try:
            raw = json.loads(path.read_text())
            if raw.get("version") != 1 or raw["digest"] != digest or raw["size"] != size:
                return None
            parts = [Part(int(s), int(e), int(d)) for s, e, d in raw["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        covered = 0
        for part in sorted(parts, key=lambda p: p.start):
            if part.start != covered or not part.start <= part.done <= part.end:
                return None
            covered = part.end
        if covered != size:
            return None
        owner = raw.get("owner")
        return cls(digest, size, parts, owner=owner if _is_owner(owner) else {})

    def save(self, path: Path, key: str) -> None:
        """Write the state atomically; a failure only costs resumability, so it is logged."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(self.to_json())
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("could not save part state for %s: %s", key, exc)


def _is_owner(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


@dataclass(frozen=True)
class PartialFile:
    """A partial download as its part state describes it (for listings)."""

    size: int
    present: int
    owner: dict[str, str]
    modified: float


def read_partial(state_path: Path) -> PartialFile | None:
    """What a part-state file says, without knowing the file's digest; None if unreadable."""
    try:
        raw = json.loads(state_path.read_text())
        size = int(raw["size"])
        present = sum(int(d) - int(s) for s, _, d in raw["parts"])
        modified = state_path.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return None
    owner = raw.get("owner")
    return PartialFile(size, max(0, min(present, size)), owner if _is_owner(owner) else {}, modified)


def merge_following_parts(state: PartState, part: Part) -> None:
    """The server ignores Range: ``part`` streams on to the end of the file, alone."""
    dropped = [p for p in state.parts if p.start > part.start]
    state.received -= sum(p.done - p.start for p in dropped)
    state.parts = [p for p in state.parts if p.start <= part.start]
    part.end = state.size


def take_following_parts(state: PartState, queue: deque[Part], part: Part, count: int) -> None:
    """Let ``part``'s request also cover up to ``count`` untouched parts queued after it."""
    while count and queue and queue[0].start == part.end and queue[0].done == queue[0].start:
        following = queue.popleft()
        state.parts = [p for p in state.parts if p is not following]
        part.end = following.end
        count -= 1


def present_bytes(transfer: FileTransfer) -> int:
    """Bytes of ``transfer`` already on disk: final file or resumable partial."""
    try:
        if transfer.trust_existing and transfer.dest.stat().st_size == transfer.size:
            return transfer.size
    except OSError:
        pass
    state = PartState.load(transfer.state_path, transfer.digest, transfer.size)
    return state.present if state else 0
