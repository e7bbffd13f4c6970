"""The Hugging Face cache layout (and ``local_dir`` folders), as huggingface_hub reads them.

    <cache>/models--<org>--<name>/blobs/<etag>
    <cache>/models--<org>--<name>/snapshots/<commit>/<path>  -> ../../blobs/<etag>
    <cache>/models--<org>--<name>/refs/<revision>            (holds <commit>)
    <cache>/.locks/models--<org>--<name>/<etag>.lock
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.file_download import repo_folder_name

from .paths import join_inside, safe_relative


def default_cache_dir() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


@dataclass(frozen=True)
class HfFileSlot:
    """Where one repo file's bytes go: partial, final blob/file, lock."""

    final: Path
    partial: Path
    lock: Path


class HfCacheStore:
    """Write a snapshot into the shared HF cache."""

    def __init__(self, repo_id: str, cache_dir: Path | None = None) -> None:
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.folder = self.root / repo_folder_name(repo_id=repo_id, repo_type="model")
        self.locks = self.root / ".locks" / self.folder.name

    def slot(self, path: str, etag: str) -> HfFileSlot:
        safe_relative(path)
        blob = self.folder / "blobs" / etag
        return HfFileSlot(blob, blob.with_name(etag + ".incomplete"), self.locks / f"{etag}.lock")

    def snapshot_dir(self, commit: str) -> Path:
        return self.folder / "snapshots" / commit

    def publish(self, commit: str, revision: str, files: list[tuple[str, str]]) -> Path:
        """Link every (path, etag) into the snapshot, then point the ref at it."""
        snapshot = self.snapshot_dir(commit)
        for path, etag in files:
            link = join_inside(snapshot, path)
            link.parent.mkdir(parents=True, exist_ok=True)
            target = os.path.relpath(self.folder / "blobs" / etag, link.parent)
            if link.is_symlink() and os.readlink(link) == target:
                continue
            tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp)
            os.replace(tmp, link)
        snapshot.mkdir(parents=True, exist_ok=True)
        if revision != commit:
            ref = join_inside(self.folder / "refs", revision)
            ref.parent.mkdir(parents=True, exist_ok=True)
            tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
            tmp.write_text(commit)
            os.replace(tmp, ref)
        return snapshot


class HfLocalDirStore:
    """Write files straight into a folder, with huggingface_hub's local-dir metadata."""

    def __init__(self, local_dir: Path) -> None:
        self.root = Path(local_dir).expanduser()
        self.meta = self.root / ".cache" / "huggingface" / "download"

    def slot(self, path: str, etag: str) -> HfFileSlot:
        final = join_inside(self.root, path)
        meta = join_inside(self.meta, path)
        return HfFileSlot(
            final,
            meta.with_name(f"{meta.name}.{etag[:16]}.incomplete"),
            meta.with_name(meta.name + ".lock"),
        )

    def is_current(self, path: str, etag: str, size: int) -> bool:
        slot = self.slot(path, etag)
        try:
            if slot.final.stat().st_size != size:
                return False
            lines = join_inside(self.meta, path + ".metadata").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 2 and lines[1].strip() == etag

    def publish(self, commit: str, files: list[tuple[str, str]]) -> Path:
        for path, etag in files:
            meta = join_inside(self.meta, path + ".metadata")
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(f"{commit}\n{etag}\n{time.time()}\n")
        return self.root
