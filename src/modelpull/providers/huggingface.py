"""The Hugging Face Hub (``huggingface``, alias ``hf``) and its MLX repos (``mlx``).

Both are a :class:`~modelpull.providers._repo.RepoProvider`: the Hub client,
a file selector (patterns; what mlx-lm loads) and a store (the HF cache, or
``local_dir``). Files land exactly as huggingface_hub lays them out, so
transformers, vLLM and mlx-lm find them.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

from .._safepath import safe_relative
from .._secrets import Secret
from ..errors import IncompatibleModel, InvalidOption, ModelNotFound, UnsafeSource
from ..refs import parse_hf_repo_id
from ..stores.hf_cache import HfCacheStore, LocalDirStore
from ._hf_client import HubClient
from ._places import HF_CACHE, HF_CACHE_DIR, HF_ENDPOINT
from ._repo import RepoFile, RepoProvider, RepoStore, Selection
from ._source import COMMON_OPTIONS, TRANSFER_OPTIONS, Option, Source
from .base import patterns_option, str_option

__all__ = ["HUGGINGFACE", "MLX", "MLX_PATTERNS", "SOURCES", "hub_revision", "hub_store"]

#: what mlx-lm loads from a repo: configs, weights, tokenizer files, chat templates
MLX_PATTERNS = (
    "*.json", "*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model",
    "*.txt", "*.jsonl", "*.jinja",
)

REVISION = Option("revision", "str", "branch, tag or commit", "main")
CACHE_DIR = Option("cache_dir", "path", "Hugging Face cache folder (default HF_HUB_CACHE)")
LOCAL_DIR = Option("local_dir", "path", "put the files straight into this folder instead of the cache")
HUB_BASE_URL = "Hub endpoint (default HF_ENDPOINT, else https://huggingface.co)"


# -- the parts -------------------------------------------------------------------------
def hub_revision(options: dict[str, Any]) -> str:
    """The ``revision`` option (default ``main``), refused if it names a path."""
    revision = str_option(options, "revision") or "main"
    try:  # the cache keeps refs/<revision>: a revision must not lead out of it
        safe_relative(revision)
    except UnsafeSource:
        raise InvalidOption(
            f"option 'revision' must be a branch, tag or commit, got {revision[:80]!r}"
        ) from None
    return revision


def hub_store(repo_id: str, options: dict[str, Any]) -> RepoStore:
    """``local_dir`` when given, else the HF cache (``cache_dir`` or the default)."""
    cache_dir, local_dir = options.get("cache_dir"), options.get("local_dir")
    for name, value in (("cache_dir", cache_dir), ("local_dir", local_dir)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise InvalidOption(f"option {name!r} must be a folder path, got {value!r}")
    if local_dir:
        return LocalDirStore(Path(local_dir))
    return HfCacheStore(repo_id, cache_dir)


class PatternSelector:
    """Every file, narrowed by ``allow_patterns`` / ``ignore_patterns`` (huggingface_hub's rules)."""

    def __init__(self, allow: list[str] | None, ignore: list[str] | None) -> None:
        self.allow, self.ignore = allow, ignore

    def wanted(self, paths: list[str]) -> list[str]:
        return [p for p in paths if _matches(p, self.allow, self.ignore)]

    def choose(self, repo_id: str, revision: str, files: list[RepoFile]) -> Selection:
        if not files:
            raise ModelNotFound(
                f"{repo_id} has no files matching the requested patterns at revision {revision}"
            )
        return Selection(files)


class MlxSelector(PatternSelector):
    """Only what mlx-lm loads, and only from a repo with safetensors weights."""

    def wanted(self, paths: list[str]) -> list[str]:
        return [p for p in super().wanted(paths) if is_mlx_file(p)]

    def choose(self, repo_id: str, revision: str, files: list[RepoFile]) -> Selection:
        if not any(f.path.endswith(".safetensors") for f in files):
            raise IncompatibleModel(
                f"{repo_id} has no .safetensors weights, so MLX cannot load it; pick an MLX "
                "conversion (e.g. from mlx-community) or use the 'huggingface' provider"
            )
        return super().choose(repo_id, revision, files)


def is_mlx_file(path: str) -> bool:
    return any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], pat) for pat in MLX_PATTERNS)


def _matches(path: str, allow: list[str] | None, ignore: list[str] | None) -> bool:
    # huggingface_hub's filter_repo_objects: a pattern ending in "/" means the folder's content
    def norm(patterns: list[str]) -> list[str]:
        return [p.replace("\\", "/") + ("*" if p.endswith(("/", "\\")) else "") for p in patterns]

    if allow is not None and not any(fnmatch.fnmatchcase(path, p) for p in norm(allow)):
        return False
    return not (ignore is not None and any(fnmatch.fnmatchcase(path, p) for p in norm(ignore)))


# -- the sources -------------------------------------------------------------------------
def _build(selector_class: type[PatternSelector]) -> Any:
    def build(source: Source, model: str, token: Secret | None, base_url: str | None,
              options: dict[str, Any]) -> RepoProvider:
        repo_id = parse_hf_repo_id(model)
        selector = selector_class(
            patterns_option(options, "allow_patterns"), patterns_option(options, "ignore_patterns")
        )
        return RepoProvider(
            source, model, base_url, options, repo_id=repo_id, revision=hub_revision(options),
            client=HubClient(base_url, token), selector=selector, store=hub_store(repo_id, options),
        )

    return build


_HUB_OPTIONS = (
    REVISION,
    Option("allow_patterns", "patterns", "only files matching these globs"),
    Option("ignore_patterns", "patterns", "skip files matching these globs"),
    CACHE_DIR,
    LOCAL_DIR,
    *TRANSFER_OPTIONS,
    *COMMON_OPTIONS,
)

HUGGINGFACE = Source(
    name="huggingface",
    aliases=("hf",),
    title="Hugging Face",
    summary="A model repo from the Hugging Face Hub, into the HF cache transformers and vLLM read.",
    example="Qwen/Qwen2.5-0.5B-Instruct",
    reference="org/name",
    parse=parse_hf_repo_id,
    build=_build(PatternSelector),
    options=_HUB_OPTIONS,
    base_url_help=HUB_BASE_URL,
    base_url_setting=HF_ENDPOINT,
    place=HF_CACHE,
    folder_option="cache_dir",
    folder_setting=HF_CACHE_DIR,
    rank=10,
)

MLX = Source(
    name="mlx",
    title="MLX (Apple silicon)",
    summary="An MLX conversion from the Hub: only what mlx-lm loads; repos without safetensors are refused.",
    example="mlx-community/Qwen2.5-0.5B-Instruct-4bit",
    reference="org/name",
    parse=parse_hf_repo_id,
    build=_build(MlxSelector),
    options=_HUB_OPTIONS,
    base_url_help=HUB_BASE_URL,
    base_url_setting=HF_ENDPOINT,
    place=HF_CACHE,
    folder_option="cache_dir",
    folder_setting=HF_CACHE_DIR,
    owns=lambda model: model.mlx,
    rank=40,
)

SOURCES = (HUGGINGFACE, MLX)
