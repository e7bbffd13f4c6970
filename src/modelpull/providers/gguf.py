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

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .._format import format_bytes
from .._gguf import SPLIT as _SPLIT
from .._gguf import gguf_quantization, is_projector, quantization_of
from .._safepath import safe_relative
from .._secrets import Secret
from ..errors import IncompatibleModel, InvalidModel, ModelNotFound, UnsafeSource
from ..plan import QuantizationChoice
from ..refs import parse_hf_repo_id
from ..stores.lmstudio import lmstudio_store
from ._hf_client import HubClient
from ._places import (
    HF_CACHE,
    HF_CACHE_DIR,
    HF_ENDPOINT,
    hub_repo_of,
    scan_partials,
)
from ._repo import RepoFile, RepoProvider, Selection
from ._source import (
    COMMON_OPTIONS,
    TRANSFER_OPTIONS,
    LocalModel,
    Location,
    Option,
    PartialDownload,
    Place,
    Settings,
    Source,
)
from .base import bool_option, str_option
from .huggingface import (
    CACHE_DIR,
    HUB_BASE_URL,
    LOCAL_DIR,
    REVISION,
    hub_revision,
    hub_store,
    is_mlx_file,
)

__all__ = [
    "DEFAULT_ORDER",
    "GGUF",
    "LMSTUDIO",
    "SOURCES",
    "GgufRef",
    "GgufSelector",
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


def _bits(label: str) -> int | None:
    match = re.match(r"(?:UD-)?(?:I|T)?Q([0-9])", label)
    if match:
        return int(match.group(1))
    if label.startswith("MXFP4"):
        return 4
    digits = re.sub(r"[^0-9]", "", label)
    return int(digits) if digits else None


@dataclass
class Quantization:
    """One loadable model in a GGUF repo: a single file or all parts of a split one."""

    label: str | None
    files: list[RepoFile]
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


def group_quantizations(files: list[RepoFile]) -> tuple[list[Quantization], list[RepoFile]]:
    """Split a repo's GGUF files into models (split parts joined) and projectors."""
    singles: list[Quantization] = []
    splits: dict[tuple[str, int], dict[int, RepoFile]] = {}
    projectors: list[RepoFile] = []
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


def choose_projector(projectors: list[RepoFile], model: Quantization) -> RepoFile | None:
    if not projectors:
        return None
    folder = PurePosixPath(model.files[0].path).parent

    def rank(f: RepoFile) -> tuple[int, int, int]:
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

    files: list[RepoFile]
    #: the file COMPLETE's ``path`` points at
    main: str
    model: Quantization | None
    projector: RepoFile | None
    #: how the choice was made, for people
    reason: str
    available: list[Quantization] = field(default_factory=list)
    projectors: list[RepoFile] = field(default_factory=list)


def _listing(quants: list[Quantization], projectors: list[RepoFile]) -> str:
    text = "it has: " + (", ".join(q.describe() for q in quants) or "no GGUF model file")
    if projectors:
        text += "; projector" + ("s" if len(projectors) > 1 else "") + ": " + ", ".join(
            f"{PurePosixPath(p.path).name} {format_bytes(p.size)}" for p in projectors
        )
    return text


def select_gguf(ref: GgufRef, files: list[RepoFile], *, mmproj: bool) -> GgufSelection:
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


class GgufSelector:
    """One quantization of a GGUF repo (see the module docstring).

    With ``accepts_mlx`` (``lmstudio``), a repo without GGUF files but with MLX
    weights comes whole, with the ``mlx`` source's file choice.
    """

    def __init__(self, ref: GgufRef, mmproj: bool, accepts_mlx: bool = False) -> None:
        self.ref, self.mmproj, self.accepts_mlx = ref, mmproj, accepts_mlx

    def wanted(self, paths: list[str]) -> list[str]:
        # Every GGUF file is described (sizes) so the choice and the listing can use them.
        gguf = [p for p in paths if p.lower().endswith(".gguf")]
        if gguf or not self.accepts_mlx:
            return gguf
        return [p for p in paths if is_mlx_file(p)]

    def choose(self, repo_id: str, revision: str, files: list[RepoFile]) -> Selection:
        if not any(f.path.lower().endswith(".gguf") for f in files):
            return self._whole_mlx_repo(repo_id, revision, files)
        selection = select_gguf(self.ref, files, mmproj=self.mmproj)
        notes = [selection.reason[:1].upper() + selection.reason[1:]]
        if selection.projector is not None:
            notes.append(
                f"Projector {selection.projector.path} comes along (option mmproj=false leaves it out)"
            )
        notes.append(
            "Quantizations: " + ", ".join(
                q.describe() + (" (chosen)" if q is selection.model else "") for q in selection.available
            )
        )
        label = selection.model.name if selection.model else PurePosixPath(selection.main).name
        choices = self._choices(repo_id, selection)
        remark = ""
        if selection.projector is not None:
            remark += f", with projector {PurePosixPath(selection.projector.path).name}"
        if self.ref.tag is None and self.ref.path is None:
            remark += f"; {selection.reason}"
        return Selection(list(selection.files), selection.main, notes, label, remark, choices)

    def _choices(self, repo_id: str, selection: GgufSelection) -> list[QuantizationChoice]:
        """Every quantization of the repo, for a picker: sizes, files, default, chosen, projector."""
        quants = selection.available
        defaults, _ = _default(quants) if quants else ([], "")
        default = defaults[0] if len(defaults) == 1 else None
        labels = [q.label for q in quants]
        choices = []
        for quant in quants:
            unique = quant.label is not None and labels.count(quant.label) == 1
            projector = choose_projector(selection.projectors, quant) if self.mmproj else None
            choices.append(QuantizationChoice(
                name=quant.name,
                reference=f"{repo_id}:{quant.label}" if unique else f"{repo_id}/{quant.files[0].path}",
                size=quant.size,
                files=quant.paths,
                projector=projector.path if projector else None,
                projector_size=projector.size if projector else 0,
                default=quant is default,
                chosen=quant is selection.model,
            ))
        return choices

    def _whole_mlx_repo(self, repo_id: str, revision: str, files: list[RepoFile]) -> Selection:
        if self.accepts_mlx and any(f.path.endswith(".safetensors") for f in files):
            if self.ref.tag or self.ref.path:
                raise ModelNotFound(
                    f"{repo_id} is an MLX repo (no GGUF files), so it has no "
                    f"{self.ref.tag or self.ref.path!r}; it comes whole: use {repo_id!r}"
                )
            return Selection(files, notes=[f"{repo_id} has no GGUF files: the MLX model comes whole"])
        kinds = "GGUF files or MLX weights" if self.accepts_mlx else "GGUF files"
        raise IncompatibleModel(
            f"{repo_id} has no {kinds} at revision {revision}; for other formats use "
            "the 'huggingface' or 'mlx' provider"
        )


# -- the sources -------------------------------------------------------------------------
def _build_gguf(source: Source, model: str, token: Secret | None, base_url: str | None,
                options: dict[str, Any]) -> RepoProvider:
    ref = parse_gguf_ref(model)
    return RepoProvider(
        source, str(model).strip(), base_url, options, repo_id=ref.repo_id,
        revision=hub_revision(options), client=HubClient(base_url, token),
        selector=GgufSelector(ref, bool_option(options, "mmproj", True)),
        store=hub_store(ref.repo_id, options),
    )


def _build_lmstudio(source: Source, model: str, token: Secret | None, base_url: str | None,
                    options: dict[str, Any]) -> RepoProvider:
    ref = parse_gguf_ref(model)
    return RepoProvider(
        source, str(model).strip(), base_url, options, repo_id=ref.repo_id,
        revision=hub_revision(options), client=HubClient(base_url, token),
        selector=GgufSelector(ref, bool_option(options, "mmproj", True), accepts_mlx=True),
        store=lmstudio_store(ref.repo_id, str_option(options, "models_dir")),
    )


MMPROJ = Option("mmproj", "bool", "bring the vision projector (mmproj) along when the repo has one", True)
GGUF_REFERENCE = "org/repo[:QUANT] or org/repo/path/file.gguf"

GGUF = Source(
    name="gguf",
    title="GGUF quantization",
    summary="One quantization of a GGUF repo on the Hub (Q4_K_M unless a tag names another), into the HF cache.",
    example="bartowski/Qwen_Qwen3-8B-GGUF:Q4_K_M",
    reference=GGUF_REFERENCE,
    parse=parse_gguf_ref,
    build=_build_gguf,
    options=(REVISION, CACHE_DIR, LOCAL_DIR, MMPROJ, *TRANSFER_OPTIONS, *COMMON_OPTIONS),
    base_url_help=HUB_BASE_URL,
    base_url_setting=HF_ENDPOINT,
    place=HF_CACHE,
    folder_option="cache_dir",
    folder_setting=HF_CACHE_DIR,
    owns=lambda model: model.format == "gguf",
    rank=30,
)


# -- LM Studio's models folder -------------------------------------------------------------
LMSTUDIO_DIR = Location(
    "lmstudio_dir", "--lmstudio-dir", "LM Studio models folder (default: from LM Studio's settings)."
)


def _lmstudio_list(settings: Settings) -> list[LocalModel]:
    from ..stores import lmstudio

    return [
        LocalModel(
            provider="",
            name=str(entry["name"]),
            size_bytes=int(entry.get("size") or 0),
            source="lmstudio",
            path=entry.get("path"),
            modified=entry.get("modified"),
            files=len(entry.get("files") or []),
            mlx=entry.get("format") == "mlx",
            format=entry.get("format"),
            quantization=gguf_quantization([str(f) for f in entry.get("files") or [] if str(f).endswith(".gguf")]),
            shared_bytes=int(entry.get("shared_bytes") or 0),
        )
        for entry in lmstudio.list_local(models_dir=LMSTUDIO_DIR.value(settings))
    ]


def _lmstudio_find_blob(sha256: str, size: int, settings: Settings) -> list[Path]:
    from ..stores import lmstudio

    return lmstudio.find_blob(sha256, size, models_dir=LMSTUDIO_DIR.value(settings))


def _lmstudio_delete(source: Source, model: str, settings: Settings) -> dict[str, Any]:
    from ..stores import lmstudio

    entry = lmstudio.delete_local(model, models_dir=LMSTUDIO_DIR.value(settings))
    return {
        "provider": source.name,
        "name": entry.get("name", model),
        "freed_bytes": int(entry.get("size") or 0),
        "source": "lmstudio",
    }


def _lmstudio_partials(settings: Settings) -> list[PartialDownload]:
    from ..stores import lmstudio

    root = lmstudio.resolve_models_dir(LMSTUDIO_DIR.value(settings))
    state = root / lmstudio.STATE_FOLDER

    def model_of(path: Path) -> str:
        return "/".join(path.relative_to(state).parts[:2])

    def file_of(path: Path) -> str:
        name = path.name.removesuffix(".incomplete").rsplit(".", 1)[0]  # <name>.<etag>.incomplete
        return "/".join((*path.relative_to(state).parts[2:-1], name))

    if not state.is_dir():
        return []
    return scan_partials(sorted(state.rglob("*.incomplete")), "lmstudio", "lmstudio", model_of, file_of)


LMSTUDIO_PLACE = Place(
    name="lmstudio",
    title="LM Studio",
    locations=(LMSTUDIO_DIR,),
    list=_lmstudio_list,
    delete=_lmstudio_delete,
    same_model=lambda a, b: hub_repo_of(a) == hub_repo_of(b),
    partials=_lmstudio_partials,
    find_blob=_lmstudio_find_blob,
)

LMSTUDIO = Source(
    name="lmstudio",
    title="LM Studio",
    summary="A GGUF quantization (or a whole MLX repo) from the Hub, into the folder LM Studio lists.",
    example="lmstudio-community/Qwen3-8B-GGUF:Q4_K_M",
    reference=GGUF_REFERENCE,
    parse=parse_gguf_ref,
    build=_build_lmstudio,
    options=(
        REVISION, MMPROJ,
        Option("models_dir", "path", "LM Studio's models folder (default: LM Studio's own setting)"),
        *TRANSFER_OPTIONS, *COMMON_OPTIONS,
    ),
    base_url_help=HUB_BASE_URL,
    base_url_setting=HF_ENDPOINT,
    place=LMSTUDIO_PLACE,
    folder_option="models_dir",
    folder_setting=LMSTUDIO_DIR,
    rank=20,
)

SOURCES = (GGUF, LMSTUDIO)
