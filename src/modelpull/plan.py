"""What a download will do, computed before any byte moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LocalCopy", "Plan", "PlanDetail", "PlanItem", "QuantizationChoice"]


@dataclass
class PlanItem:
    """One file or layer of a download.

    ``present_bytes`` counts what is already on disk: the whole size for a file
    that is already local, or the bytes of a resumable partial download.
    """

    name: str
    size: int | None
    digest: str | None = None
    local: bool = False
    present_bytes: int = 0
    kind: str = "file"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "digest": self.digest,
            "local": self.local,
            "present_bytes": self.present_bytes,
            "kind": self.kind,
        }


@dataclass
class QuantizationChoice:
    """One quantization a GGUF repo offers, for a picker: what the plan chose and what else is there.

    ``reference`` is the model reference that picks it (``org/repo:Q8_0``, or the
    file's path when its name gives no quantization); ``files`` are all its files
    (every part of a split model); ``projector`` is the vision projector that
    comes along with it (None: the repo has none, or ``mmproj`` is off).
    """

    name: str
    reference: str
    size: int
    files: list[str]
    projector: str | None = None
    projector_size: int = 0
    #: what a reference without a tag picks
    default: bool = False
    #: what this plan fetches
    chosen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reference": self.reference,
            "size": self.size,
            "files": list(self.files),
            "projector": self.projector,
            "projector_size": self.projector_size,
            "default": self.default,
            "chosen": self.chosen,
        }


class PlanDetail:
    """What a provider keeps between ``plan()`` and ``fetch()`` (URLs, digests, choices).

    Each provider subclasses it; it is not part of the API.
    """


@dataclass
class Plan:
    """Files or layers, their sizes, what is already local, and where it all goes."""

    provider: str
    model: str
    items: list[PlanItem]
    destination: str | None = None
    revision: str | None = None
    notes: list[str] = field(default_factory=list)
    #: for a GGUF repo: every quantization it offers, smallest first (empty otherwise)
    quantizations: list[QuantizationChoice] = field(default_factory=list)
    #: provider-private details (URLs, digests, store paths); not part of the API
    detail: PlanDetail | None = field(default=None, repr=False, compare=False)

    @property
    def total_bytes(self) -> int | None:
        if any(item.size is None for item in self.items):
            return None
        return sum(item.size or 0 for item in self.items)

    @property
    def present_bytes(self) -> int:
        return sum(item.present_bytes for item in self.items)

    @property
    def missing_bytes(self) -> int:
        return sum(max(0, (item.size or 0) - item.present_bytes) for item in self.items)

    @property
    def local_count(self) -> int:
        return sum(1 for item in self.items if item.local)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "revision": self.revision,
            "destination": self.destination,
            "total_bytes": self.total_bytes,
            "present_bytes": self.present_bytes,
            "missing_bytes": self.missing_bytes,
            "notes": list(self.notes),
            "summary": self.summary(),
            "items": [item.to_dict() for item in self.items],
            "quantizations": [choice.to_dict() for choice in self.quantizations],
        }

    def summary(self) -> str:
        from ._format import format_bytes

        total = self.total_bytes
        noun = "layer" if self.items and self.items[0].kind in ("layer", "config") else "file"
        count = len(self.items)
        text = f"{count} {noun}{'' if count == 1 else 's'}"
        if total is not None:
            text += f", {format_bytes(total)}"
        if self.present_bytes:
            text += f" ({format_bytes(self.present_bytes)} already local)"
        return text


@dataclass
class LocalCopy:
    """A model as it is on disk, found without any network call.

    ``plan`` lists what the model needs with what is present; ``path`` is what
    a completed download would report; ``downloaded_at`` when it was last
    completed (POSIX seconds, if known). ``pinned``: the reference names
    immutable content (a commit, a digest), so a complete copy needs no network.
    """

    plan: Plan
    path: str
    downloaded_at: float | None = None
    pinned: bool = False

    @property
    def complete(self) -> bool:
        return bool(self.plan.items) and all(item.local for item in self.plan.items)

    @property
    def missing(self) -> list[PlanItem]:
        return [item for item in self.plan.items if not item.local]
