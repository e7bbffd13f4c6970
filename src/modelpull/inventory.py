"""What is downloaded already, per source, and removing it.

    from modelpull.inventory import list_models, delete_model

    for model in list_models():                 # every place a source writes to
        print(model.provider, model.name, model.size_bytes)
    delete_model("huggingface", "org/name")

Every source declares the place its models land in (the Hugging Face cache,
Ollama's server or store, LM Studio's folder, ...) and how that place is
listed and cleaned; this module only asks them. Several sources can share a
place: listing all of them shows each place once, under its first source
(``huggingface`` for the HF cache, its MLX repos flagged ``mlx``); listing one
source shows what it owns there (``mlx``: the repos mlx-lm can load).

One file can belong to several models: a download links the bytes another
store already holds instead of fetching them again (hard links, never
symbolic ones, so deleting one model never breaks another). Each listing
counts such a file in its ``size_bytes``, and says how much of it is shared
in ``shared_bytes``: on disk, those bytes are there once.

Settings (all optional) are the places' own: ``cache_dir`` (HF cache),
``ollama_url`` (server address, default ``OLLAMA_HOST`` or localhost:11434),
``ollama_models_dir`` (store folder, default ``OLLAMA_MODELS`` or
``~/.ollama/models``), ``lmstudio_dir`` (LM Studio's models folder, default
from its settings), ``ollama_source`` (``auto`` | ``server`` | ``store``),
``timeout`` (seconds for a server); :func:`settings_accepted` lists them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ._transfer import STATE_SUFFIX
from .errors import ConnectionFailed, InvalidOption, ModelNotFound, ServerError, UnsupportedProvider
from .providers import SOURCES, LocalModel, PartialDownload, Place, Source

__all__ = [
    "Inventory",
    "LocalModel",
    "PartialDownload",
    "delete_model",
    "discard_partials",
    "list_models",
    "list_partials",
    "scan_inventory",
    "settings_accepted",
]


@dataclass
class Inventory:
    """Models found, and notes on places that could not be read."""

    models: list[LocalModel]
    notes: list[str] = field(default_factory=list)


def settings_accepted() -> frozenset[str]:
    """Every keyword the inventory functions accept (each place's settings)."""
    names: set[str] = set()
    for place in SOURCES.places():
        names.update(location.key for location in place.locations)
        names.update(place.inventory_options)
    return frozenset(names)


def _source(provider: object) -> Source:
    source = SOURCES.find(provider)
    if source is None or source.place is None:
        listable = ", ".join(s.name for s in SOURCES if s.place is not None)
        shown = provider[:60] if isinstance(provider, str) else type(provider).__name__
        raise UnsupportedProvider(
            f"cannot list or delete models of provider {shown!r}; use one of: {listable}"
        )
    return source


def _check(settings: dict[str, Any]) -> None:
    unknown = sorted(set(settings) - settings_accepted())
    if unknown:
        raise InvalidOption(
            f"unknown inventory option {', '.join(unknown)}; accepted: {', '.join(sorted(settings_accepted()))}"
        )


def list_models(provider: str | None = None, **settings: Any) -> list[LocalModel]:
    """Local models of ``provider`` (or of every source), largest first.

    Raises :class:`~modelpull.errors.UnsupportedProvider` for an unknown
    provider, and :class:`ConnectionFailed` when the one place asked for
    cannot be read at all (an Ollama server that does not answer, say).
    """
    inventory = scan_inventory(provider, **settings)
    if provider is not None and not inventory.models and inventory.notes:
        raise ConnectionFailed("; ".join(inventory.notes))
    return inventory.models


def scan_inventory(provider: str | None = None, **settings: Any) -> Inventory:
    """Like :func:`list_models`, also telling which places could not be read."""
    _check(settings)
    if provider is None:
        wanted: list[tuple[Place, Source, bool]] = [
            (place, SOURCES.primary(place), False) for place in SOURCES.places()
        ]
    else:
        source = _source(provider)
        assert source.place is not None
        wanted = [(source.place, source, True)]
    inventory = Inventory([])
    for place, source, narrow in wanted:
        try:
            found = place.list(settings)
        except (ConnectionFailed, ServerError) as exc:
            inventory.notes.append(exc.message)
            continue
        for model in found:
            if narrow and source.owns is not None and not source.owns(model):
                continue
            model.provider = source.name
            model.where = model.where or place.title
            model.kind = model.kind or model.describe_kind()
            inventory.models.append(model)
    inventory.models.sort(key=lambda m: (-m.size_bytes, m.provider, m.name))
    return inventory


def delete_model(provider: str, model: str, **settings: Any) -> dict[str, Any]:
    """Remove a local model; returns ``{"provider", "name", "freed_bytes", "source"}``.

    What goes is the place's business: every cached revision and unfinished
    download of a Hub repo; an Ollama model through its server when one answers,
    else its manifest and the blobs no other model uses; an LM Studio folder.
    Raises :class:`~modelpull.errors.ModelNotFound` when there is nothing to delete.
    """
    _check(settings)
    source = _source(provider)
    assert source.place is not None
    return source.place.delete(source, model, settings)


# -- partial downloads ---------------------------------------------------------------
def list_partials(provider: str | None = None, **settings: Any) -> list[PartialDownload]:
    """Unfinished downloads kept on disk (of ``provider``, or everywhere), newest first.

    Each has its source, model, file, bytes present and total (None when the
    tool that left it recorded none: huggingface_hub's own ``.incomplete``
    files) and last activity. Pulling the model again resumes it;
    :func:`discard_partials` removes it.
    """
    _check(settings)
    found: list[PartialDownload] = []
    for place, source in _partial_places(provider):
        if place.partials is None:
            continue
        for partial in place.partials(settings):
            if source is None or partial.provider == source.name or partial.left_by != "modelpull":
                found.append(partial)
    found.sort(key=lambda p: (-p.modified, p.provider, p.model, p.file))
    return found


def discard_partials(provider: str | None = None, model: str | None = None, **settings: Any) -> list[PartialDownload]:
    """Remove unfinished downloads: every one, every one of ``provider``, or of one ``model``.

    Returns what was removed. Raises :class:`~modelpull.errors.ModelNotFound`
    when a model was named and has no partial download.
    """
    if model is not None and provider is None:
        raise InvalidOption("name the provider of the model whose partial downloads to discard")
    chosen = list_partials(provider, **settings)
    if model is not None:
        source = _source(provider)
        assert source.place is not None
        chosen = [p for p in chosen if source.place.same_model(p.model, model)]
        if not chosen:
            raise ModelNotFound(f"{model} has no partial download in {source.place.title}")
    for partial in chosen:
        for leftover in (partial.path, partial.path + STATE_SUFFIX):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass
    return chosen


def _partial_places(provider: str | None) -> list[tuple[Place, Source | None]]:
    if provider is None:
        return [(place, None) for place in SOURCES.places()]
    source = _source(provider)
    assert source.place is not None
    return [(source.place, source)]
