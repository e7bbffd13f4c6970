"""The ModelScope cache, laid out so that every ``modelscope`` SDK finds a model in it.

Two layouts exist (docs PROTOCOLS.md section 10):

    <hub>/models/<owner>/<name___>/<path>             the one-folder layout of modelscope <= 1.37,
    <hub>/models/<owner>/<name___>/.msc .mdl .mv      with its index files (pickles)
    <root>/models/<owner>--<name>/snapshots/<revision>/<path>   modelscope-hub (modelscope >= 1.38)

``<root>`` is ``cache_dir``, else ``MODELSCOPE_CACHE``, else ``~/.cache/modelscope``;
``<hub>`` is the same folder when it was given, else ``~/.cache/modelscope/hub``
(where the old SDK kept its default cache). ``name___`` is the name with every
``.`` replaced by ``___``.

A new model is written in the one-folder layout: the old SDK reads it through
``.msc`` and modelscope-hub looks there first (its "legacy cache" lookup) both
for ``snapshot_download(..., local_files_only=True)`` and before downloading.
When the SDK already keeps the repo in the snapshots layout, files go there
instead, so a snapshot the SDK started is completed rather than shadowed.

Partial downloads, locks and modelpull's record of verified files live in
``<root>/.modelpull/``, a folder of plain files: modelscope-hub takes any
non-empty model folder as complete, and its cache scan lists every sub-folder
of the cache root's sub-folders as a model.

With ``local_dir`` the files go straight into that folder (as the SDKs'
``local_dir`` does), with modelpull's bookkeeping in its hidden ``.modelpull/``.

Neither SDK records a file's sha256 in the cache (the old one keeps path and
commit in ``.msc``; modelscope-hub keeps nothing and hashes the file whenever
it checks it), so :meth:`ModelScopeCacheStore.is_complete` checks size and
sha256, and skips the hashing only for a file this store published and nobody
changed since. A file of the right size alone is not enough: another revision's
file may have the same size. As a
:class:`~modelpull.providers._repo.RepoStore`, the store answers
:meth:`~ModelScopeCacheStore.is_current` from its record alone and adopts a
file it did not publish once the provider has hashed it (off the event loop).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock

from .._durable import write_atomic
from .._safepath import join_inside, safe_relative
from ..errors import InvalidModel, ModelNotFound, UnsafeSource
from .hf_cache import LocalSnapshot
from .paths import FileSlot

DEFAULT_REVISION = "master"
STATE_FOLDER = ".modelpull"
#: the old SDK's index files inside a one-folder model
INDEX_FILE, META_FILE, VERSION_FILE = ".msc", ".mdl", ".mv"
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_MAX_INDEX_BYTES = 64 * 1024 * 1024
_HASH_BLOCK = 4 * 1024 * 1024


def default_cache_dir() -> Path:
    """``MODELSCOPE_CACHE``, else ``~/.cache/modelscope`` (modelscope-hub's default)."""
    env = os.environ.get("MODELSCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modelscope"


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """(root, hub): where snapshots go and where the one-folder models go."""
    if cache_dir is not None:
        root = Path(cache_dir).expanduser()
        return root, root
    root = default_cache_dir()
    return root, root if os.environ.get("MODELSCOPE_CACHE") else root / "hub"


def state_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where modelpull keeps partial files, locks and records for a cache."""
    return _cache_root(cache_dir)[0] / STATE_FOLDER


def split_repo_id(repo_id: object) -> tuple[str, str]:
    """``owner/name`` as ModelScope allows it, else :class:`InvalidModel`."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(_PART.fullmatch(p) and ".." not in p for p in parts):
        shown = str(repo_id)[:80]
        raise InvalidModel(
            f"invalid ModelScope model id {shown!r}: expected 'owner/name' made of letters, "
            "digits, '-', '_' and '.', e.g. 'Qwen/Qwen2.5-0.5B-Instruct'"
        )
    return parts[0], parts[1]


def folder_name(name: str) -> str:
    """The old SDK's folder name for a model name (every ``.`` becomes ``___``)."""
    return name.replace(".", "___")


#: where one repo file's bytes go: partial (outside the model folder), final file, lock
MsFileSlot = FileSlot


class ModelScopeCacheStore:
    """One model's files in the ModelScope cache (or ``local_dir``), at one revision."""

    #: files are named by their path, not their content
    content_addressed = False
    #: a file already in the folder that this store did not publish (the SDK downloaded
    #: it, say) is kept when its sha256 matches
    adopts_existing = True

    def __init__(
        self,
        repo_id: str,
        revision: str = DEFAULT_REVISION,
        cache_dir: str | os.PathLike[str] | None = None,
        local_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.owner, self.name = split_repo_id(repo_id)
        self.repo_id = repo_id
        safe_relative(revision)  # a revision names a folder under snapshots/
        self.revision = revision
        self.root, hub = _cache_root(cache_dir)
        self.one_folder = hub / "models" / self.owner / folder_name(self.name)
        # where modelscope-hub looks for a one-folder model, in its order
        self._sdk_one_folders = [
            self.root / "models" / self.owner / folder_name(self.name),
            self.root / "hub" / "models" / self.owner / folder_name(self.name),
        ]
        self.snapshots = self.root / "models" / f"{self.owner}--{self.name}" / "snapshots"
        self.local_dir = Path(local_dir).expanduser() if local_dir else None
        self._record: tuple[tuple[int, int, int], dict[str, list[Any]]] | None = None
        if self.local_dir is not None:
            self.root = self.local_dir
            self.state = self.local_dir / STATE_FOLDER
            self.folder = self.local_dir
        else:
            self.state = self.root / STATE_FOLDER
            self.folder = self._choose_folder()

    @property
    def layout(self) -> str:
        """``"one-folder"`` (modelscope <= 1.37 layout), ``"snapshots"`` (modelscope-hub)
        or ``"local-dir"``."""
        if self.local_dir is not None:
            return "local-dir"
        return "snapshots" if self.snapshots in self.folder.parents else "one-folder"

    def _choose_folder(self) -> Path:
        # modelscope-hub reads a non-empty one-folder model before any snapshot,
        # so that is where files must go once it exists.
        for folder in (self.one_folder, *self._sdk_one_folders):
            if _non_empty(folder):
                return folder
        if any(_non_empty(s) for s in _children(self.snapshots)):
            return self.snapshots / self.revision
        return self.one_folder

    # -- files ---------------------------------------------------------------
    def slot(self, path: str, sha256: str) -> FileSlot:
        final = join_inside(self.folder, path)
        key = hashlib.sha256(f"{self.folder}\0{path}\0{sha256}".encode()).hexdigest()[:32]
        stem = self.state / f"{_state_prefix(self.owner, self.name)}{key}"
        partial = stem.with_name(stem.name + ".incomplete")
        return FileSlot(final, partial, stem.with_name(stem.name + ".lock"))

    def is_complete(self, path: str, size: int, sha256: str) -> bool:
        """True when the file is in the model folder with this size and sha256 (hashes it
        unless this store published it and nobody changed it since)."""
        if self.is_current(path, sha256, size):
            return True
        final = join_inside(self.folder, path)
        try:
            return final.is_file() and final.stat().st_size == size and _sha256_of(final) == sha256
        except OSError:
            return False

    def is_current(self, path: str, etag: str, size: int) -> bool:
        """True when this store published the file with this sha256 and it is unchanged
        since (size and modification time as recorded). Never hashes."""
        final = join_inside(self.folder, path)
        try:
            stat = final.stat()
        except OSError:
            return False
        if not final.is_file() or stat.st_size != size:
            return False
        return self._verified().get(path) == [size, stat.st_mtime_ns, etag]

    def destination(self, commit: str) -> Path:
        return self.folder

    def file_path(self, commit: str, path: str, etag: str) -> Path:
        return join_inside(self.folder, path)

    def recorded_commits(self) -> dict[str, str]:
        """The commit the old SDK's index names for each file (empty outside that layout)."""
        if self.layout != "one-folder":
            return {}
        return {
            str(e["Path"]): str(e["Revision"]) for e in read_sdk_index(self.folder)
            if isinstance(e.get("Path"), str) and isinstance(e.get("Revision"), str)
        }

    # -- publishing ------------------------------------------------------------
    def publish(
        self,
        commit: str,
        revision: str,
        files: list[tuple[str, str]],
        *,
        file_commits: Mapping[str, str] | None = None,
        created_at: int | None = None,
    ) -> Path:
        """Record every (path, sha256), already at its final place, for the SDKs and for us.

        ``file_commits`` gives a file's own commit (the listing's per-file
        ``Revision``) for the old SDK's index, which must match it for the old
        SDK to skip the file when it downloads; ``commit`` stands in for files
        not in it. ``created_at`` is the revision's creation time (now if not
        given). Returns the model folder.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        # two downloads of one model must not lose each other's index entries
        with FileLock(str(self.state / f"{_state_prefix(self.owner, self.name)}publish.lock")):
            if self.layout == "one-folder":
                self._write_sdk_index(commit, revision, files, file_commits or {}, created_at)
            verified = dict(self._verified())
            for path, sha256 in files:
                stat = join_inside(self.folder, path).stat()
                verified[path] = [stat.st_size, stat.st_mtime_ns, sha256]
            record = {"folder": str(self.folder), "files": verified}
            write_atomic(self._record_path(), json.dumps(record, sort_keys=True).encode())
        return self.folder

    # -- offline runs ----------------------------------------------------------
    def record_tree(self, commit: str, tree: dict[str, dict[str, Any]]) -> None:
        """Keep the repo's full listing at this revision, so an offline run knows what a
        complete copy holds."""
        write_atomic(self._tree_path(), json.dumps(
            {"folder": str(self.folder), "revision": self.revision, "commit": commit, "files": tree},
            sort_keys=True,
        ).encode())

    def local_snapshot(self, revision: str) -> LocalSnapshot | None:
        """What this folder holds of ``revision``, from the listing recorded when it was
        downloaded (so what is missing is known too). Never hashes, never asks the network."""
        try:
            listed = json.loads(self._tree_path().read_text())
        except (OSError, ValueError):
            listed = None
        if (
            isinstance(listed, dict) and listed.get("folder") == str(self.folder)
            and revision in (listed.get("revision"), listed.get("commit"))
            and isinstance(listed.get("files"), dict)
        ):
            try:
                files = [(path, int(info["size"]), str(info["lfs_sha256"]))
                         for path, info in listed["files"].items()]
            except (KeyError, TypeError, ValueError):
                files = None
            if files is not None:
                since = self._tree_path().stat().st_mtime
                return LocalSnapshot(str(listed.get("commit") or revision), files, True, since)
        return None  # without the listing recorded for this revision, nothing is known of it

    def _tree_path(self) -> Path:
        return self.state / f"{_state_prefix(self.owner, self.name)}{_safe_name(self.revision)}.tree.json"

    def _write_sdk_index(
        self,
        commit: str,
        revision: str,
        files: Sequence[tuple[str, str]],
        file_commits: Mapping[str, str],
        created_at: int | None,
    ) -> None:
        published = {path for path, _ in files}
        entries = [e for e in read_sdk_index(self.folder) if e.get("Path") not in published]
        entries += [{"Path": path, "Revision": file_commits.get(path, commit)} for path, _ in files]
        # protocol 4: readable by every Python the old SDK runs on
        write_atomic(self.folder / INDEX_FILE, pickle.dumps(entries, protocol=4))
        meta = {"id": f"{self.owner}/{folder_name(self.name)}"}
        write_atomic(self.folder / META_FILE, pickle.dumps(meta, protocol=4))
        when = int(time.time()) if created_at is None else created_at
        write_atomic(self.folder / VERSION_FILE, f"Revision:{revision},CreatedAt:{when}".encode())

    def _record_path(self) -> Path:
        return self.state / f"{_state_prefix(self.owner, self.name)}verified.json"

    def _verified(self) -> dict[str, list[Any]]:
        """The record of what this store published (read again only when it changed)."""
        path = self._record_path()
        try:
            stat = path.stat()
            version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if self._record is not None and self._record[0] == version:
                return self._record[1]
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        mine = isinstance(record, dict) and record.get("folder") == str(self.folder)
        files = record.get("files") if mine else None
        if not isinstance(files, dict):
            files = {}
        self._record = (version, files)
        return files


# -- the old SDK's index, read without running pickled code -----------------------
class _PlainDataUnpickler(pickle.Unpickler):
    """Lists, dicts, strings and numbers only: a pickle naming any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a cache index")


def _load_plain_pickle(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_INDEX_BYTES + 1)
        if len(data) > _MAX_INDEX_BYTES:
            return None
        return _PlainDataUnpickler(io.BytesIO(data)).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError):
        return None


def read_sdk_index(folder: Path) -> list[dict[str, Any]]:
    """The old SDK's ``.msc`` entries (``{"Path", "Revision"}``) of a one-folder model."""
    data = _load_plain_pickle(folder / INDEX_FILE)
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


# -- listing and deleting ----------------------------------------------------------
def list_local(cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Models in the ModelScope cache, one entry per model folder or snapshot.

    Each entry: ``name`` ("owner/name"), ``revision`` (the snapshot's name, or
    what the old SDK's ``.mv`` says; None if unknown), ``layout`` ("one-folder"
    or "snapshots"), ``path``, ``size`` (bytes of its files), ``files``
    (relative paths), ``modified`` (newest file's mtime) and ``partial_bytes``
    (modelpull's unfinished downloads for the model). Symlinked folders (the old
    SDK links ``name`` to ``name___``) and empty folders are left out.
    """
    root, hub = _cache_root(cache_dir)
    partials = _partial_bytes(root / STATE_FOLDER)
    found: list[dict[str, Any]] = []
    for owner in _children(hub / "models"):
        if owner.name.startswith(".") or "--" in owner.name or owner.is_symlink():
            continue
        for folder in _children(owner):
            if folder.is_symlink() or folder.name.startswith("."):
                continue
            name = f"{owner.name}/{folder.name.replace('___', '.')}"
            entry = _entry(name, _one_folder_revision(folder), "one-folder", folder)
            if entry is not None:
                entry["partial_bytes"] = partials.get(f"{owner.name}--{name.split('/')[1]}", 0)
                found.append(entry)
    for repo in _children(root / "models"):
        if "--" not in repo.name or repo.name.startswith("."):
            continue
        owner_name, _, model_name = repo.name.partition("--")
        for snapshot in _children(repo / "snapshots"):
            entry = _entry(f"{owner_name}/{model_name}", snapshot.name, "snapshots", snapshot)
            if entry is not None:
                entry["partial_bytes"] = partials.get(repo.name, 0)
                found.append(entry)
    return found


def delete_local(name: str, cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Remove ``owner/name`` from the cache: its folder in either layout and modelpull's partials.

    Returns ``{"name", "paths", "freed_bytes"}``. Raises :class:`InvalidModel`
    for a bad name and :class:`ModelNotFound` when the cache has no such model.
    """
    owner, model = split_repo_id(name)
    root, hub = _cache_root(cache_dir)
    candidates = [
        hub / "models" / owner / folder_name(model),
        hub / "models" / owner / model,  # the old SDK's symlink for a dotted name
        root / "models" / f"{owner}--{model}",
    ]
    removed: list[str] = []
    freed = 0
    for path in candidates:
        if path.is_symlink():
            path.unlink()
            removed.append(str(path))
        elif path.is_dir():
            freed += _tree_size(path)
            shutil.rmtree(path)
            removed.append(str(path))
    if not removed:
        raise ModelNotFound(f"{owner}/{model} is not in the ModelScope cache at {root}")
    for leftover in _children_files(root / STATE_FOLDER, prefix=_state_prefix(owner, model)):
        freed += leftover.stat().st_size
        leftover.unlink(missing_ok=True)
    try:
        (hub / "models" / owner).rmdir()
    except OSError:
        pass
    return {"name": f"{owner}/{model}", "paths": removed, "freed_bytes": freed}


# -- helpers -----------------------------------------------------------------------
def find_blob(sha256: str, size: int, cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Files this cache holds with these bytes, by modelpull's records of what it verified.

    A record names each file's size, modification time and sha256 when it was
    published; a file changed since (another size or time) is left out.
    """
    from .paths import check_sha256_hex

    check_sha256_hex(sha256)
    found: list[Path] = []
    for record_path in state_folder(cache_dir).glob("*verified.json"):
        try:
            record = json.loads(record_path.read_text())
            folder = Path(record["folder"])
            files = record["files"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not isinstance(files, dict):
            continue
        for path, entry in files.items():
            if not (isinstance(entry, list) and len(entry) == 3 and entry[2] == sha256 and entry[0] == size):
                continue
            try:
                final = join_inside(folder, path)
                stat = final.stat()
            except (OSError, ValueError, UnsafeSource):
                continue
            if final.is_file() and stat.st_size == size and stat.st_mtime_ns == entry[1]:
                found.append(final)
    return found


def _state_prefix(owner: str, name: str) -> str:
    # "@" is not allowed in ModelScope names, so one model's files never match another's prefix
    return f"{owner}--{name}@"


def _entry(name: str, revision: str | None, layout: str, folder: Path) -> dict[str, Any] | None:
    files: list[tuple[str, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") and Path(dirpath) == folder:
                continue  # the old SDK's index files
            path = Path(dirpath) / f
            try:
                files.append((path.relative_to(folder).as_posix(), path.stat()))
            except OSError:
                continue
    if not files:
        return None
    return {
        "name": name,
        "revision": revision,
        "layout": layout,
        "path": str(folder),
        "size": sum(st.st_size for _, st in files),
        "files": [p for p, _ in files],
        "modified": max(st.st_mtime for _, st in files),
    }


def _one_folder_revision(folder: Path) -> str | None:
    try:
        text = (folder / VERSION_FILE).read_text(errors="replace")
    except OSError:
        return None
    match = re.match(r"Revision:([^,\s]+)", text)
    return match.group(1) if match else None


def _partial_bytes(state: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for f in _children_files(state, suffix=".incomplete"):
        repo = f.name.split("@", 1)[0]
        sizes[repo] = sizes.get(repo, 0) + f.stat().st_size
    return sizes


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def _children_files(folder: Path, prefix: str = "", suffix: str = "") -> Iterable[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p for p in entries if p.is_file() and p.name.startswith(prefix) and p.name.endswith(suffix)
    ]


def _non_empty(folder: Path) -> bool:
    try:
        return folder.is_dir() and any(folder.iterdir())
    except OSError:
        return False


def _tree_size(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for f in filenames:
            try:
                total += (Path(dirpath) / f).lstat().st_size
            except OSError:
                continue
    return total


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


__all__ = [
    "DEFAULT_REVISION",
    "ModelScopeCacheStore",
    "MsFileSlot",
    "default_cache_dir",
    "delete_local",
    "folder_name",
    "list_local",
    "read_sdk_index",
    "split_repo_id",
    "state_folder",
]


def _safe_name(revision: str) -> str:
    """A revision as one file-name part (revisions may hold ``/``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", revision) + "-" + hashlib.sha256(revision.encode()).hexdigest()[:8]
