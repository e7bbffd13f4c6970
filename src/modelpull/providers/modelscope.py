"""The ModelScope Hub (``modelscope``, alias ``ms``): a model repo, into the ModelScope cache.

A :class:`~modelpull.providers._repo.RepoProvider` built from the ModelScope
client (:mod:`._modelscope_client`: endpoint, token, the recursive file list
with sizes and sha256), a file selector and a store:

- ``owner/name``: every file (``allow_patterns`` / ``ignore_patterns`` narrow
  it, by huggingface_hub's rules, which are also the SDK's);
- ``owner/name:Q4_K_M`` or ``owner/name/path/file.gguf``: one GGUF model, chosen
  by the Hub family's :class:`~modelpull.providers.gguf.GgufSelector` exactly as
  the ``gguf`` source chooses (``:latest`` is its default choice);
- the store is the ModelScope cache (:mod:`modelpull.stores.modelscope_cache`:
  ``MODELSCOPE_CACHE``, else the SDK's default), laid out so that the official
  ``modelscope`` package finds the model offline and does not fetch it again,
  and a model it downloaded is not fetched again here; ``local_dir`` puts the
  files straight into a folder; ``lmstudio=true`` puts a GGUF quantization (or
  an MLX repo, whole) into LM Studio's models folder, as the ``lmstudio``
  source does for Hub repos.

The endpoint is ``base_url``, else ``MODELSCOPE_ENDPOINT``, else
``MODELSCOPE_DOMAIN``, else https://modelscope.cn; the token is the argument,
else ``MODELSCOPE_API_TOKEN``, sent as the SDK sends it (cookie and Bearer),
to the endpoint only. The revision defaults to ``master``, as both SDKs'
``snapshot_download`` choose.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._safepath import safe_relative
from .._secrets import Secret
from ..errors import IncompatibleModel, InvalidModel, InvalidOption, UnsafeSource
from ..stores.lmstudio import lmstudio_store
from ..stores.modelscope_cache import DEFAULT_REVISION, ModelScopeCacheStore, split_repo_id
from ._modelscope_client import ModelScopeClient
from ._places import scan_partials
from ._repo import FileSelector, RepoFile, RepoProvider, RepoStore, Selection
from ._source import (
    COMMON_OPTIONS,
    TRANSFER_OPTIONS,
    Landing,
    LocalModel,
    Location,
    Option,
    PartialDownload,
    Place,
    Settings,
    Source,
)
from .base import bool_option, patterns_option
from .gguf import LMSTUDIO_DIR, LMSTUDIO_PLACE, MMPROJ, GgufRef, GgufSelector
from .huggingface import PatternSelector, hub_revision

__all__ = ["MODELSCOPE", "MODELSCOPE_CACHE", "ModelScopeRef", "parse_modelscope_ref"]

#: a quantization tag, as the ``gguf`` source accepts it
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_EXAMPLE_ID = "'Qwen/Qwen2.5-0.5B-Instruct'"


@dataclass(frozen=True)
class ModelScopeRef:
    """A parsed reference: the repo, and the GGUF model asked for (None: the whole repo)."""

    repo_id: str
    gguf: GgufRef | None = None


def parse_modelscope_ref(model: object) -> ModelScopeRef:
    """Parse ``owner/name``, ``owner/name:TAG`` or ``owner/name/path/file.gguf`` (offline).

    Raises :class:`~modelpull.errors.InvalidModel` with the expected forms.
    """
    if not isinstance(model, str) or not model.strip():
        raise InvalidModel(f"a ModelScope model id 'owner/name' is required, e.g. {_EXAMPLE_ID}")
    text = model.strip()
    shown = text if len(text) <= 120 else text[:117] + "..."
    parts = text.split("/")
    if len(parts) > 2:
        repo_id, path = "/".join(parts[:2]), "/".join(parts[2:])
        split_repo_id(repo_id)
        if not path.lower().endswith(".gguf"):
            raise InvalidModel(
                f"invalid ModelScope model {shown!r}: a path after 'owner/name/' must name a .gguf "
                "file; use 'owner/name:TAG' to pick a quantization, or 'owner/name' for every file"
            )
        try:
            safe_relative(path)
        except UnsafeSource:
            raise InvalidModel(f"invalid ModelScope model {shown!r}: bad file path {path[:80]!r}") from None
        return ModelScopeRef(repo_id, GgufRef(repo_id, path=path))
    repo_id, sep, tag = text.partition(":")
    split_repo_id(repo_id)
    if not sep:
        return ModelScopeRef(repo_id)
    if not _TAG.fullmatch(tag):
        raise InvalidModel(
            f"invalid ModelScope model {shown!r}: bad tag {tag[:40]!r}; expected a GGUF "
            "quantization such as 'owner/name:Q4_K_M'"
        )
    return ModelScopeRef(repo_id, GgufRef(repo_id, tag=None if tag.lower() == "latest" else tag))


class _ModelScopeGguf:
    """The Hub family's GGUF choice, with ModelScope's words for a repo that has no GGUF."""

    def __init__(self, selector: GgufSelector, lmstudio: bool) -> None:
        self.selector, self.lmstudio = selector, lmstudio

    def wanted(self, paths: list[str]) -> list[str]:
        return self.selector.wanted(paths)

    def choose(self, repo_id: str, revision: str, files: list[RepoFile]) -> Selection:
        try:
            return self.selector.choose(repo_id, revision, files)
        except IncompatibleModel:
            if self.lmstudio:
                raise IncompatibleModel(
                    f"{repo_id} has neither GGUF files nor MLX weights at revision {revision}, "
                    "so LM Studio cannot load it; fetch it into the ModelScope cache instead "
                    "(leave out lmstudio=true)"
                ) from None
            raise IncompatibleModel(
                f"{repo_id} has no GGUF files at revision {revision}, so a quantization tag "
                f"cannot choose one; fetch the whole repo with 'modelpull pull modelscope {repo_id}'"
            ) from None


def _folder_option(options: dict[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise InvalidOption(f"option {name!r} must be a folder path, got {value!r}")
    return str(value) if value else None


def _build(source: Source, model: str, token: Secret | None, base_url: str | None,
           options: dict[str, Any]) -> RepoProvider:
    ref = parse_modelscope_ref(model)
    revision = hub_revision({**options, "revision": options.get("revision") or DEFAULT_REVISION})
    lmstudio = bool_option(options, "lmstudio")
    allow, ignore = patterns_option(options, "allow_patterns"), patterns_option(options, "ignore_patterns")
    cache_dir, local_dir = _folder_option(options, "cache_dir"), _folder_option(options, "local_dir")
    models_dir = _folder_option(options, "models_dir")
    if lmstudio and (cache_dir or local_dir):
        raise InvalidOption("lmstudio=true puts the files into LM Studio's folder: it takes "
                            "models_dir, not cache_dir or local_dir")
    if models_dir and not lmstudio:
        raise InvalidOption("option 'models_dir' is LM Studio's folder: it goes with lmstudio=true")
    selector: FileSelector
    if ref.gguf is not None or lmstudio:
        if allow is not None or ignore is not None:
            raise InvalidOption(
                "allow_patterns and ignore_patterns choose among a whole repo's files; a "
                "quantization tag (or lmstudio=true) chooses one GGUF model: give one or the other"
            )
        gguf = ref.gguf or GgufRef(ref.repo_id)
        selector = _ModelScopeGguf(
            GgufSelector(gguf, bool_option(options, "mmproj", True), accepts_mlx=lmstudio), lmstudio
        )
    else:
        selector = PatternSelector(allow, ignore)
    store: RepoStore
    if lmstudio:
        store = lmstudio_store(ref.repo_id, models_dir)
    else:
        store = ModelScopeCacheStore(ref.repo_id, revision, cache_dir, local_dir)
    return RepoProvider(
        source, str(model).strip(), base_url, options, repo_id=ref.repo_id, revision=revision,
        client=ModelScopeClient(base_url, token), selector=selector, store=store,
    )


# -- the ModelScope cache as a place -----------------------------------------------------
MODELSCOPE_CACHE_DIR = Location(
    "modelscope_cache_dir", "--modelscope-cache",
    "ModelScope cache folder (default MODELSCOPE_CACHE or ~/.cache/modelscope).",
    inventory_name="modelscope_cache",
)
MODELSCOPE_ENDPOINT = Location(
    "modelscope_endpoint", "--modelscope-endpoint",
    "ModelScope address (default MODELSCOPE_ENDPOINT, MODELSCOPE_DOMAIN or modelscope.cn).",
    is_url=True, serve_only=True,
)


def _list(settings: Settings) -> list[LocalModel]:
    from ..stores import modelscope_cache

    found: dict[str, LocalModel] = {}
    for entry in modelscope_cache.list_local(MODELSCOPE_CACHE_DIR.value(settings)):
        files: list[str] = entry["files"]
        gguf = any(f.lower().endswith(".gguf") for f in files)
        model = found.get(entry["name"])
        if model is None:
            found[entry["name"]] = LocalModel(
                provider="", name=entry["name"], size_bytes=entry["size"], source="modelscope-cache",
                path=entry["path"], modified=entry["modified"], files=len(files),
                revisions=[entry["revision"]] if entry["revision"] else [],
                partial_bytes=entry["partial_bytes"], format="gguf" if gguf else None,
            )
            continue
        # one model in both layouts, or at several revisions: one entry
        model.size_bytes += entry["size"]
        model.files = (model.files or 0) + len(files)
        model.modified = max(model.modified or 0.0, entry["modified"])
        if entry["revision"] and entry["revision"] not in model.revisions:
            model.revisions.append(entry["revision"])
        if gguf:
            model.format = "gguf"
    return list(found.values())


def _repo_of(reference: str) -> str:
    """The repo a reference names (``owner/name:Q4_K_M``, ``owner/name/f.gguf``)."""
    return "/".join(reference.strip().split(":", 1)[0].split("/")[:2])


def _partials(settings: Settings) -> list[PartialDownload]:
    from ..stores import modelscope_cache

    state = modelscope_cache.state_folder(MODELSCOPE_CACHE_DIR.value(settings))

    def model_of(path: Path) -> str:  # <owner>--<name>@<key>.incomplete
        return path.name.split("@", 1)[0].replace("--", "/", 1)

    return scan_partials(sorted(state.glob("*.incomplete")), "modelscope-cache", "modelscope",
                         model_of, lambda path: "?")


def _find_blob(sha256: str, size: int, cache_dir: str | None) -> list[Path]:
    from ..stores import modelscope_cache

    return modelscope_cache.find_blob(sha256, size, cache_dir)


def _delete(source: Source, model: str, settings: Settings) -> dict[str, Any]:
    from ..stores import modelscope_cache

    removed = modelscope_cache.delete_local(_repo_of(model), MODELSCOPE_CACHE_DIR.value(settings))
    return {"provider": source.name, "name": removed["name"], "freed_bytes": removed["freed_bytes"],
            "source": "modelscope-cache"}


MODELSCOPE_CACHE = Place(
    name="modelscope-cache",
    title="ModelScope cache",
    locations=(MODELSCOPE_CACHE_DIR,),
    list=_list,
    delete=_delete,
    same_model=lambda a, b: _repo_of(a).lower() == _repo_of(b).lower(),
    partials=_partials,
    find_blob=lambda sha256, size, settings: _find_blob(sha256, size, MODELSCOPE_CACHE_DIR.value(settings)),
)

MODELSCOPE = Source(
    name="modelscope",
    aliases=("ms",),
    title="ModelScope",
    summary="A model repo (or one GGUF quantization of it) from the ModelScope Hub, into the "
            "ModelScope cache the modelscope package reads.",
    example="Qwen/Qwen2.5-0.5B-Instruct",
    reference="owner/name, owner/name:QUANT or owner/name/path/file.gguf",
    parse=parse_modelscope_ref,
    build=_build,
    options=(
        Option("revision", "str", "branch, tag or commit", DEFAULT_REVISION),
        Option("allow_patterns", "patterns", "only files matching these globs"),
        Option("ignore_patterns", "patterns", "skip files matching these globs"),
        Option("cache_dir", "path", "ModelScope cache folder (default MODELSCOPE_CACHE, else "
                                    "~/.cache/modelscope)"),
        Option("local_dir", "path", "put the files straight into this folder instead of the cache"),
        MMPROJ,
        Option("lmstudio", "bool", "put the GGUF quantization (or the MLX repo) into LM Studio's "
                                   "models folder instead of the ModelScope cache", False),
        Option("models_dir", "path", "LM Studio's models folder, with lmstudio=true (default: "
                                     "LM Studio's own setting)"),
        *TRANSFER_OPTIONS,
        *COMMON_OPTIONS,
    ),
    base_url_help="ModelScope endpoint (default MODELSCOPE_ENDPOINT, else MODELSCOPE_DOMAIN, else "
                  "https://modelscope.cn)",
    base_url_setting=MODELSCOPE_ENDPOINT,
    place=MODELSCOPE_CACHE,
    folder_option="cache_dir",
    folder_setting=MODELSCOPE_CACHE_DIR,
    moves=(Landing(LMSTUDIO_PLACE, "models_dir", LMSTUDIO_DIR, option="lmstudio"),),
    rank=75,
)
