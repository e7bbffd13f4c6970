"""LM Studio's models folder, laid out the way LM Studio lists it.

    <models>/<publisher>/<repo>/<file>.gguf            (GGUF: files side by side)
    <models>/<publisher>/<repo>/config.json, *.safetensors, ...   (MLX: the repo as is)
    <models>/.modelpull/<publisher>/<repo>/...         partials, part state, locks, metadata

``<models>`` is, in this order: the ``models_dir`` argument; the
``downloadsFolder`` entry of LM Studio's ``settings.json`` in its home folder
(``~/.lmstudio-home-pointer`` names the home when LM Studio was moved, else
``~/.lmstudio``, else the legacy ``~/.cache/lm-studio``); then the same entry
in the settings of older, Electron-era installs (``~/.config/LM Studio``,
``~/Library/Application Support/LM Studio``, ``%APPDATA%/LM Studio``); else
``<home>/models`` (``~/.lmstudio/models`` on a fresh machine).

A file appears under its final name only once it is complete and verified:
bytes go to ``<name>.<etag>.incomplete`` in the hidden ``.modelpull`` folder
and are renamed into place, so LM Studio never lists a half-downloaded model.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from .._safepath import join_inside, safe_relative
from ..errors import InvalidModel, InvalidOption, ModelNotFound, UnsafeSource
from .hf_cache import LocalDirStore
from .paths import check_sha256_hex, shared_bytes, with_size

__all__ = [
    "delete_local",
    "list_local",
    "lmstudio_home",
    "lmstudio_store",
    "resolve_models_dir",
]

#: where modelpull keeps partial files and bookkeeping inside ``<models>``
STATE_FOLDER = ".modelpull"
#: files that make a folder a model LM Studio can load
_WEIGHT_SUFFIXES = (".gguf", ".safetensors")


def lmstudio_home(home: Path | None = None) -> Path:
    """LM Studio's home folder (settings, models): pointer file, else the usual places."""
    home = home or Path.home()
    pointer = home / ".lmstudio-home-pointer"
    try:
        named = pointer.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError):
        named = []
    if named and named[0].strip() and Path(named[0].strip()).expanduser().is_dir():
        return Path(named[0].strip()).expanduser()
    for candidate in (home / ".lmstudio", home / ".cache" / "lm-studio"):
        if candidate.is_dir():
            return candidate
    return home / ".lmstudio"


def _settings_files(lm_home: Path, home: Path) -> list[Path]:
    files = [lm_home / "settings.json"]
    if sys.platform == "darwin":
        files.append(home / "Library" / "Application Support" / "LM Studio" / "settings.json")
    elif os.name == "nt":
        appdata = os.environ.get("APPDATA")
        if appdata:
            files.append(Path(appdata) / "LM Studio" / "settings.json")
    else:
        config = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
        files.append(Path(config) / "LM Studio" / "settings.json")
    return files


def _configured_folder(settings: Path) -> Path | None:
    try:
        data = json.loads(settings.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    folder = data.get("downloadsFolder") if isinstance(data, dict) else None
    if isinstance(folder, str) and folder.strip():
        return Path(folder.strip()).expanduser()
    return None


def resolve_models_dir(models_dir: str | os.PathLike[str] | None = None) -> Path:
    """The ``<models>`` folder: the argument, else LM Studio's setting, else its default."""
    if models_dir is not None:
        if not isinstance(models_dir, (str, os.PathLike)) or not str(models_dir):
            raise InvalidOption(f"option 'models_dir' must be a folder path, got {models_dir!r}")
        return Path(models_dir).expanduser()
    home = Path.home()
    lm_home = lmstudio_home(home)
    for settings in _settings_files(lm_home, home):
        folder = _configured_folder(settings)
        if folder is not None:
            return folder
    return lm_home / "models"


def _split_repo_id(repo_id: str) -> tuple[str, str]:
    publisher, _, repo = repo_id.partition("/")
    if not publisher or not repo or "/" in repo:
        raise InvalidModel(
            f"LM Studio files a model under <publisher>/<repo>; {repo_id!r} has no publisher: "
            "use the full Hub id, e.g. 'lmstudio-community/Qwen3-8B-GGUF'"
        )
    return publisher, repo


def lmstudio_store(repo_id: str, models_dir: str | os.PathLike[str] | None = None) -> LocalDirStore:
    """One model's folder in LM Studio's tree; bookkeeping in the hidden state folder.

    ``.gguf`` files are placed by their base name (LM Studio expects them side
    by side, split parts included); other files keep their path in the repo.
    A file already there (LM Studio downloaded it, say) is adopted when its
    digest matches.
    """
    publisher, repo = _split_repo_id(repo_id)
    root = resolve_models_dir(models_dir)
    return LocalDirStore(
        join_inside(root, f"{publisher}/{repo}"),
        meta=join_inside(root, f"{STATE_FOLDER}/{publisher}/{repo}"),
        place=place,
        adopts_existing=True,
        trees=join_inside(root, f"{STATE_FOLDER}/{publisher}/{repo}.trees"),
    )


def place(path: str) -> str:
    """Where a repo file goes, relative to the model folder."""
    pure = safe_relative(path)
    return pure.name if pure.suffix.lower() == ".gguf" else path


def _entry(name: str, folder: Path) -> dict[str, Any] | None:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    stats = []
    for f in files:
        try:
            if f.is_file():
                stats.append((f, f.stat()))
        except OSError:
            continue
    weights = [f for f, _ in stats if f.suffix.lower() in _WEIGHT_SUFFIXES]
    if not weights:
        return None
    gguf = any(f.suffix.lower() == ".gguf" for f in weights)
    return {
        "name": name,
        "size": sum(st.st_size for _, st in stats),
        "path": str(folder),
        "modified": max(st.st_mtime for _, st in stats),
        "format": "gguf" if gguf else "mlx",
        "files": [f.relative_to(folder).as_posix() for f, _ in stats],
        "shared_bytes": shared_bytes(f for f, _ in stats),
    }


def find_blob(sha256: str, size: int, models_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Files modelpull put in LM Studio's folder whose recorded sha256 is this one.

    Only files with modelpull's record (``<models>/.modelpull/<publisher>/<repo>/<path>.metadata``,
    whose second line is the file's etag: its sha256 for large files); files
    LM Studio downloaded itself carry no digest to go by.
    """
    check_sha256_hex(sha256)
    root = resolve_models_dir(models_dir)
    state = root / STATE_FOLDER
    found: list[Path] = []
    for record in state.glob("*/*/**/*.metadata"):
        try:
            lines = record.read_text(encoding="utf-8").splitlines()
            publisher, repo, *rest = record.relative_to(state).parts
            path = "/".join(rest).removesuffix(".metadata")
            if len(lines) < 2 or lines[1].strip() != sha256 or not path:
                continue
            found.append(join_inside(root, f"{publisher}/{repo}/{place(path)}"))
        except (OSError, UnicodeDecodeError, ValueError, UnsafeSource):
            continue
    return with_size(found, size)


def list_local(models_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Models in LM Studio's folder, one per ``<publisher>/<repo>`` that holds weights.

    Each entry: ``name`` ("publisher/repo"), ``size`` (bytes, all files),
    ``path`` (the folder), ``modified`` (newest file's mtime, POSIX seconds),
    ``format`` ("gguf" or "mlx") and ``files`` (relative paths). Hidden folders
    (partial downloads among them) are left out; a missing folder lists nothing.
    """
    root = resolve_models_dir(models_dir)
    found: list[dict[str, Any]] = []
    try:
        publishers = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    for publisher in publishers:
        try:
            repos = sorted(r for r in publisher.iterdir() if r.is_dir() and not r.name.startswith("."))
        except OSError:
            continue
        for repo in repos:
            entry = _entry(f"{publisher.name}/{repo.name}", repo)
            if entry is not None:
                found.append(entry)
    return found


def delete_local(name: str, models_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Remove ``publisher/repo`` from LM Studio's folder, with its partial downloads.

    Returns the removed model's entry (as :func:`list_local` gives it).
    Raises :class:`~modelpull.errors.ModelNotFound` when it is not there and
    :class:`~modelpull.errors.InvalidModel` for a name that is not ``publisher/repo``.
    """
    if not isinstance(name, str):
        raise InvalidModel("an LM Studio model name 'publisher/repo' is required")
    parts = PurePosixPath(name.strip("/")).parts if name else ()
    if len(parts) != 2 or any(p.startswith(".") for p in parts):
        raise InvalidModel(f"invalid LM Studio model name {name[:80]!r}: expected 'publisher/repo'")
    root = resolve_models_dir(models_dir)
    folder = join_inside(root, "/".join(parts))
    entry = _entry("/".join(parts), folder) if folder.is_dir() else None
    if entry is None:
        raise ModelNotFound(f"{name!r} is not in LM Studio's models folder {root}")
    if folder.is_symlink():  # a folder linked in from elsewhere: unlink it, keep the data
        folder.unlink()
    else:
        shutil.rmtree(folder)
    shutil.rmtree(join_inside(root, f"{STATE_FOLDER}/{parts[0]}/{parts[1]}"), ignore_errors=True)
    for empty in (folder.parent, root / STATE_FOLDER / parts[0]):
        try:
            empty.rmdir()
        except OSError:
            pass
    return entry
