"""What every provider implements: validate (offline), plan, fetch."""

from __future__ import annotations

import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._format import format_bytes
from .._secrets import Secret
from .._transfer import POLICY_SETTINGS, RateLimit, TransferPolicy, new_session, resolve_policy
from ..errors import DiskFull, InvalidOption, ModelpullError
from ..plan import LocalCopy, Plan, PlanItem
from ..progress import ProgressTracker

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("modelpull")


#: where the stores are when a download looks for local copies (Location keys -> folders);
#: unset ones are found as each store finds them (environment, defaults). The service
#: sets its own folders here for its jobs.
PLACE_SETTINGS: ContextVar[Mapping[str, Any]] = ContextVar(
    "modelpull_place_settings", default=MappingProxyType({})
)


class Provider(ABC):
    """One download from one source: ``plan()`` then ``fetch()``.

    Options were checked against the source's declaration before the provider
    is built (:func:`modelpull.api.download_model`).
    """

    name: str

    def __init__(
        self, model: str, token: Secret | None, base_url: str | None, options: dict[str, Any]
    ) -> None:
        self.model = model
        self.token = token
        self.base_url = base_url
        self.opts = dict(options)
        self._session: aiohttp.ClientSession | None = None
        # max_speed may also be a RateLimit shared with other downloads (a service's cap)
        shared = self.opts.get("max_speed")
        shared = shared if isinstance(shared, RateLimit) else None
        self.policy: TransferPolicy = resolve_policy(
            self.opts.get("policy"),
            **{k: v for k, v in self.opts.items()
               if k in POLICY_SETTINGS and not (k == "max_speed" and shared)},
        )
        if shared is not None:
            self.policy = replace(self.policy, limit=shared)
        #: look in the other stores before fetching a file
        self.dedup = bool_option(self.opts, "dedup", True)

    # -- lifecycle ---------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session(self.policy)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def secrets(self) -> list[Secret | None]:
        return [self.token]

    # -- the flow ----------------------------------------------------------
    @property
    def offline(self) -> bool:
        """No network at all: the ``offline`` option (sources may add their own convention)."""
        return bool_option(self.opts, "offline")

    async def local_copy(self) -> LocalCopy | None:
        """The requested model as it is on disk, without any network call; None when this
        source keeps no store or knows nothing of the model locally."""
        return None

    @abstractmethod
    async def plan(self) -> Plan:
        """Resolve the model: files or layers, sizes, what is local. No bytes moved."""

    @abstractmethod
    async def fetch(self, plan: Plan, tracker: ProgressTracker) -> str:
        """Fetch what the plan lists, verify, publish; return where the model is."""

    def starting_message(self, plan: Plan) -> str:
        return f"Downloading {plan.model} from {self.name}: {plan.summary()}"

    def verified_message(self, plan: Plan, fetched: list[PlanItem]) -> str:
        """The VERIFYING event said before COMPLETE when the files were checked as they arrived."""
        count = f"{len(fetched)} file{'s' if len(fetched) > 1 else ''}"
        return f"Verified {count} of {self.model} against their digests"

    def complete_message(self, plan: Plan, path: str) -> str:
        return f"Downloaded {self.model} to {path}"

    def progress_message(self, tracker: ProgressTracker) -> str:
        if tracker.current:
            return f"Downloading {self.model}: {tracker.current}"
        return f"Downloading {self.model}"

    def space_needed(self, plan: Plan) -> list[tuple[Path, int]]:
        """(directory, bytes) pairs that must fit before the first byte is fetched."""
        return []

    # -- one copy on disk ----------------------------------------------------
    def copies_elsewhere(self, digest: str | None, size: int) -> Callable[[], list[Path]] | None:
        """Asks every store on this machine for files holding these bytes (None: not looked for).

        For :attr:`FileTransfer.copies <modelpull._transfer.FileTransfer>`: asked just
        before the file would be fetched; the engine links, verifies and publishes
        what it finds. Only sha256 digests (a blob is named by them); never with ``dedup=False``.
        """
        if not self.dedup or not digest or not digest.startswith("sha256:"):
            return None
        sha256, settings = digest.split(":", 1)[1], self._place_settings()
        return lambda: find_copies(sha256, size, settings)

    def copies_note(self, files: Iterable[tuple[str | None, int]]) -> list[str]:
        """A plan note on the files (digest, size) other stores already hold."""
        count = total = 0
        for digest, size in files:
            find = self.copies_elsewhere(digest, size)
            if find is not None and find():
                count, total = count + 1, total + size
        if not count:
            return []
        files_text = f"{count} file{'s' if count > 1 else ''} ({format_bytes(total)})"
        return [f"{files_text} already on this machine in another store: linked and verified, not downloaded"]

    def _place_settings(self) -> dict[str, Any]:
        """The folders of the stores: the service's or the defaults, this download's own folder."""
        from . import SOURCES

        settings = dict(PLACE_SETTINGS.get())
        source = SOURCES.find(self.name)
        landing = source.landing(self.opts) if source is not None else None
        if landing is not None and landing.folder_option and landing.folder_setting:
            own = self.opts.get(landing.folder_option)
            if own:
                settings[landing.folder_setting.key] = own
        return settings


def find_copies(sha256: str, size: int, settings: Mapping[str, Any]) -> list[Path]:
    """Files of every store holding a blob's bytes, by its sha256 (each place's ``find_blob``)."""
    from . import SOURCES

    found: dict[Path, None] = {}
    for place in SOURCES.places():
        if place.find_blob is None:
            continue
        try:
            found.update(dict.fromkeys(place.find_blob(sha256, size, settings)))
        except (OSError, ModelpullError) as exc:
            log.debug("could not look for %s in %s: %s", sha256[:12], place.title, exc)
    return list(found)


def check_free_space(needs: list[tuple[Path, int]]) -> None:
    """Raise :class:`DiskFull` when a plan's missing bytes do not fit on its disk."""
    for directory, needed in needs:
        if needed <= 0:
            continue
        probe = Path(directory)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if needed > free:
            raise DiskFull(
                f"not enough disk space in {directory}: the download needs "
                f"{format_bytes(needed)}, only {format_bytes(free)} is free. Free some space "
                "or choose another location, then run it again"
            )


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def as_bool(value: Any) -> bool | None:
    """A boolean option's value as written (a bool, or 1/0, true/false, yes/no, on/off); None if
    it is none of those."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    return None


def bool_option(options: dict[str, Any], name: str, default: bool = False) -> bool:
    value = options.get(name, default)
    parsed = as_bool(value)
    if parsed is not None:
        return parsed
    raise InvalidOption(f"option {name!r} must be true or false, got {value!r}")


def str_option(options: dict[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is None or (isinstance(value, str) and value):
        return value
    raise InvalidOption(f"option {name!r} must be a non-empty string, got {value!r}")


def patterns_option(options: dict[str, Any], name: str) -> list[str] | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise InvalidOption(f"option {name!r} must be a glob pattern or a list of them, got {value!r}")
