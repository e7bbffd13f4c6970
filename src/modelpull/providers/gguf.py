"""GGUF models by quantization tag (``gguf``), and LM Studio's models folder (``lmstudio``).

A GGUF repo on the Hub holds many quantizations of one model. Both providers
pick files the way llama.cpp, Ollama (``hf.co/...``) and LM Studio users ask:

- ``org/repo:TAG`` - the file whose quantization (the ``Q4_K_M``, ``q8_0``,
  ``IQ4_XS``, ``BF16`` ... part of its name) equals TAG, case-insensitively.
  The match is exact: ``Q4_K`` matches neither ``Q4_K_M`` nor ``Q4_K_S``.
  ``UD-Q4_K_XL`` (Unsloth's dynamic quants) also answers to ``Q4_K_XL``.
- ``org/repo/path/to/file.gguf`` - that file. A part of a split model brings
  all its parts (llama.cpp needs every one); a projector comes alone.
- ``org/repo`` (or ``:latest``) - :data:`DEFAULT_ORDER`: ``Q4_K_M`` when the
  repo has it, else the nearest mid-size 4-bit one, else any other 4-bit one
  (the smallest), else the smallest with more bits, else the largest with
  fewer. The ``STARTING`` message and the plan's notes say what was chosen.
- Split models (``name-00001-of-00003.gguf``) come whole, in one total.
- A vision model's projector (a ``.gguf`` with ``mmproj`` in its name) comes
  along; option ``mmproj=false`` leaves it out. With several, the one in the
  model's folder whose precision equals the model's wins, else F16, BF16,
  F32, Q8_0, else the smallest.
- ``hf.co/`` and ``huggingface.co/`` in front of the repo id are accepted.

``gguf`` writes the Hugging Face cache (like ``huggingface``); ``COMPLETE``'s
``path`` is the model's ``.gguf`` (the first part of a split model).
``lmstudio`` writes LM Studio's tree (:mod:`modelpull.stores.lmstudio`); a
repo without GGUF files but with MLX weights comes whole, with the ``mlx``
provider's file choice, and ``path`` is its folder.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .._format import format_bytes
from .._secrets import Secret
from .._transfer import hash_fd_range, hex_of, new_hasher
from ..errors import IncompatibleModel, InvalidModel, ModelNotFound, UnsafeSource
from ..plan import Plan
from ..progress import ProgressTracker
from ..refs import parse_hf_repo_id
from ..stores.hf_cache import HfCacheStore
from ..stores.lmstudio import LmStudioStore
from ..stores.paths import safe_relative
from .base import TRANSFER_OPTIONS, bool_option, str_option
from .huggingface import MLX_PATTERNS, HfFile, HfPlanDetail, HuggingFaceProvider

__all__ = [
    "DEFAULT_ORDER",
    "GgufProvider",
    "GgufRef",
    "LmStudioProvider",
    "Quantization",
    "parse_gguf_ref",
    "quantization_of",
]

#: the no-tag choice, best first: Q4_K_M, then the 4-bit ones nearest to it in size and quality
DEFAULT_ORDER = (
    "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_XS", "IQ4_NL", "Q4_1", "Q4_K_L", "UD-Q4_K_XL", "Q4_K_XL",
)
#: projector precisions, best first, when none matches the model's own
PROJECTOR_ORDER = ("F16", "BF16", "F32", "Q8_0")

_QUANT = re.compile(
    r"(?<![a-z0-9])(?:ud-)?(?:"
    r"i?q[1-8](?:_(?:[0-9]+|k|[sml]|xl|xxs|xs|nl))*"
    r"|tq[12]_0|mxfp4(?:_moe)?|bf16|fp16|f16|fp32|f32|f64"
    r")(?![a-z0-9])",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf$", re.IGNORECASE)
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_HOSTS = ("hf.co/", "huggingface.co/")


@dataclass(frozen=True)
class GgufRef:
    """A parsed reference: repo, and at most one of tag or file path."""

    repo_id: str
    tag: str | None = None
    path: str | None = None


def parse_gguf_ref(model: object) -> GgufRef:
    """Parse ``org/repo[:TAG]`` or ``org/repo/path/to/file.gguf`` (offline).

    Raises :class:`~modelpull.errors.InvalidModel` with the expected forms.
    """
    if not isinstance(model, str) or not model.strip():
        raise InvalidModel("a GGUF model is required, e.g. 'org/repo:Q4_K_M' or 'org/repo/file.gguf'")
    text = model.strip()
    shown = text if len(text) <= 120 else text[:117] + "..."
    for host in _HOSTS:
        if text.lower().startswith(host):
            text = text[len(host):]
            break
    parts = text.split("/")
    if len(parts) > 2:
        path = "/".join(parts[2:])
        if not path.lower().endswith(".gguf"):
            raise InvalidModel(
                f"invalid GGUF model {shown!r}: a path after 'org/repo/' must name a .gguf file; "
                "use 'org/repo:TAG' to pick a quantization"
            )
        try:
            safe_relative(path)
        except UnsafeSource:
            raise InvalidModel(f"invalid GGUF model {shown!r}: bad file path {path[:80]!r}") from None
        return GgufRef(parse_hf_repo_id("/".join(parts[:2])), path=path)
    repo, sep, tag = text.partition(":")
    if sep and not _TAG.fullmatch(tag):
        raise InvalidModel(
            f"invalid GGUF model {shown!r}: bad tag {tag[:40]!r}; expected a quantization such as "
            "'org/repo:Q4_K_M'"
        )
    if tag.lower() == "latest":
        tag = ""
    return GgufRef(parse_hf_repo_id(repo), tag=tag or None)


def quantization_of(filename: str) -> str | None:
    """The quantization label of a GGUF file name (upper case), e.g. ``Q4_K_M``; None if none."""
    name = PurePosixPath(filename).name
    split = _SPLIT.match(name)
    stem = split.group("stem") if split else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    found = list(_QUANT.finditer(stem))
    return found[-1].group(0).upper() if found else None


def _bits(label: str) -> int | None:
    match = re.match(r"(?:UD-)?(?:I|T)?Q([0-9])", label)
    if match:
        return int(match.group(1))
    if label.startswith("MXFP4"):
        return 4
    digits = re.sub(r"[^0-9]", "", label)
    return int(digits) if digits else None


def is_projector(path: str) -> bool:
    return "mmproj" in PurePosixPath(path).name.lower()


@dataclass
class Quantization:
    """One loadable model in a GGUF repo: a single file or all parts of a split one."""

    label: str | None
    files: list[HfFile]
    missing_parts: int = 0

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def name(self) -> str:
        return self.label or self.files[0].path

    def describe(self) -> str:
        text = f"{self.name} {format_bytes(self.size)}"
        if len(self.files) > 1 or self.missing_parts:
            text += f" ({len(self.files) + self.missing_parts} parts)"
        return text


def group_quantizations(files: list[HfFile]) -> tuple[list[Quantization], list[HfFile]]:
    """Split a repo's GGUF files into models (split parts joined) and projectors."""
    singles: list[Quantization] = []
    splits: dict[tuple[str, int], dict[int, HfFile]] = {}
    projectors: list[HfFile] = []
    for f in files:
        if is_projector(f.path):
            projectors.append(f)
            continue
        match = _SPLIT.match(PurePosixPath(f.path).name)
        if match:
            key = (f.path[: len(f.path) - len(match.group(0))] + match.group("stem"), int(match.group("count")))
            splits.setdefault(key, {})[int(match.group("part"))] = f
        else:
            singles.append(Quantization(quantization_of(f.path), [f]))
    for (_, count), parts in splits.items():
        ordered = [parts[n] for n in sorted(parts)]
        quant = Quantization(quantization_of(ordered[0].path), ordered)
        quant.missing_parts = count - len(set(parts) & set(range(1, count + 1)))
        singles.append(quant)
    singles.sort(key=lambda q: (q.size, q.name))
    return singles, projectors


def _matching(quants: list[Quantization], tag: str) -> list[Quantization]:
    wanted = tag.upper()
    exact = [q for q in quants if q.label == wanted]
    if exact:
        return exact
    return [q for q in quants if q.label and q.label.startswith("UD-") and q.label[3:] == wanted]


def _default(quants: list[Quantization]) -> tuple[list[Quantization], str]:
    """The no-tag choice and why (candidates sharing the chosen label, for the ambiguity check)."""
    labeled = [q for q in quants if q.label]
    for label in DEFAULT_ORDER:
        hits = [q for q in labeled if q.label == label]
        if hits:
            why = "the default" if label == "Q4_K_M" else "no Q4_K_M here; the nearest 4-bit quantization"
            return hits, why
    rules = (
        ([q for q in labeled if _bits(q.label or "") == 4], min, "no Q4_K_M here; the smallest 4-bit one"),
        ([q for q in labeled if (_bits(q.label or "") or 0) > 4], min,
         "no 4-bit quantization here; the smallest larger one"),
        ([q for q in labeled if (_bits(q.label or "") or 99) < 4], max,
         "only quantizations below 4 bits here; the largest"),
    )
    for group, pick, why in rules:
        if group:
            best = pick(group, key=lambda q: q.size)
            return [q for q in group if q.label == best.label], why
    return list(quants), "the repo's only GGUF model"


def choose_projector(projectors: list[HfFile], model: Quantization) -> HfFile | None:
    if not projectors:
        return None
    folder = PurePosixPath(model.files[0].path).parent

    def rank(f: HfFile) -> tuple[int, int, int]:
        label = quantization_of(f.path)
        same_dir = 0 if PurePosixPath(f.path).parent == folder else 1
        if label is not None and label == model.label:
            precision = 0
        elif label in PROJECTOR_ORDER:
            precision = 1 + PROJECTOR_ORDER.index(label)
        else:
            precision = 1 + len(PROJECTOR_ORDER)
        return same_dir, precision, f.size

    return min(projectors, key=rank)


@dataclass
class GgufSelection:
    """What a reference resolved to in one repo."""

    files: list[HfFile]
    #: the file COMPLETE's ``path`` points at
    main: str
    model: Quantization | None
    projector: HfFile | None
    #: how the choice was made, for people
    reason: str
    available: list[Quantization] = field(default_factory=list)
    projectors: list[HfFile] = field(default_factory=list)


def _listing(quants: list[Quantization], projectors: list[HfFile]) -> str:
    text = "it has: " + (", ".join(q.describe() for q in quants) or "no GGUF model file")
    if projectors:
        text += "; projector" + ("s" if len(projectors) > 1 else "") + ": " + ", ".join(
            f"{PurePosixPath(p.path).name} {format_bytes(p.size)}" for p in projectors
        )
    return text


def select_gguf(ref: GgufRef, files: list[HfFile], *, mmproj: bool) -> GgufSelection:
    """Resolve ``ref`` against a repo's GGUF files (sizes known). Raises typed errors."""
    quants, projectors = group_quantizations(files)
    shown = ref.repo_id + (f":{ref.tag}" if ref.tag else "")
    listing = _listing(quants, projectors)
    by_path = {f.path: f for f in files}
    if ref.path is not None:
        named = by_path.get(ref.path)
        if named is None:
            raise ModelNotFound(f"{ref.repo_id} has no file {ref.path!r}; {listing}")
        if is_projector(named.path):
            return GgufSelection([named], named.path, None, None, f"file {named.path}", quants, projectors)
        group = next(q for q in quants if named.path in q.paths)
        chosen, reason = [group], f"file {named.path}"
        if len(group.files) > 1:
            reason += f" (part of a split model: all {len(group.files) + group.missing_parts} parts)"
    elif ref.tag is not None:
        chosen = _matching(quants, ref.tag)
        if not chosen:
            raise ModelNotFound(
                f"{ref.repo_id} has no {ref.tag!r} quantization (a tag must equal the quantization "
                f"in a file name, e.g. Q4_K_M); {listing}. Pick one: {ref.repo_id}:<quantization>"
            )
        reason = f"tag {ref.tag}: {chosen[0].name}"
    else:
        if not quants:
            raise ModelNotFound(f"{ref.repo_id} has no GGUF model file, only projectors; {listing}")
        chosen, why = _default(quants)
        reason = f"no tag given: chose {chosen[0].name} ({why}; name another with {ref.repo_id}:<quantization>)"
    if len(chosen) > 1:
        raise InvalidModel(
            f"{shown} matches {len(chosen)} models in {ref.repo_id}: "
            + ", ".join(q.files[0].path for q in chosen)
            + f"; name one file instead: {ref.repo_id}/<path>.gguf"
        )
    model = chosen[0]
    if model.missing_parts:
        raise ModelNotFound(
            f"{ref.repo_id} lacks {model.missing_parts} part(s) of the split model {model.files[0].path}; "
            "it cannot be loaded without them"
        )
    projector = choose_projector(projectors, model) if mmproj else None
    picked = list(model.files) + ([projector] if projector else [])
    return GgufSelection(picked, model.files[0].path, model, projector, reason, quants, projectors)


@dataclass
class GgufPlanDetail(HfPlanDetail):
    selection: GgufSelection | None = None


class GgufProvider(HuggingFaceProvider):
    """One quantization of a GGUF repo into the Hugging Face cache."""

    name = "gguf"
    options = frozenset({"revision", "cache_dir", "local_dir", "mmproj"}) | TRANSFER_OPTIONS
    #: a repo without GGUF files but with MLX weights is taken whole (``lmstudio``)
    accepts_mlx = False

    def __init__(self, model: str, token: Secret | None, base_url: str | None, options: dict[str, Any]) -> None:
        self.ref = parse_gguf_ref(model)
        super().__init__(self.ref.repo_id, token, base_url, options)
        self.model = str(model).strip()
        self.with_mmproj = bool_option(self.opts, "mmproj", True)

    # -- selection ------------------------------------------------------------
    def select(self, paths: list[str]) -> list[str]:
        # Every GGUF file is described (sizes) so the choice and the listing can use them.
        gguf = [p for p in paths if p.lower().endswith(".gguf")]
        if gguf or not self.accepts_mlx:
            return gguf
        return [p for p in paths if any(fnmatch.fnmatch(PurePosixPath(p).name, pat) for pat in MLX_PATTERNS)]

    def check_selection(self, files: list[HfFile]) -> None:
        if any(f.path.lower().endswith(".gguf") for f in files):
            return
        if self.accepts_mlx and any(f.path.endswith(".safetensors") for f in files):
            if self.ref.tag or self.ref.path:
                raise ModelNotFound(
                    f"{self.repo_id} is an MLX repo (no GGUF files), so it has no "
                    f"{self.ref.tag or self.ref.path!r}; it comes whole: use {self.repo_id!r}"
                )
            return
        kinds = "GGUF files or MLX weights" if self.accepts_mlx else "GGUF files"
        raise IncompatibleModel(
            f"{self.repo_id} has no {kinds} at revision {self.revision}; for other formats use "
            "the 'huggingface' or 'mlx' provider"
        )

    async def plan(self) -> Plan:
        plan = await super().plan()
        hf: HfPlanDetail = plan.detail
        if not any(f.path.lower().endswith(".gguf") for f in hf.files):  # an MLX repo (lmstudio)
            plan.detail = GgufPlanDetail(hf.repo_id, hf.commit, hf.revision, hf.files, hf.store)
            plan.notes = [f"{self.repo_id} has no GGUF files: the MLX model comes whole"]
            return plan
        selection = select_gguf(self.ref, hf.files, mmproj=self.with_mmproj)
        keep = [f.path for f in selection.files]
        items = {item.name: item for item in plan.items}
        plan.items = [items[p] for p in keep]
        plan.detail = GgufPlanDetail(
            hf.repo_id, hf.commit, hf.revision, list(selection.files), hf.store, selection=selection
        )
        plan.notes = [selection.reason[:1].upper() + selection.reason[1:]]
        if selection.projector is not None:
            plan.notes.append(
                f"Projector {selection.projector.path} comes along (option mmproj=false leaves it out)"
            )
        plan.notes.append(
            "Quantizations: " + ", ".join(
                q.describe() + (" (chosen)" if q is selection.model else "") for q in selection.available
            )
        )
        return plan

    # -- messages -------------------------------------------------------------
    def starting_message(self, plan: Plan) -> str:
        detail = plan.detail
        selection = detail.selection if isinstance(detail, GgufPlanDetail) else None
        if selection is None:
            return super().starting_message(plan)
        what = selection.model.name if selection.model else PurePosixPath(selection.main).name
        text = f"Downloading {self.repo_id} {what} from {self.name}: {plan.summary()}"
        if selection.projector is not None:
            text += f", with projector {PurePosixPath(selection.projector.path).name}"
        if self.ref.tag is None and self.ref.path is None:
            text += f"; {selection.reason}"
        return text

    # -- fetch ----------------------------------------------------------------
    async def fetch(self, plan: Plan, tracker: ProgressTracker) -> str:
        where = await super().fetch(plan, tracker)
        detail = plan.detail
        selection = detail.selection if isinstance(detail, GgufPlanDetail) else None
        if selection is None:
            return where
        if isinstance(self.store, HfCacheStore):
            # the snapshot entry is a symlink into blobs/: join, do not resolve
            return str(Path(where).joinpath(*safe_relative(selection.main).parts))
        main = next(f for f in detail.files if f.path == selection.main)
        return str(self.store.slot(main.path, main.etag).final)


class LmStudioProvider(GgufProvider):
    """The same choice, placed where LM Studio lists models; MLX repos come whole."""

    name = "lmstudio"
    options = frozenset({"revision", "mmproj", "models_dir"}) | TRANSFER_OPTIONS
    accepts_mlx = True

    def __init__(self, model: str, token: Secret | None, base_url: str | None, options: dict[str, Any]) -> None:
        super().__init__(model, token, base_url, options)
        self.lmstudio = LmStudioStore(self.repo_id, str_option(self.opts, "models_dir"))
        self.store = self.lmstudio

    async def plan(self) -> Plan:
        plan = await super().plan()
        await self._adopt_existing(plan)
        return plan

    async def _adopt_existing(self, plan: Plan) -> None:
        """A file already in place without our record (LM Studio downloaded it, say)
        counts as local once its digest matches; otherwise it is fetched and replaced."""
        detail: HfPlanDetail = plan.detail
        items = {item.name: item for item in plan.items}
        for f in detail.files:
            item = items[f.path]
            final = self.lmstudio.slot(f.path, f.etag).final
            if not final.is_file() or final.stat().st_size != f.size:
                continue
            if self.lmstudio.is_current(f.path, f.etag, f.size):
                continue
            cancel = threading.Event()
            try:
                same = await asyncio.to_thread(_has_digest, final, f.digest, f.size, cancel)
            except asyncio.CancelledError:
                cancel.set()
                raise
            if same:
                self.lmstudio.publish(detail.commit, [(f.path, f.etag)])
                item.local, item.present_bytes = True, f.size
            else:  # other content under that name: none of it counts
                item.local, item.present_bytes = False, 0


def _has_digest(path: Path, digest: str, size: int, cancel: threading.Event) -> bool:
    hasher = new_hasher(digest, size)
    fd = os.open(path, os.O_RDONLY)
    try:
        hash_fd_range(fd, 0, size, hasher, cancel)
    finally:
        os.close(fd)
    return bool(hasher.hexdigest() == hex_of(digest))
