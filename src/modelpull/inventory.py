"""What is downloaded already, per provider, and removing it.

    from modelpull.inventory import list_models, delete_model

    for model in list_models():                 # HF cache + Ollama
        print(model.provider, model.name, model.size_bytes)
    delete_model("huggingface", "org/name")

Sources:

- ``huggingface``: every model repo in the Hugging Face cache
  (``huggingface_hub.scan_cache_dir``), partial downloads included.
- ``mlx``: the cached repos mlx-lm can load (a snapshot with ``config.json``
  and ``*.safetensors``); the same repos also appear under ``huggingface``
  when every provider is listed, flagged ``mlx``.
- ``ollama``: a running Ollama server (``GET /api/tags``, ``DELETE
  /api/delete``) when one answers, else Ollama's model store on disk.
- ``lmstudio``: LM Studio's models folder (one model per ``publisher/repo``).

Options (all optional): ``cache_dir`` (HF cache), ``ollama_url`` (server
address, default ``OLLAMA_HOST`` or localhost:11434), ``ollama_models_dir``
(store folder, default ``OLLAMA_MODELS`` or ``~/.ollama/models``),
``lmstudio_dir`` (LM Studio's models folder, default from its settings),
``ollama_source`` (``auto`` | ``server`` | ``store``), ``timeout`` (seconds for
the Ollama server).
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import ConnectionFailed, InvalidOption, ModelNotFound, ServerError, UnsupportedProvider
from .refs import parse_hf_repo_id, parse_ollama_name

__all__ = ["Inventory", "LocalModel", "delete_model", "list_models", "scan_inventory"]

INVENTORY_PROVIDERS = ("huggingface", "mlx", "ollama", "lmstudio")
_ALIASES = {"hf": "huggingface"}
_OPTIONS = frozenset(
    {"cache_dir", "ollama_url", "ollama_models_dir", "ollama_source", "lmstudio_dir", "timeout"}
)
_DEFAULT_TIMEOUT = 3.0


@dataclass
class LocalModel:
    """One model on this machine (or on the Ollama server)."""

    provider: str
    name: str
    size_bytes: int
    source: str  # "hf-cache" | "ollama-server" | "ollama-store" | "lmstudio"
    path: str | None = None
    modified: float | None = None
    files: int | None = None
    revisions: list[str] = field(default_factory=list)
    #: bytes of unfinished downloads kept for resume (HF cache only)
    partial_bytes: int = 0
    mlx: bool = False
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Inventory:
    """Models found, and notes on sources that could not be read."""

    models: list[LocalModel]
    notes: list[str] = field(default_factory=list)


def _provider_name(provider: object) -> str:
    if not isinstance(provider, str):
        raise UnsupportedProvider("provider must be a string")
    name = provider.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in INVENTORY_PROVIDERS:
        raise UnsupportedProvider(
            f"cannot list or delete models of provider {provider[:60]!r}; use one of: "
            f"{', '.join(INVENTORY_PROVIDERS)}"
        )
    return name


def _check_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise InvalidOption(
            f"unknown inventory option {', '.join(unknown)}; accepted: {', '.join(sorted(_OPTIONS))}"
        )
    source = options.get("ollama_source") or "auto"
    if source not in ("auto", "server", "store"):
        raise InvalidOption("ollama_source must be 'auto', 'server' or 'store'")


def list_models(provider: str | None = None, **options: Any) -> list[LocalModel]:
    """Local models of ``provider`` (or of every provider), largest first.

    Raises :class:`~modelpull.errors.UnsupportedProvider` for an unknown
    provider and, when ``provider="ollama"`` is asked for explicitly and
    neither server nor store can be read, :class:`ConnectionFailed`.
    """
    inventory = scan_inventory(provider, **options)
    explicit_ollama = provider is not None and _provider_name(provider) == "ollama"
    if explicit_ollama and not inventory.models and inventory.notes:
        raise ConnectionFailed("; ".join(inventory.notes))
    return inventory.models


def scan_inventory(provider: str | None = None, **options: Any) -> Inventory:
    """Like :func:`list_models`, also telling which sources could not be read."""
    _check_options(options)
    wanted = INVENTORY_PROVIDERS if provider is None else (_provider_name(provider),)
    inventory = Inventory([])
    if "huggingface" in wanted or "mlx" in wanted:
        hf = _hf_models(options.get("cache_dir"))
        if "huggingface" in wanted:
            inventory.models.extend(hf)
        else:
            for model in hf:
                if model.mlx:
                    model.provider = "mlx"
                    inventory.models.append(model)
    if "ollama" in wanted:
        try:
            inventory.models.extend(_ollama_models(options))
        except (ConnectionFailed, ServerError) as exc:
            inventory.notes.append(exc.message)
    if "lmstudio" in wanted:
        inventory.models.extend(_lmstudio_models(options.get("lmstudio_dir")))
    inventory.models.sort(key=lambda m: (-m.size_bytes, m.provider, m.name))
    return inventory


def delete_model(provider: str, model: str, **options: Any) -> dict[str, Any]:
    """Remove a local model; returns ``{"provider", "name", "freed_bytes", "source"}``.

    Hugging Face/MLX: every cached revision of the repo and its unfinished
    downloads. Ollama: through the server when one answers (``source`` auto or
    server), else from the store on disk (blobs no other model uses).
    Raises :class:`ModelNotFound` when there is nothing to delete.
    """
    _check_options(options)
    name = _provider_name(provider)
    if name in ("huggingface", "mlx"):
        return _hf_delete(name, model, options.get("cache_dir"))
    if name == "lmstudio":
        return _lmstudio_delete(model, options.get("lmstudio_dir"))
    return _ollama_delete(model, options)


# -- Hugging Face cache ------------------------------------------------------------
def _hf_cache_root(cache_dir: object) -> Path:
    from .stores.hf_cache import default_cache_dir

    if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
        raise InvalidOption("cache_dir must be a folder path")
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def _hf_models(cache_dir: object) -> list[LocalModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    root = _hf_cache_root(cache_dir)
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        return []
    models = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        partial = _partial_bytes(Path(repo.repo_path))
        revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        mlx = any(_looks_mlx(rev.files) for rev in revisions)
        models.append(
            LocalModel(
                provider="huggingface",
                name=repo.repo_id,
                size_bytes=repo.size_on_disk,
                source="hf-cache",
                path=str(repo.repo_path),
                modified=repo.last_modified or None,
                files=repo.nb_files,
                revisions=[r.commit_hash for r in revisions],
                partial_bytes=partial,
                mlx=mlx,
                complete=bool(revisions),
            )
        )
    return models


def _looks_mlx(files: Any) -> bool:
    names = {f.file_name for f in files}
    return "config.json" in names and any(n.endswith(".safetensors") for n in names)


def _partial_bytes(repo_path: Path) -> int:
    total = 0
    for partial in (repo_path / "blobs").glob("*.incomplete"):
        try:
            total += partial.stat().st_size
        except OSError:
            continue
    return total


def _hf_delete(provider: str, model: str, cache_dir: object) -> dict[str, Any]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound
    from huggingface_hub.file_download import repo_folder_name

    repo_id = parse_hf_repo_id(model)
    root = _hf_cache_root(cache_dir)
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        info = None
    repo = None
    if info is not None:
        repo = next((r for r in info.repos if r.repo_type == "model" and r.repo_id == repo_id), None)
    folder = root / repo_folder_name(repo_id=repo_id, repo_type="model")
    if repo is None and not folder.is_dir():
        raise ModelNotFound(f"{repo_id} is not in the Hugging Face cache at {root}")
    if provider == "mlx" and repo is not None and not any(_looks_mlx(r.files) for r in repo.revisions):
        raise ModelNotFound(f"{repo_id} is in the Hugging Face cache but is not an MLX model")
    freed = _partial_bytes(folder)
    if repo is not None and info is not None and repo.revisions:
        strategy = info.delete_revisions(*(r.commit_hash for r in repo.revisions))
        freed += strategy.expected_freed_size
        strategy.execute()
    # What the strategy leaves (refs, partial downloads, locks) goes too.
    for leftover in (folder, root / ".locks" / folder.name):
        if leftover.is_dir() and root.resolve() in leftover.resolve().parents:
            shutil.rmtree(leftover, ignore_errors=True)
    return {"provider": provider, "name": repo_id, "freed_bytes": freed, "source": "hf-cache"}


# -- Ollama ------------------------------------------------------------------------
def _ollama_url(options: dict[str, Any]) -> str:
    from .providers.ollama_server import ollama_base_url

    url = options.get("ollama_url")
    if url is not None and not isinstance(url, str):
        raise InvalidOption("ollama_url must be a string URL")
    return ollama_base_url(url)


def _ollama_request(url: str, method: str, body: dict[str, Any] | None, timeout: float) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read(8 << 20)
    except urllib.error.HTTPError as exc:
        text = exc.read(4096).decode("utf-8", "replace")
        try:
            text = str(json.loads(text).get("error") or text)
        except (ValueError, AttributeError):
            pass
        if exc.code == 404:
            raise ModelNotFound(f"Ollama: {text.strip() or 'not found'}") from None
        raise ServerError(f"the Ollama server answered HTTP {exc.code}: {text.strip()[:200]}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionFailed(f"no Ollama server answers at {url} ({reason})") from None
    return json.loads(raw) if raw.strip() else None


def _ollama_source(options: dict[str, Any]) -> str:
    """Where Ollama models are read: "server", "store", or "auto" (server, else store)."""
    source = str(options.get("ollama_source") or "auto")
    return "store" if options.get("ollama_models_dir") and source == "auto" else source


def _ollama_models(options: dict[str, Any]) -> list[LocalModel]:
    source = _ollama_source(options)
    timeout = float(options.get("timeout") or _DEFAULT_TIMEOUT)
    if source in ("auto", "server"):
        base = _ollama_url(options)
        try:
            data = _ollama_request(f"{base}/api/tags", "GET", None, timeout)
        except ConnectionFailed:
            if source == "server":
                raise
        else:
            return [_from_tags(entry) for entry in (data or {}).get("models") or [] if isinstance(entry, dict)]
    return _store_models(options.get("ollama_models_dir"))


def _from_tags(entry: dict[str, Any]) -> LocalModel:
    modified = None
    stamp = entry.get("modified_at")
    if isinstance(stamp, str):
        try:
            modified = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            modified = None
    size = entry.get("size")
    return LocalModel(
        provider="ollama",
        name=str(entry.get("name") or entry.get("model") or "?"),
        size_bytes=size if isinstance(size, int) else 0,
        source="ollama-server",
        modified=modified,
    )


def _store_module() -> Any:
    try:
        from .stores import ollama_store
    except ImportError:
        return None
    return ollama_store


def _store_models(models_dir: object) -> list[LocalModel]:
    store = _store_module()
    if store is None:
        raise ConnectionFailed("no Ollama server answers and this modelpull cannot read Ollama's store")
    models = []
    for entry in store.list_local(models_dir=models_dir):
        models.append(
            LocalModel(
                provider="ollama",
                name=str(entry.get("name")),
                size_bytes=int(entry.get("size") or 0),
                source="ollama-store",
                path=entry.get("path"),
                modified=entry.get("modified"),
                files=entry.get("layers"),
                complete=bool(entry.get("complete", True)),
            )
        )
    return models


def _ollama_delete(model: str, options: dict[str, Any]) -> dict[str, Any]:
    ref = parse_ollama_name(model)
    source = _ollama_source(options)
    timeout = float(options.get("timeout") or _DEFAULT_TIMEOUT)
    if source in ("auto", "server"):
        base = _ollama_url(options)
        try:
            sizes = {m.name: m.size_bytes for m in _ollama_models({**options, "ollama_source": "server"})}
            if model not in sizes and ref.short not in sizes:
                raise ModelNotFound(f"the Ollama server at {base} has no model {ref.short}")
            _ollama_request(f"{base}/api/delete", "DELETE", {"model": model, "name": model}, timeout)
        except ConnectionFailed:
            if source == "server":
                raise
        else:
            freed = sizes.get(model, sizes.get(ref.short, 0))
            return {"provider": "ollama", "name": ref.short, "freed_bytes": freed, "source": "ollama-server"}
    store = _store_module()
    if store is None:
        raise ConnectionFailed("no Ollama server answers and this modelpull cannot write Ollama's store")
    result = store.delete_local(model, models_dir=options.get("ollama_models_dir"))
    return {
        "provider": "ollama",
        "name": result.get("name", ref.short),
        "freed_bytes": int(result.get("freed_bytes") or 0),
        "source": "ollama-store",
    }


# -- LM Studio ---------------------------------------------------------------------
def _lmstudio_models(models_dir: object) -> list[LocalModel]:
    from .stores import lmstudio

    return [
        LocalModel(
            provider="lmstudio",
            name=str(entry["name"]),
            size_bytes=int(entry.get("size") or 0),
            source="lmstudio",
            path=entry.get("path"),
            modified=entry.get("modified"),
            files=len(entry.get("files") or []),
            mlx=entry.get("format") == "mlx",
        )
        for entry in lmstudio.list_local(models_dir=models_dir)  # type: ignore[arg-type]
    ]


def _lmstudio_delete(model: str, models_dir: object) -> dict[str, Any]:
    from .stores import lmstudio

    entry = lmstudio.delete_local(model, models_dir=models_dir)  # type: ignore[arg-type]
    return {
        "provider": "lmstudio",
        "name": entry.get("name", model),
        "freed_bytes": int(entry.get("size") or 0),
        "source": "lmstudio",
    }
