"""The Hugging Face cache layout (and ``local_dir`` folders), as huggingface_hub reads them.

    <cache>/models--<org>--<name>/blobs/<etag>
    <cache>/models--<org>--<name>/snapshots/<commit>/<path>  -> ../../blobs/<etag>
    <cache>/models--<org>--<name>/refs/<revision>            (holds <commit>)
    <cache>/.locks/models--<org>--<name>/<etag>.lock
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .._durable import fsync_dirs, write_atomic
from .._safepath import join_inside, safe_relative
from .paths import FileSlot, check_sha256_hex, shared_bytes, with_size

_HEX40 = re.compile(r"[0-9a-f]{40}")
#: huggingface_hub's tree-listing cache format (``trees/<commit>.json``)
TREE_FORMAT = 1


@dataclass
class LocalSnapshot:
    """What a store holds of one revision, read without any network call.

    ``files`` are (path, size, etag). With ``listed`` the files come from the
    repo's full listing recorded at download time (so a file absent from disk
    is known to be missing); without it, only what is on disk is known.
    """

    commit: str
    files: list[tuple[str, int, str]]
    listed: bool
    since: float | None


def read_tree(path: Path) -> list[tuple[str, int, str]] | None:
    """A recorded repo listing (huggingface_hub's ``trees/<commit>.json``), or None."""
    try:
        data = json.loads(path.read_text())
        if data.get("format_version") != TREE_FORMAT:
            return None
        return [
            (name, int(info["size"]), str(info.get("lfs_sha256") or info["blob_id"]))
            for name, info in data["files"].items()
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_tree(path: Path, tree: dict[str, dict[str, object]]) -> None:
    """Record a repo's full listing at a commit, as huggingface_hub records it."""
    data = {"format_version": TREE_FORMAT, "files": {name: tree[name] for name in sorted(tree)}}
    write_atomic(path, json.dumps(data, indent=1).encode())


def default_cache_dir() -> Path:
    """``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, as huggingface_hub reads them."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return hf_home() / "hub"


def hf_home() -> Path:
    """``HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser()


class HfCacheStore:
    """Write a snapshot into the shared HF cache."""

    #: blobs are named by their content's etag: a blob of the right size is the right file
    content_addressed = True
    adopts_existing = False

    def __init__(self, repo_id: str, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.folder = self.root / repo_folder_name(repo_id)
        self.locks = self.root / ".locks" / self.folder.name

    def slot(self, path: str, etag: str) -> FileSlot:
        safe_relative(path)
        blob = self.folder / "blobs" / etag
        return FileSlot(blob, blob.with_name(etag + ".incomplete"), self.locks / f"{etag}.lock")

    def is_current(self, path: str, etag: str, size: int) -> bool:
        try:
            return self.slot(path, etag).final.stat().st_size == size
        except OSError:
            return False

    def snapshot_dir(self, commit: str) -> Path:
        return self.folder / "snapshots" / commit

    def destination(self, commit: str) -> Path:
        return self.snapshot_dir(commit)

    def file_path(self, commit: str, path: str, etag: str) -> Path:
        # the snapshot entry is a symlink into blobs/: join, do not resolve
        return self.snapshot_dir(commit).joinpath(*safe_relative(path).parts)

    def record_tree(self, commit: str, tree: dict[str, dict[str, object]]) -> None:
        write_tree(self.folder / "trees" / f"{commit}.json", tree)

    def local_snapshot(self, revision: str) -> LocalSnapshot | None:
        """The snapshot ``revision`` (a commit, or a branch/tag through ``refs/``) points at."""
        since: float | None = None
        if _HEX40.fullmatch(revision):
            commit = revision
        else:
            try:
                ref = join_inside(self.folder / "refs", revision)
                commit = ref.read_text().strip()
                since = ref.stat().st_mtime
            except (OSError, ValueError):
                return None
        snapshot = self.snapshot_dir(commit)
        if not _HEX40.fullmatch(commit) or not snapshot.is_dir():
            return None
        since = since or snapshot.stat().st_mtime
        listed = read_tree(self.folder / "trees" / f"{commit}.json")
        if listed is not None:
            return LocalSnapshot(commit, listed, True, since)
        files = []
        for entry in sorted(snapshot.rglob("*")):
            if not entry.is_symlink():
                continue
            blob = self.folder / "blobs" / os.path.basename(os.readlink(entry))
            try:
                files.append((entry.relative_to(snapshot).as_posix(), blob.stat().st_size, blob.name))
            except OSError:
                continue  # a link to a blob that is gone: not on disk
        return LocalSnapshot(commit, files, False, since)

    def publish(self, commit: str, revision: str, files: list[tuple[str, str]]) -> Path:
        """Link every (path, etag) into the snapshot, then point the ref at it."""
        snapshot = self.snapshot_dir(commit)
        touched: list[Path] = []
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
            touched.append(link.parent)
        snapshot.mkdir(parents=True, exist_ok=True)
        fsync_dirs(touched)  # the links are on disk before the ref names the snapshot
        if revision != commit:
            write_atomic(join_inside(self.folder / "refs", revision), commit.encode())
        return snapshot


class LocalDirStore:
    """Files straight into a folder, with huggingface_hub's local-dir metadata beside them.

    ``meta`` holds the metadata, partials and locks (default: ``.cache/huggingface/download``
    inside the folder, as huggingface_hub keeps it); ``place`` maps a repo path to its
    place in the folder (default: the same path).
    """

    def __init__(
        self,
        root: Path,
        meta: Path | None = None,
        place: Callable[[str], str] | None = None,
        adopts_existing: bool = False,
        trees: Path | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.meta = meta if meta is not None else self.root / ".cache" / "huggingface" / "download"
        #: recorded repo listings (huggingface_hub keeps them in ``.cache/huggingface/trees``)
        self.trees = trees if trees is not None else self.meta.parent / "trees"
        self._place = place
        self.content_addressed = False
        self.adopts_existing = adopts_existing

    def slot(self, path: str, etag: str) -> FileSlot:
        final = join_inside(self.root, self._place(path) if self._place else path)
        meta = join_inside(self.meta, path)
        return FileSlot(
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

    def destination(self, commit: str) -> Path:
        return self.root

    def file_path(self, commit: str, path: str, etag: str) -> Path:
        return self.slot(path, etag).final

    def record_tree(self, commit: str, tree: dict[str, dict[str, object]]) -> None:
        write_tree(self.trees / f"{commit}.json", tree)

    def local_snapshot(self, revision: str) -> LocalSnapshot | None:
        """The files whose metadata says they came from one commit (``revision`` if it is one,
        else the commit most recently written)."""
        entries: list[tuple[str, str, str, float]] = []  # path, commit, etag, time
        if not self.meta.is_dir():
            return None
        for meta in self.meta.rglob("*.metadata"):
            try:
                commit, etag, stamp = meta.read_text().splitlines()[:3]
                entries.append((meta.relative_to(self.meta).as_posix()[: -len(".metadata")], commit, etag,
                                float(stamp)))
            except (OSError, ValueError):
                continue
        if _HEX40.fullmatch(revision):
            entries = [e for e in entries if e[1] == revision]
        if not entries:
            return None
        commit = max(entries, key=lambda e: e[3])[1]
        since = max(e[3] for e in entries if e[1] == commit)
        listed = read_tree(self.trees / f"{commit}.json")
        if listed is not None:
            return LocalSnapshot(commit, listed, True, since)
        files = []
        for path, entry_commit, etag, _ in entries:
            try:
                if entry_commit == commit:
                    files.append((path, self.slot(path, etag).final.stat().st_size, etag))
            except OSError:
                continue
        return LocalSnapshot(commit, files, False, since)

    def publish(self, commit: str, revision: str, files: list[tuple[str, str]]) -> Path:
        for path, etag in files:
            write_atomic(join_inside(self.meta, path + ".metadata"), f"{commit}\n{etag}\n{time.time()}\n".encode())
        return self.root


def repo_folder_name(repo_id: str) -> str:
    """``models--org--name``: the cache folder of a model repo."""
    return "--".join(["models", *repo_id.split("/")])


# -- what is in the cache ------------------------------------------------------------
#: weights files transformers loads
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
#: read at most this much of a config.json to tell its kind
_CONFIG_LIMIT = 1 << 20


def _mlx_name(repo_id: str) -> bool:
    """``mlx-community/...``, or ``mlx`` as a word of the repo's name (``Qwen3-8B-MLX-4bit``)."""
    org, _, name = repo_id.partition("/")
    words = {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w}
    return org.lower() == "mlx-community" or "mlx" in words


def _config_quantized_for_mlx(config: Path) -> bool:
    """mlx-lm writes ``"quantization": {"group_size", "bits"}`` at the top of config.json;
    transformers calls it ``quantization_config``."""
    try:
        with open(config, "rb") as handle:
            data = json.loads(handle.read(_CONFIG_LIMIT))
    except (OSError, ValueError):
        return False
    quantization = data.get("quantization") if isinstance(data, dict) else None
    return isinstance(quantization, dict) and "bits" in quantization


def model_kind(repo_id: str, files: dict[str, Path]) -> str | None:
    """What a snapshot holds, by its files (name -> path): ``gguf``, ``mlx``, ``diffusers``,
    ``transformers``, or None.

    MLX is only what looks like an MLX conversion: a config quantized the way mlx-lm
    writes it, MLX's own weight names (``weights.*.safetensors``), or safetensors in an
    ``mlx-community`` repo or one named ``...-MLX...``. Any other repo with a config.json
    and weights is transformers (mlx-lm may well load it, but it is not an MLX model).
    """
    names = {PurePosixPath(name).name for name in files}
    if any(name.lower().endswith(".gguf") for name in names):
        return "gguf"
    safetensors = any(name.endswith(".safetensors") for name in names)
    if safetensors and "config.json" in names:
        config = next((path for name, path in files.items() if name == "config.json"), None)
        if config is not None and _config_quantized_for_mlx(config):
            return "mlx"
    if safetensors and (_mlx_name(repo_id) or any(re.fullmatch(r"weights(\.\d+)?\.safetensors", n) for n in names)):
        return "mlx"
    if "model_index.json" in names:
        return "diffusers"
    if "config.json" in names and any(name.endswith(_WEIGHTS) for name in names):
        return "transformers"
    return None


def partial_bytes(repo_folder: Path) -> int:
    """Bytes of unfinished downloads kept in a repo's ``blobs/`` for resume."""
    total = 0
    for partial in (repo_folder / "blobs").glob("*.incomplete"):
        try:
            total += partial.stat().st_size
        except OSError:
            continue
    return total


def list_local(cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every model repo in the cache (``huggingface_hub.scan_cache_dir``), partials included.

    Each entry: ``name`` (repo id), ``size``, ``path``, ``modified``, ``files``,
    ``revisions`` (newest first), ``partial_bytes``, ``format`` (the newest
    snapshot's kind, :func:`model_kind`: ``gguf``, ``mlx``, ``diffusers``,
    ``transformers`` or None), ``gguf_files`` (its GGUF files' paths) and
    ``complete`` (at least one snapshot).
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        newest: dict[str, Path] = {}
        if revisions:
            snapshot = Path(revisions[0].snapshot_path)
            newest = {f.file_path.relative_to(snapshot).as_posix(): f.file_path for f in revisions[0].files}
        found.append({
            "name": repo.repo_id,
            "size": repo.size_on_disk,
            "path": str(repo.repo_path),
            "modified": repo.last_modified or None,
            "files": repo.nb_files,
            "revisions": [r.commit_hash for r in revisions],
            "partial_bytes": partial_bytes(Path(repo.repo_path)),
            "format": model_kind(repo.repo_id, newest),
            "gguf_files": sorted(name for name in newest if name.lower().endswith(".gguf")),
            "complete": bool(revisions),
            "shared_bytes": shared_bytes(_blobs(Path(repo.repo_path))),
        })
    return found


def _blobs(repo_folder: Path) -> list[Path]:
    try:
        return [p for p in (repo_folder / "blobs").iterdir() if not p.name.endswith(".incomplete")]
    except OSError:
        return []


def find_blob(sha256: str, size: int, cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Blobs of any model repo in the cache holding these bytes (LFS blobs are named by sha256)."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return with_size(root.glob(f"models--*/blobs/{check_sha256_hex(sha256)}"), size)


def delete_local(repo_id: str, cache_dir: str | os.PathLike[str] | None = None) -> int:
    """Remove every cached revision of ``repo_id`` and its unfinished downloads; bytes freed.

    Raises :class:`~modelpull.errors.ModelNotFound` when the repo is not there.
    """
    import shutil

    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from ..errors import ModelNotFound

    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        info = None
    repo = None
    if info is not None:
        repo = next((r for r in info.repos if r.repo_type == "model" and r.repo_id == repo_id), None)
    folder = root / repo_folder_name(repo_id)
    if repo is None and not folder.is_dir():
        raise ModelNotFound(f"{repo_id} is not in the Hugging Face cache at {root}")
    freed = partial_bytes(folder)
    if repo is not None and info is not None and repo.revisions:
        strategy = info.delete_revisions(*(r.commit_hash for r in repo.revisions))
        freed += strategy.expected_freed_size
        strategy.execute()
    # What the strategy leaves (refs, partial downloads, locks) goes too.
    for leftover in (folder, root / ".locks" / folder.name):
        if leftover.is_dir() and root.resolve() in leftover.resolve().parents:
            shutil.rmtree(leftover, ignore_errors=True)
    return freed
