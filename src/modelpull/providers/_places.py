"""Places shared by several sources: the Hugging Face cache and Ollama's models.

A :class:`~modelpull.providers._source.Place` says where models land, which
settings move it, and how the models there are listed and deleted. A place used
by one source only is declared in that source's module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from .._gguf import gguf_quantization
from .._transfer import STATE_SUFFIX, read_partial
from ..errors import ConnectionFailed, InvalidModel, InvalidOption, ModelNotFound, ServerError
from ..refs import parse_ollama_name
from ._source import LocalModel, Location, PartialDownload, Place, Settings, Source

__all__ = ["HF_CACHE", "HF_CACHE_DIR", "HF_ENDPOINT", "OLLAMA", "OLLAMA_MODELS_DIR", "OLLAMA_URL"]

HF_CACHE_DIR = Location(
    "hf_cache_dir", "--cache-dir",
    "Hugging Face cache folder (default HF_HUB_CACHE or ~/.cache/huggingface/hub).",
    inventory_name="cache_dir",
)
HF_ENDPOINT = Location(
    "hf_endpoint", "--hf-endpoint",
    "Hub address for the Hugging Face sources (default HF_ENDPOINT or huggingface.co).",
    is_url=True, serve_only=True,
)
OLLAMA_URL = Location(
    "ollama_url", "--ollama-host",
    "Ollama server address (default OLLAMA_HOST or http://localhost:11434).", is_url=True,
)
OLLAMA_MODELS_DIR = Location(
    "ollama_models_dir", "--ollama-models",
    "Ollama model store folder (default OLLAMA_MODELS or ~/.ollama/models).",
)


# -- the Hugging Face cache ----------------------------------------------------------
def _hf_list(settings: Settings) -> list[LocalModel]:
    from ..stores import hf_cache

    return [
        LocalModel(
            provider="", name=entry["name"], size_bytes=entry["size"], source="hf-cache",
            path=entry["path"], modified=entry["modified"], files=entry["files"],
            revisions=entry["revisions"], partial_bytes=entry["partial_bytes"],
            mlx=entry["format"] == "mlx", complete=entry["complete"], format=entry["format"],
            quantization=gguf_quantization(entry["gguf_files"]),
            shared_bytes=entry.get("shared_bytes", 0),
        )
        for entry in hf_cache.list_local(HF_CACHE_DIR.value(settings))
    ]


def _hf_find_blob(sha256: str, size: int, settings: Settings) -> list[Path]:
    from ..stores import hf_cache

    return hf_cache.find_blob(sha256, size, HF_CACHE_DIR.value(settings))


def _hf_delete(source: Source, model: str, settings: Settings) -> dict[str, Any]:
    from ..refs import parse_hf_repo_id
    from ..stores import hf_cache

    repo_id = parse_hf_repo_id(model)
    cache_dir = HF_CACHE_DIR.value(settings)
    if source.owns is not None:
        listed = next((m for m in _hf_list(settings) if m.name == repo_id), None)
        if listed is not None and not source.owns(listed):
            raise ModelNotFound(f"{repo_id} is in the Hugging Face cache but is not a {source.title} model")
    freed = hf_cache.delete_local(repo_id, cache_dir)
    return {"provider": source.name, "name": repo_id, "freed_bytes": freed, "source": "hf-cache"}


def hub_repo_of(reference: str) -> str:
    """The repo a Hub-family reference names (``org/repo:Q4_K_M``, ``hf.co/org/repo/f.gguf``)."""
    text = reference.strip()
    for host in ("hf.co/", "huggingface.co/"):
        if text.lower().startswith(host):
            text = text[len(host):]
    return "/".join(text.split(":", 1)[0].split("/")[:2]).lower()


HF_CACHE = Place(
    name="hf-cache",
    title="Hugging Face cache",
    locations=(HF_CACHE_DIR,),
    list=_hf_list,
    delete=_hf_delete,
    same_model=lambda a, b: hub_repo_of(a) == hub_repo_of(b),
    partials=lambda settings: _hf_partials(settings),
    find_blob=_hf_find_blob,
)


# -- Ollama: a running server, else its store on disk --------------------------------
_DEFAULT_TIMEOUT = 3.0


def _ollama_source(settings: Settings) -> str:
    """Where Ollama models are read: "server", "store", or "auto" (server, else store)."""
    source = str(settings.get("ollama_source") or "auto")
    if source not in ("auto", "server", "store"):
        raise InvalidOption("ollama_source must be 'auto', 'server' or 'store'")
    return "store" if settings.get(OLLAMA_MODELS_DIR.key) and source == "auto" else source


def _ollama_base(settings: Settings) -> str:
    from .._ollama_api import ollama_base_url

    url = settings.get(OLLAMA_URL.key)
    if url is not None and not isinstance(url, str):
        raise InvalidOption("ollama_url must be a string URL")
    return ollama_base_url(url)


def _timeout(settings: Settings) -> float:
    return float(settings.get("timeout") or _DEFAULT_TIMEOUT)


def _from_tags(entry: dict[str, Any]) -> LocalModel:
    modified = None
    stamp = entry.get("modified_at")
    if isinstance(stamp, str):
        try:
            modified = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            modified = None
    size = entry.get("size")
    details = entry.get("details")
    level = details.get("quantization_level") if isinstance(details, dict) else None
    return LocalModel(
        provider="",
        name=str(entry.get("name") or entry.get("model") or "?"),
        size_bytes=size if isinstance(size, int) else 0,
        source="ollama-server",
        where="Ollama server",
        modified=modified,
        format="gguf",
        quantization=level[:40] if isinstance(level, str) and level else None,
        kind="Ollama" + (f" {level[:40]}" if isinstance(level, str) and level else ""),
    )


def _server_models(settings: Settings) -> list[LocalModel]:
    from .._ollama_api import list_tags

    return [_from_tags(entry) for entry in list_tags(_ollama_base(settings), _timeout(settings))]


def _store_models(settings: Settings) -> list[LocalModel]:
    from ..stores import ollama_store

    return [
        LocalModel(
            provider="",
            name=str(entry.get("name")),
            size_bytes=int(entry.get("size") or 0),
            source="ollama-store",
            where="Ollama store",
            kind="Ollama",
            path=entry.get("path"),
            modified=entry.get("modified"),
            files=entry.get("layers"),
            complete=bool(entry.get("complete", True)),
            format="gguf",
            shared_bytes=int(entry.get("shared_bytes") or 0),
        )
        for entry in ollama_store.list_local(models_dir=OLLAMA_MODELS_DIR.value(settings))
    ]


def _ollama_find_blob(sha256: str, size: int, settings: Settings) -> list[Path]:
    from ..stores import ollama_store

    return ollama_store.find_blob(sha256, size, OLLAMA_MODELS_DIR.value(settings))


def _ollama_list(settings: Settings) -> list[LocalModel]:
    source = _ollama_source(settings)
    if source in ("auto", "server"):
        try:
            return _server_models(settings)
        except ConnectionFailed:
            if source == "server":
                raise
    return _store_models(settings)


def _ollama_delete(source: Source, model: str, settings: Settings) -> dict[str, Any]:
    ref = parse_ollama_name(model)
    where = _ollama_source(settings)
    if where in ("auto", "server"):
        from .._ollama_api import delete_model

        base = _ollama_base(settings)
        try:
            sizes = {m.name: m.size_bytes for m in _server_models(settings)}
            if model not in sizes and ref.short not in sizes:
                raise ModelNotFound(f"the Ollama server at {base} has no model {ref.short}")
            delete_model(base, model, _timeout(settings))
        except ConnectionFailed:
            if where == "server":
                raise
        else:
            freed = sizes.get(model, sizes.get(ref.short, 0))
            return {"provider": source.name, "name": ref.short, "freed_bytes": freed, "source": "ollama-server"}
    from ..stores import ollama_store

    result = ollama_store.delete_local(model, models_dir=OLLAMA_MODELS_DIR.value(settings))
    return {
        "provider": source.name,
        "name": result.get("name", ref.short),
        "freed_bytes": int(result.get("freed_bytes") or 0),
        "source": "ollama-store",
    }


def _same_ollama_model(a: str, b: str) -> bool:
    try:
        return parse_ollama_name(a).short == parse_ollama_name(b).short
    except (InvalidModel, ServerError):
        return False


OLLAMA = Place(
    name="ollama",
    title="Ollama",
    locations=(OLLAMA_URL, OLLAMA_MODELS_DIR),
    list=_ollama_list,
    delete=_ollama_delete,
    same_model=_same_ollama_model,
    inventory_options=frozenset({"ollama_source", "timeout"}),
    partials=lambda settings: _ollama_partials(settings),
    find_blob=_ollama_find_blob,
)


# -- partial downloads ---------------------------------------------------------------
def scan_partials(
    files: Iterable[Path], source: str, provider: str, model_of: Callable[[Path], str],
    file_of: Callable[[Path], str],
) -> list[PartialDownload]:
    """Partials among ``files``: modelpull's (with part state: owner, size, bytes present)
    and other tools' (no state: the bytes on disk, size unknown)."""
    found = []
    for path in files:
        if path.name.endswith(STATE_SUFFIX) or not path.is_file():
            continue
        state = read_partial(path.with_name(path.name + STATE_SUFFIX))
        try:
            stat = path.stat()
        except OSError:
            continue
        if state is not None:
            owner = state.owner
            found.append(PartialDownload(
                provider=owner.get("provider") or provider, model=owner.get("model") or model_of(path),
                file=owner.get("file") or file_of(path), present_bytes=state.present,
                total_bytes=state.size, modified=max(state.modified, stat.st_mtime), path=str(path),
                source=source,
            ))
        else:
            found.append(PartialDownload(
                provider=provider, model=model_of(path), file=file_of(path),
                present_bytes=stat.st_size, total_bytes=None, modified=stat.st_mtime, path=str(path),
                source=source, left_by="huggingface_hub" if source == "hf-cache" else "unknown",
            ))
    return found


def _hf_partials(settings: Settings) -> list[PartialDownload]:
    from ..stores.hf_cache import default_cache_dir

    folder = HF_CACHE_DIR.value(settings)
    root = Path(folder).expanduser() if folder else default_cache_dir()
    if not root.is_dir():
        return []

    def model_of(path: Path) -> str:
        return path.parent.parent.name.removeprefix("models--").replace("--", "/")

    def file_of(path: Path) -> str:
        return "blob " + path.name.split(".", 1)[0][:12]

    return scan_partials(
        sorted(root.glob("models--*/blobs/*.incomplete")), "hf-cache", "huggingface", model_of, file_of
    )


def _ollama_partials(settings: Settings) -> list[PartialDownload]:
    from ..stores.ollama_store import OllamaStore

    store = OllamaStore(OLLAMA_MODELS_DIR.value(settings))
    if not store.work.is_dir():
        return []
    return scan_partials(
        sorted(store.work.glob("sha256-*.partial")), "ollama-store", "ollama-registry",
        lambda path: "?", lambda path: "layer " + path.name.removeprefix("sha256-")[:12],
    )
