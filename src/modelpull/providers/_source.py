"""How a source of models declares itself.

A source (``huggingface``, ``ollama-registry``, ...) states in one place, its
own module, everything the rest of modelpull needs to know about it:

- its name, aliases, a title, a one-line summary and an example model, for people;
- how a model reference is parsed and validated (offline, before any network call);
- its options (name, type, default, help), which the CLI, the service's
  ``GET /providers`` and the page show, and which :mod:`modelpull.api` checks;
- what ``base_url`` means to it, and which machine-wide setting gives its default;
- where its models land (a :class:`Place`, with the settings and environment
  that move it), and how the models there are listed, measured and deleted.

The registry (:mod:`modelpull.providers`) is the only list of sources. Nothing
else names a source: the API, the CLI, the service, the inventory and the page
derive everything from the declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import as_bool

if TYPE_CHECKING:
    from .._secrets import Secret
    from .base import Provider

__all__ = [
    "COMMON_OPTIONS",
    "TRANSFER_OPTIONS",
    "Landing",
    "LocalModel",
    "Location",
    "Option",
    "PartialDownload",
    "Place",
    "Settings",
    "Source",
]

#: setting name -> value, as given to the inventory or the service (unset ones absent)
Settings = Mapping[str, Any]


@dataclass(frozen=True)
class Option:
    """One option a source accepts (``download_model(..., name=value)``, ``-o name=value``)."""

    name: str
    #: ``bool``, ``str``, ``int``, ``float``, ``patterns`` (a glob or a list of them),
    #: ``path`` (a folder on this machine), ``policy`` (a name or a TransferPolicy) or
    #: ``rate`` (bytes per second: a number or ``20M``)
    type: str
    help: str
    default: Any = None

    @property
    def is_path(self) -> bool:
        """Names a folder on this machine (a service refuses it unless clients may choose)."""
        return self.type == "path"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "default": self.default, "help": self.help}


@dataclass(frozen=True)
class Location:
    """A machine-wide setting: a folder models live in, or a server's address.

    ``name`` is the setting in :class:`~modelpull.service.ServiceConfig` and in
    the inventory's keyword arguments (``inventory_name`` when that differs);
    ``flag`` is the option of ``modelpull serve``, ``list`` and ``rm``.
    """

    name: str
    flag: str
    help: str
    is_url: bool = False
    inventory_name: str | None = None
    #: used by ``modelpull serve`` only (a source address, not a place to list)
    serve_only: bool = False

    @property
    def key(self) -> str:
        """The inventory keyword for this setting."""
        return self.inventory_name or self.name

    def value(self, settings: Settings) -> str | None:
        """This setting in ``settings`` (a path or a URL string), None when unset."""
        value = settings.get(self.key)
        if value is not None and not isinstance(value, str) and not hasattr(value, "__fspath__"):
            from ..errors import InvalidOption

            raise InvalidOption(f"{self.key} must be a {'URL' if self.is_url else 'folder path'}")
        return str(value) if value else None


@dataclass
class LocalModel:
    """One model on this machine (or on a server)."""

    provider: str
    name: str
    size_bytes: int
    source: str  # which place holds it: "hf-cache", "ollama-server", "ollama-store", "lmstudio", ...
    path: str | None = None
    modified: float | None = None
    files: int | None = None
    revisions: list[str] = field(default_factory=list)
    #: bytes of unfinished downloads kept for resume
    partial_bytes: int = 0
    mlx: bool = False
    complete: bool = True
    #: what the files are, when the place can tell: ``gguf``, ``mlx``, ``transformers``, ...
    format: str | None = None
    #: a GGUF model's quantization (``Q4_K_M``; several joined by ", "), when known
    quantization: str | None = None
    #: bytes of its files that are also another model's or store's (hard links: on disk once)
    shared_bytes: int = 0
    #: what kind of model it is, for people ("GGUF Q4_K_M", "MLX", "Ollama Q4_K_M", ...)
    kind: str = ""
    #: where it is, for people (the place's title, or its own word: "Ollama server")
    where: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe_kind(self) -> str:
        """The kind people see, from what the files are (a place may say better itself)."""
        quant = f" {self.quantization}" if self.quantization else ""
        if self.format == "gguf":
            return "GGUF" + quant
        if self.format == "mlx" or self.mlx:
            return "MLX"
        if self.format:
            return self.format[:1].upper() + self.format[1:]
        return "Files"


@dataclass
class PartialDownload:
    """An unfinished file of a download, kept on disk so the next pull resumes it."""

    provider: str
    model: str
    #: the file or layer (its name in the repo, or the blob's digest when nothing better is known)
    file: str
    present_bytes: int
    #: None when the tool that left it recorded no size (huggingface_hub's own partials)
    total_bytes: int | None
    #: last activity (POSIX seconds): when bytes were last written
    modified: float
    #: the partial file itself (its part state, if any, sits beside it)
    path: str
    source: str  # the place: "hf-cache", "ollama-store", "lmstudio", ...
    #: who left it: "modelpull", or another tool ("huggingface_hub")
    left_by: str = "modelpull"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: lists the partial downloads a place keeps
PartialsHook = Callable[[Settings], list[PartialDownload]]
#: files of a place holding a blob's bytes: (sha256 hex, size, settings) -> paths
BlobFinder = Callable[[str, int, Settings], list[Path]]


@dataclass(frozen=True)
class Place:
    """Where models land, shared by every source that writes there.

    ``list`` and ``delete`` are the inventory hooks; they receive the settings
    (:class:`Location` values by inventory name, plus the place's own
    ``inventory_options``). ``delete`` also gets the source asked for, so a
    source that sees only part of a place (``mlx`` in the HF cache, by its
    ``owns``) can refuse what is not its own. ``same_model`` tells whether two references name one
    local model here: a model being downloaded is not deleted under it.
    ``find_blob(sha256_hex, size, settings)`` lists the files here said to hold
    exactly those bytes (a blob named by its digest, a file with a recorded
    digest): before fetching a file, a download asks every place, links what
    it finds and verifies it (one copy on disk). It must be cheap: no hashing.
    """

    name: str
    title: str
    locations: tuple[Location, ...]
    list: Callable[[Settings], list[LocalModel]]
    delete: Callable[[Source, str, Settings], dict[str, Any]]
    same_model: Callable[[str, str], bool]
    #: inventory keywords this place accepts besides its locations
    inventory_options: frozenset[str] = frozenset()
    #: the unfinished downloads kept there (None: the place keeps none modelpull can see)
    partials: PartialsHook | None = None
    #: files here holding a blob's bytes, by sha256 (None: the place cannot tell)
    find_blob: BlobFinder | None = None


@dataclass(frozen=True)
class Landing:
    """Where a download lands: a place, and the option and setting that choose its folder.

    A source lands in its own place unless one of its boolean options moves it
    (``modelscope`` with ``lmstudio=true`` writes into LM Studio's folder): the
    delete guard, the service's default folders and the dedup all follow the move.
    """

    place: Place | None
    folder_option: str | None = None
    folder_setting: Location | None = None
    #: the boolean option that moves a download here (None: the source's own place)
    option: str | None = None


#: builds the provider for one download: (source, model, token, base_url, options)
ProviderFactory = Callable[["Source", str, "Secret | None", "str | None", dict[str, Any]], "Provider"]


@dataclass(frozen=True)
class Source:
    """Everything modelpull knows about one source of models."""

    name: str
    title: str
    summary: str
    example: str
    #: the reference grammar, for people: ``org/name``, ``[host/][namespace/]model[:tag]``
    reference: str
    #: validates a model reference offline; raises :class:`~modelpull.errors.InvalidModel`
    parse: Callable[[str], object]
    build: ProviderFactory
    aliases: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    #: what ``base_url`` means here (None: the source takes no base_url)
    base_url_help: str | None = None
    #: the machine-wide setting that gives ``base_url`` its default in the service
    base_url_setting: Location | None = None
    place: Place | None = None
    #: the option that moves the place's folder per download, and the setting giving its default
    folder_option: str | None = None
    folder_setting: Location | None = None
    #: which of the place's models count as this source's (None: all of them)
    owns: Callable[[LocalModel], bool] | None = None
    #: people see sources in this order: the common ones first
    rank: int = 100
    #: other places an option moves a download to (see :class:`Landing`)
    moves: tuple[Landing, ...] = ()

    def landing(self, options: Mapping[str, Any] | None = None) -> Landing:
        """Where a download with these options lands."""
        for move in self.moves:
            if as_bool((options or {}).get(move.option or "")):
                return move
        return Landing(self.place, self.folder_option, self.folder_setting)

    @property
    def option_names(self) -> frozenset[str]:
        return frozenset(option.name for option in self.options)

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def describe(self) -> dict[str, Any]:
        """What ``GET /providers``, the CLI's help and the page show."""
        return {
            "name": self.name,
            "title": self.title,
            "summary": self.summary,
            "example": self.example,
            "reference": self.reference,
            "aliases": list(self.aliases),
            "base_url": self.base_url_help,
            "place": self.place.title if self.place else None,
            "options": [option.describe() for option in self.options],
        }


#: the transfer settings every source that moves bytes itself accepts
TRANSFER_OPTIONS: tuple[Option, ...] = (
    Option("policy", "policy", "transfer policy: 'default' (adaptive parts), 'ollama' (up to 16 parts "
           "of 100 MB-1 GB per file, as Ollama) or 'single' (one connection per file)", "default"),
    Option("part_size", "int", "bytes per ranged part (fixes the policy's part size)"),
    Option("max_parts", "int", "at most this many parts per file"),
    Option("max_connections", "int", "parts of one file fetched at the same time"),
    Option("max_parallel_files", "int", "files fetched at the same time"),
    Option("max_retries", "int", "attempts without progress before a file fails"),
    Option("stall_timeout", "float", "seconds a silent connection may wait before it is retried", 30.0),
    Option("connect_timeout", "float", "seconds to wait for a connection", 30.0),
    Option("max_speed", "rate", "bandwidth cap of the whole download in bytes/s: a number, or 20M "
           "(20 MB/s), 500k, 2G, 20Mi (MiB/s); shared by all its connections and files"),
    Option("backoff_initial", "float", "seconds to wait after a first failed attempt (doubles with each)", 0.5),
    Option("backoff_max", "float", "the longest wait between two attempts, in seconds", 15.0),
    Option("request_attempts", "int", "attempts at a metadata request (file list, manifest)", 3),
    Option("dedup", "bool", "before fetching a file, look for the same bytes in every store on this "
           "machine (HF cache, LM Studio, Ollama, Docker, ModelScope) and link them, verified", True),
)
#: options every source accepts
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("dry_run", "bool", "plan only: list what would be fetched, download nothing", False),
    Option("offline", "bool", "no network at all: use the copy on disk, or say what is missing", False),
)
