"""A repository of files on a Hub-like site, put together from three parts.

Sources of the Hub family (``huggingface``, ``mlx``, ``gguf``, ``lmstudio``,
and any site with the same shape) are one :class:`RepoProvider` built from:

- a **client** (:class:`RepoClient`): where the repo lives - endpoint, token,
  the file list with sizes and digests, file URLs, error wording;
- a **selector** (:class:`FileSelector`): which files this source fetches -
  all (with patterns), what MLX loads, one GGUF quantization;
- a **store** (:class:`RepoStore`): where the files land - the HF cache, a
  plain folder, LM Studio's tree - and how they are published.

Plan: the client lists the repo, the selector chooses, the store says what is
already present. Fetch: every file through the transfer engine into the
store's slots, then the store publishes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .._transfer import FileTransfer, TransferEngine, file_has_digest, present_bytes
from ..errors import ModelNotFound, ModelpullError
from ..plan import LocalCopy, Plan, PlanDetail, PlanItem, QuantizationChoice
from ..progress import ProgressTracker
from ..stores.paths import FileSlot
from .base import Provider

if TYPE_CHECKING:
    import aiohttp

    from .._secrets import Secret
    from .._transfer import Auth, TransferPolicy
    from ..stores.hf_cache import LocalSnapshot
    from ._source import Source

__all__ = [
    "FileCommitIndex",
    "FileSelector",
    "RepoClient",
    "RepoFile",
    "RepoListing",
    "RepoProvider",
    "RepoStore",
    "Selection",
    "SnapshotStore",
    "file_has_digest",
]


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository, as its site describes it."""

    path: str  # POSIX path in the repo, checked with stores.paths.safe_relative
    size: int
    etag: str  # the store's name for the bytes: sha256 hex, or a git blob id for small Hub files
    digest: str  # what the engine verifies: "sha256:<hex>" or "gitsha1:<hex>"


@dataclass
class RepoListing:
    """A repo's files at one resolved revision."""

    commit: str
    files: list[RepoFile]
    #: the whole repo's listing, recorded with the download so an offline run knows what
    #: a complete copy holds (huggingface_hub's tree-cache entries); None if not known
    tree: dict[str, dict[str, Any]] | None = None
    #: the commit that last changed each file, where the site tells (ModelScope does);
    #: stores that index files by their own commit (:class:`FileCommitIndex`) record it
    file_commits: dict[str, str] = field(default_factory=dict)
    #: what file URLs name: None for ``commit`` (the Hub pins the snapshot), or the branch
    #: or tag for a site whose clients download by name (ModelScope's SDKs do)
    ref: str | None = None


class RepoClient(Protocol):
    """Where a repo lives: listing, file URLs, credentials, error wording."""

    endpoint: str

    @property
    def token(self) -> Secret | None: ...

    async def listing(
        self, session: aiohttp.ClientSession, policy: TransferPolicy, repo_id: str, revision: str,
        wanted: FileSelector,
    ) -> RepoListing:
        """The selector's wanted files (``wanted.wanted``), described with sizes and digests."""
        ...

    def file_url(self, repo_id: str, path: str, commit: str) -> str:
        """Where ``path`` is fetched; ``commit`` is the listing's ``ref`` when it has one."""
        ...

    def auth(self) -> Auth: ...

    def error_for_response(
        self, repo_id: str, revision: str, response: aiohttp.ClientResponse, body: str
    ) -> ModelpullError | None: ...


@dataclass
class Selection:
    """What a selector chose, and how to say so."""

    files: list[RepoFile]
    #: the file COMPLETE's ``path`` points at (None: the model's folder)
    main: str | None = None
    notes: list[str] = field(default_factory=list)
    #: what was chosen, shown after the repo id in the first message (``Q4_K_M``)
    label: str | None = None
    #: added to the first message (the projector, why this quantization)
    remark: str = ""
    #: for a picker: every quantization the repo offers (GGUF repos), in the plan's JSON
    quantizations: list[QuantizationChoice] = field(default_factory=list)


class FileSelector(Protocol):
    """Which of a repo's files a source fetches."""

    def wanted(self, paths: list[str]) -> list[str]:
        """The files worth describing (sizes, digests) for :meth:`choose`."""
        ...

    def choose(self, repo_id: str, revision: str, files: list[RepoFile]) -> Selection:
        """The files to fetch; raises typed errors when the repo cannot serve this source."""
        ...


class RepoStore(Protocol):
    """Where a repo's files land, and how they are made visible once complete."""

    root: Path
    #: final places are named by content: a file there with the right size is the right file
    content_addressed: bool
    #: a file already at its final place without our record is adopted when its digest matches
    adopts_existing: bool

    def slot(self, path: str, etag: str) -> FileSlot: ...

    def is_current(self, path: str, etag: str, size: int) -> bool:
        """The file at its final place is this very version (so it need not be fetched)."""
        ...

    def destination(self, commit: str) -> Path: ...

    def file_path(self, commit: str, path: str, etag: str) -> Path:
        """Where a published file is found (a snapshot entry, not the blob behind it)."""
        ...

    def publish(self, commit: str, revision: str, files: list[tuple[str, str]]) -> Path:
        """Make every (path, etag) visible; return the model's folder."""
        ...



@runtime_checkable
class SnapshotStore(Protocol):
    """A store that can say what it holds of a revision without the network (offline runs)."""

    def record_tree(self, commit: str, tree: dict[str, dict[str, Any]]) -> None:
        """Keep the repo's full listing at ``commit`` for offline runs."""
        ...

    def local_snapshot(self, revision: str) -> LocalSnapshot | None:
        """What the store holds of ``revision``, without any network call."""
        ...


@runtime_checkable
class FileCommitIndex(Protocol):
    """A store whose index also records the commit that last changed each file.

    The old ModelScope SDK skips a file only when its ``.msc`` entry names that
    file's own commit, so such a store is handed the listing's ``file_commits``.
    """

    def publish(
        self, commit: str, revision: str, files: list[tuple[str, str]], *,
        file_commits: Mapping[str, str] | None = None,
    ) -> Path: ...

    def recorded_commits(self) -> dict[str, str]:
        """The commit the index holds for each file (path -> commit)."""
        ...


@dataclass
class RepoPlanDetail(PlanDetail):
    repo_id: str
    commit: str
    revision: str
    selection: Selection
    tree: dict[str, dict[str, Any]] | None = None
    file_commits: dict[str, str] = field(default_factory=dict)
    #: what file URLs name (the commit, or a branch or tag)
    ref: str = ""


class RepoProvider(Provider):
    """A repo on a Hub-like site: a client, a selector and a store put together."""

    def __init__(
        self,
        source: Source,
        model: str,
        base_url: str | None,
        options: dict[str, Any],
        *,
        repo_id: str,
        revision: str,
        client: RepoClient,
        selector: FileSelector,
        store: RepoStore,
    ) -> None:
        super().__init__(model, client.token, base_url, options)
        self.name = source.name
        self.repo_id = repo_id
        self.revision = revision
        self.client = client
        self.selector = selector
        self.store = store

    # -- plan --------------------------------------------------------------
    async def plan(self) -> Plan:
        listing = await self.client.listing(
            self.session, self.policy, self.repo_id, self.revision, self.selector
        )
        selection = self.selector.choose(self.repo_id, self.revision, listing.files)
        items = []
        for f in selection.files:
            present = self._present(f)
            items.append(PlanItem(f.path, f.size, f.digest, local=present == f.size, present_bytes=present))
        detail = RepoPlanDetail(
            self.repo_id, listing.commit, self.revision, selection, tree=listing.tree,
            file_commits=dict(listing.file_commits), ref=listing.ref or listing.commit,
        )
        await self._adopt_existing(selection.files, items, detail)
        notes = list(selection.notes) + self.copies_note((i.digest, i.size or 0) for i in items if not i.local)
        return Plan(
            self.name, self.repo_id, items,
            str(self.store.destination(listing.commit)), listing.commit,
            notes=notes, quantizations=list(selection.quantizations), detail=detail,
        )

    def _present(self, f: RepoFile) -> int:
        if self.store.is_current(f.path, f.etag, f.size):
            return f.size
        return present_bytes(self._transfer(f, ""))

    def _transfer(self, f: RepoFile, ref: str) -> FileTransfer:
        slot = self.store.slot(f.path, f.etag)
        return FileTransfer(
            url=self.client.file_url(self.repo_id, f.path, ref), dest=slot.final, size=f.size,
            digest=f.digest, key=f.path, partial=slot.partial, lock=slot.lock,
            owner={"provider": self.name, "model": self.model},
            trust_existing=self.store.content_addressed or self.store.is_current(f.path, f.etag, f.size),
            copies=self.copies_elsewhere(f.digest, f.size),
        )

    async def _adopt_existing(
        self, files: list[RepoFile], items: list[PlanItem], detail: RepoPlanDetail
    ) -> None:
        """A file already in place without our record (another tool downloaded it, say)
        counts as local once its digest matches; otherwise it is fetched and replaced."""
        if not self.store.adopts_existing:
            return
        for f, item in zip(files, items):
            final = self.store.slot(f.path, f.etag).final
            if not final.is_file() or final.stat().st_size != f.size:
                continue
            if self.store.is_current(f.path, f.etag, f.size):
                continue
            cancel = threading.Event()
            try:
                same = await asyncio.to_thread(file_has_digest, final, f.digest, f.size, cancel)
            except asyncio.CancelledError:
                cancel.set()
                raise
            if same:
                self._publish(detail, [f])
                item.local, item.present_bytes = True, f.size
            else:  # other content under that name: none of it counts
                item.local, item.present_bytes = False, 0

    # -- what is on disk ------------------------------------------------------
    @property
    def offline(self) -> bool:
        # the site's own convention too (HF_HUB_OFFLINE for the Hub), when it has one
        return super().offline or bool(getattr(self.client, "offline", False))

    async def local_copy(self) -> LocalCopy | None:
        if not isinstance(self.store, SnapshotStore):
            return None
        snapshot = await asyncio.to_thread(self.store.local_snapshot, self.revision)
        if snapshot is None:
            return None
        files = [RepoFile(path, size, etag, _digest_of(etag)) for path, size, etag in snapshot.files]
        wanted = set(self.selector.wanted([f.path for f in files]))
        try:
            selection = self.selector.choose(self.repo_id, self.revision, [f for f in files if f.path in wanted])
        except ModelpullError:
            return None  # what is on disk does not serve this request
        items = []
        for f in selection.files:
            local = self.store.is_current(f.path, f.etag, f.size)
            items.append(PlanItem(f.path, f.size, f.digest, local=local, present_bytes=f.size if local else 0))
        plan = Plan(
            self.name, self.repo_id, items, str(self.store.destination(snapshot.commit)), snapshot.commit,
            notes=list(selection.notes), detail=RepoPlanDetail(self.repo_id, snapshot.commit, self.revision, selection),
        )
        if selection.main is None:
            path = self.store.destination(snapshot.commit)
        else:
            main = next(f for f in selection.files if f.path == selection.main)
            path = self.store.file_path(snapshot.commit, main.path, main.etag)
        return LocalCopy(plan, str(path), snapshot.since, pinned=snapshot.commit == self.revision)

    # -- fetch -------------------------------------------------------------
    async def fetch(self, plan: Plan, tracker: ProgressTracker) -> str:
        detail = plan.detail
        assert isinstance(detail, RepoPlanDetail)
        files = detail.selection.files
        engine = TransferEngine(
            self.session, self.policy, tracker, auth=self.client.auth(),
            error_for_response=lambda response, body: self.client.error_for_response(
                self.repo_id, self.revision, response, body
            ),
        )
        await engine.fetch_all(self._transfer(f, detail.ref or detail.commit) for f in files)
        folder = self._publish(detail, files)
        if detail.tree is not None and isinstance(self.store, SnapshotStore):
            self.store.record_tree(detail.commit, detail.tree)
        main = detail.selection.main
        if main is None:
            return str(folder)
        chosen = next((f for f in files if f.path == main), None)
        if chosen is None:
            raise ModelNotFound(f"{main} is not among the files fetched for {self.repo_id}")
        return str(self.store.file_path(detail.commit, chosen.path, chosen.etag))

    def _publish(self, detail: RepoPlanDetail, files: list[RepoFile]) -> Path:
        pairs = [(f.path, f.etag) for f in files]
        store: object = self.store
        if isinstance(store, FileCommitIndex):
            commits = {f.path: detail.file_commits[f.path] for f in files if f.path in detail.file_commits}
            return store.publish(detail.commit, detail.revision, pairs, file_commits=commits)
        return self.store.publish(detail.commit, detail.revision, pairs)

    def space_needed(self, plan: Plan) -> list[tuple[Path, int]]:
        return [(self.store.root, plan.missing_bytes)]

    # -- messages ----------------------------------------------------------
    def starting_message(self, plan: Plan) -> str:
        detail = plan.detail
        if not isinstance(detail, RepoPlanDetail) or detail.selection.label is None:
            return super().starting_message(plan)
        selection = detail.selection
        return (
            f"Downloading {self.repo_id} {selection.label} from {self.name}: {plan.summary()}"
            + selection.remark
        )


def _digest_of(etag: str) -> str:
    return f"sha256:{etag}" if len(etag) == 64 else f"gitsha1:{etag}"
