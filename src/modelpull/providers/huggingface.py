"""Hugging Face Hub (and MLX repos): metadata through huggingface_hub, bytes through our engine."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils._paths import filter_repo_objects

from .._secrets import Secret, as_secret
from .._transfer import BearerAuth, FileTransfer, TransferEngine, present_bytes
from ..errors import (
    AuthRequired,
    ConnectionFailed,
    GatedModel,
    IncompatibleModel,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
    RevisionNotFound,
    ServerError,
    TransferTimeout,
    UnsafeSource,
)
from ..plan import Plan, PlanItem
from ..progress import ProgressTracker
from ..refs import parse_hf_repo_id
from ..stores.hf_cache import HfCacheStore, HfLocalDirStore
from ..stores.paths import safe_relative
from .base import TRANSFER_OPTIONS, Provider, patterns_option, str_option

DEFAULT_ENDPOINT = "https://huggingface.co"
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")

#: what mlx-lm loads from a repo: configs, weights, tokenizer files, chat templates
MLX_PATTERNS = (
    "*.json", "*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model",
    "*.txt", "*.jsonl", "*.jinja",
)


@dataclass
class HfFile:
    path: str
    size: int
    etag: str  # sha256 hex for LFS files, git blob sha1 hex otherwise
    digest: str


@dataclass
class HfPlanDetail:
    repo_id: str
    commit: str
    revision: str
    files: list[HfFile]
    store: HfCacheStore | HfLocalDirStore


def resolve_token(token: Secret | None) -> Secret | None:
    """The argument, else ``HF_TOKEN``, else the stored login."""
    if token:
        return token
    from huggingface_hub import get_token

    return as_secret(os.environ.get("HF_TOKEN") or get_token())


class HuggingFaceProvider(Provider):
    name = "huggingface"
    options = frozenset(
        {"revision", "allow_patterns", "ignore_patterns", "cache_dir", "local_dir"}
    ) | TRANSFER_OPTIONS

    def __init__(self, model: str, token: Secret | None, base_url: str | None, options: dict[str, Any]) -> None:
        super().__init__(model, token, base_url, options)
        self.repo_id = parse_hf_repo_id(model)
        self.revision = str_option(self.opts, "revision") or "main"
        try:  # the cache keeps refs/<revision>: a revision must not lead out of it
            safe_relative(self.revision)
        except UnsafeSource:
            raise InvalidOption(
                f"option 'revision' must be a branch, tag or commit, got {self.revision[:80]!r}"
            ) from None
        self.allow = patterns_option(self.opts, "allow_patterns")
        self.ignore = patterns_option(self.opts, "ignore_patterns")
        cache_dir = self.opts.get("cache_dir")
        local_dir = self.opts.get("local_dir")
        for name, value in (("cache_dir", cache_dir), ("local_dir", local_dir)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise InvalidOption(f"option {name!r} must be a folder path, got {value!r}")
        self.store: HfCacheStore | HfLocalDirStore = (
            HfLocalDirStore(Path(local_dir)) if local_dir else HfCacheStore(self.repo_id, cache_dir)
        )
        endpoint = base_url or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
        if not re.match(r"https?://[^/\s]+", endpoint):
            raise InvalidOption(f"base_url must be an http(s) URL of a Hub endpoint, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self.token = resolve_token(token)

    # -- plan --------------------------------------------------------------
    def select(self, paths: list[str]) -> list[str]:
        """Which repo files this provider fetches (subclasses narrow it)."""
        return list(filter_repo_objects(paths, allow_patterns=self.allow, ignore_patterns=self.ignore))

    async def plan(self) -> Plan:
        # huggingface_hub waits forever for an answer unless given a timeout: a Hub that
        # accepts the connection and says nothing must not hang the download.
        info = await self._hub_call(
            "model_info", self.repo_id, revision=self.revision, files_metadata=True,
            timeout=self.policy.stall_timeout,
        )
        commit = getattr(info, "sha", None)
        if not isinstance(commit, str) or not _HEX40.fullmatch(commit):
            raise ServerError(f"{self.endpoint} gave no valid commit for {self.repo_id}")
        siblings = {s.rfilename: s for s in (info.siblings or [])}
        for path in siblings:
            safe_relative(path)
        wanted = self.select(sorted(siblings))
        limit = asyncio.Semaphore(8)

        async def describe(path: str) -> HfFile:
            async with limit:
                return await self._describe(siblings[path], commit)

        files = list(await asyncio.gather(*(describe(p) for p in wanted)))
        self.check_selection(files)
        items = []
        for f in files:
            present = self._present(f)
            items.append(PlanItem(f.path, f.size, f.digest, local=present == f.size, present_bytes=present))
        destination = (
            self.store.root if isinstance(self.store, HfLocalDirStore) else self.store.snapshot_dir(commit)
        )
        detail = HfPlanDetail(self.repo_id, commit, self.revision, files, self.store)
        return Plan(self.name, self.repo_id, items, str(destination), commit, detail=detail)

    def check_selection(self, files: list[HfFile]) -> None:
        if not files:
            raise ModelNotFound(
                f"{self.repo_id} has no files matching the requested patterns at revision {self.revision}"
            )

    async def _describe(self, sibling: Any, commit: str) -> HfFile:
        lfs = getattr(sibling, "lfs", None)
        size = getattr(sibling, "size", None)
        sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
        blob_id = getattr(sibling, "blob_id", None)
        if size is None or (sha256 is None and blob_id is None):
            meta = await self._hub_call_fn(self._file_metadata, sibling.rfilename, commit)
            size, etag = meta
            sha256 = etag if _HEX64.fullmatch(etag) else None
            blob_id = etag if sha256 is None else None
        if sha256 is not None:
            if not _HEX64.fullmatch(str(sha256)):
                raise UnsafeSource(f"the Hub gave an invalid sha256 for {sibling.rfilename}")
            etag, digest = sha256, f"sha256:{sha256}"
        else:
            if not _HEX40.fullmatch(str(blob_id)):
                raise UnsafeSource(f"the Hub gave an invalid blob id for {sibling.rfilename}")
            etag, digest = str(blob_id), f"gitsha1:{blob_id}"
        if not isinstance(size, int) or size < 0:
            raise UnsafeSource(f"the Hub gave an invalid size for {sibling.rfilename}")
        return HfFile(sibling.rfilename, size, etag, digest)

    def _file_metadata(self, path: str, commit: str) -> tuple[int, str]:
        from huggingface_hub import get_hf_file_metadata

        url = hf_hub_url(self.repo_id, path, revision=commit, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url, token=self._hf_token(), timeout=self.policy.stall_timeout)
        if meta.size is None or not meta.etag:
            raise ServerError(f"{self.endpoint} gave no size or ETag for {path}")
        return int(meta.size), meta.etag.strip('"').removeprefix("W/").strip('"')

    def _present(self, f: HfFile) -> int:
        if isinstance(self.store, HfLocalDirStore) and self.store.is_current(f.path, f.etag, f.size):
            return f.size
        return present_bytes(self._transfer(f, ""))

    def _transfer(self, f: HfFile, commit: str) -> FileTransfer:
        slot = self.store.slot(f.path, f.etag)
        url = hf_hub_url(self.repo_id, f.path, revision=commit, endpoint=self.endpoint)
        return FileTransfer(
            url=url, dest=slot.final, size=f.size, digest=f.digest, key=f.path,
            partial=slot.partial, lock=slot.lock,
            trust_existing=not isinstance(self.store, HfLocalDirStore) or self.store.is_current(f.path, f.etag, f.size),
        )

    # -- fetch -------------------------------------------------------------
    async def fetch(self, plan: Plan, tracker: ProgressTracker) -> str:
        detail: HfPlanDetail = plan.detail
        engine = TransferEngine(
            self.session, self.policy, tracker,
            auth=BearerAuth(self.token, self.endpoint),
            error_for_response=self._error_for_response,
        )
        await engine.fetch_all(self._transfer(f, detail.commit) for f in detail.files)
        pairs = [(f.path, f.etag) for f in detail.files]
        if isinstance(self.store, HfLocalDirStore):
            return str(self.store.publish(detail.commit, pairs))
        return str(self.store.publish(detail.commit, detail.revision, pairs))

    def space_needed(self, plan: Plan) -> list[tuple[Path, int]]:
        return [(self.store.root, plan.missing_bytes)]

    # -- errors ------------------------------------------------------------
    def _hf_token(self) -> str | bool:
        return self.token.reveal() if self.token else False

    async def _hub_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        api = HfApi(endpoint=self.endpoint, token=self._hf_token())
        return await self._hub_call_fn(getattr(api, method), *args, **kwargs)

    async def _hub_call_fn(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except hf_errors.GatedRepoError:
            raise self._gated() from None
        except hf_errors.RevisionNotFoundError:
            raise RevisionNotFound(
                f"{self.repo_id} has no revision {self.revision!r}; check the branch, tag or commit"
            ) from None
        except hf_errors.RepositoryNotFoundError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            code = _error_code_of(exc)
            if status == 401 and code is None:
                raise self._auth_required() from None
            raise self._not_found() from None
        except hf_errors.EntryNotFoundError:
            raise ModelNotFound(f"a file of {self.repo_id} is missing at {self.endpoint}") from None
        except hf_errors.HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise self._auth_required() from None
            if status == 404:
                raise self._not_found() from None
            raise ServerError(
                f"{self.endpoint} answered HTTP {status} for {self.repo_id}; try again later"
            ) from None
        except hf_errors.OfflineModeIsEnabled:
            raise ConnectionFailed(
                f"HF_HUB_OFFLINE is set, so {self.endpoint} cannot be reached; unset it to download"
            ) from None
        except Exception as exc:
            # huggingface_hub's HTTP stack (httpx or its fork) raises its own transport errors.
            kinds = {cls.__name__ for cls in type(exc).__mro__}
            if kinds & {"TimeoutException", "TimeoutError"}:
                raise TransferTimeout(f"{self.endpoint} did not answer in time (timeout)") from None
            if kinds & {"TransportError", "NetworkError", "ConnectError", "OSError"}:
                raise ConnectionFailed(
                    f"cannot connect to the Hub at {self.endpoint} ({type(exc).__name__}); check "
                    "the address (base_url / HF_ENDPOINT) and your network"
                ) from None
            raise

    def _gated(self) -> GatedModel:
        page = f"{self.endpoint}/{self.repo_id}"
        if self.token:
            return GatedModel(
                f"{self.repo_id} is gated and the token you gave has no access yet: request "
                f"access on {page} (accept the conditions), then run the download again"
            )
        return GatedModel(
            f"{self.repo_id} is gated: request access on {page}, then pass a token "
            "(token=..., the HF_TOKEN variable, or `hf auth login`)"
        )

    def _auth_required(self) -> AuthRequired:
        if self.token:
            return AuthRequired(
                f"{self.endpoint} rejected the token for {self.repo_id}; check that it is valid "
                "and has read access"
            )
        return AuthRequired(
            f"{self.endpoint} requires a token for {self.repo_id}: pass token=..., set HF_TOKEN "
            "or run `hf auth login`"
        )

    def _not_found(self) -> ModelNotFound:
        hint = "" if self.token else " (if it is private, pass a token)"
        return ModelNotFound(
            f"model {self.repo_id!r} was not found on {self.endpoint}{hint}; check the repo id"
        )

    def _error_for_response(self, response: aiohttp.ClientResponse, body: str) -> ModelpullError | None:
        code = response.headers.get("X-Error-Code")
        if code == "GatedRepo":
            return self._gated()
        if code == "RepoNotFound":
            return self._not_found()
        if code == "RevisionNotFound":
            return RevisionNotFound(f"{self.repo_id} has no revision {self.revision!r}")
        if code == "EntryNotFound":
            path = response.url.path.split("/resolve/", 1)[-1].partition("/")[2] or "a file"
            return ModelNotFound(
                f"{path} of {self.repo_id} is no longer on {self.endpoint} (it changed since the "
                "plan); run the download again"
            )
        if response.status == 401:
            return self._auth_required()
        return None


def _error_code_of(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    return headers.get("X-Error-Code") if hasattr(headers, "get") else None


class MlxProvider(HuggingFaceProvider):
    """An MLX repo: only what mlx-lm loads, and only if it has safetensors weights."""

    name = "mlx"

    def select(self, paths: list[str]) -> list[str]:
        chosen = super().select(paths)
        return [p for p in chosen if any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat) for pat in MLX_PATTERNS)]

    def check_selection(self, files: list[HfFile]) -> None:
        if not any(f.path.endswith(".safetensors") for f in files):
            raise IncompatibleModel(
                f"{self.repo_id} has no .safetensors weights, so MLX cannot load it; pick an MLX "
                "conversion (e.g. from mlx-community) or use the 'huggingface' provider"
            )
        super().check_selection(files)


# Used by the cache and inventory code to recognise defaults.
HF_CACHE_DEFAULT = constants.HF_HUB_CACHE
