"""``push``: any model modelpull can pull, published to a registry or an OCI layout.

The pull flow in reverse (docs ARCHITECTURE.md): the source's store → the
model's files (pulled first when something is missing) → an artifact in the
format asked for (:mod:`.artifact`) → the destination's blobs (skipped when
there, mounted from another repository, uploaded in resumable chunks) → the
manifest, last. Same events, same contract as :func:`modelpull.download_model`:
one total fixed before the first byte (the bytes still to pull, then every
blob of the artifact; what the destination holds already counts from the
start), never backwards, at least one ``VERIFYING`` (the destination is asked
whether it serves the manifest just pushed) and exactly one terminal event.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._data import data_dir
from .._format import format_bytes
from .._oci.layout import LayoutReference
from .._oci.push import DEFAULT_CHUNK
from .._secrets import Secret, as_secret, redact
from .._transfer import RateLimit, new_session, resolve_policy
from ..api import make_provider
from ..errors import IncompatibleModel, InvalidOption, ModelpullError, OfflineUnavailable
from ..plan import Plan
from ..progress import DownloadProgress, DownloadStatus, ProgressReporter, ProgressTracker
from ..providers import SOURCES, Provider
from ..providers._source import TRANSFER_OPTIONS
from ..providers.base import bool_option, check_free_space
from .artifact import ArtifactFile, BuiltArtifact, Format, build_artifact, placeholder_digest
from .destinations import (
    Blob,
    Destination,
    LayoutDestination,
    RegistryDestination,
    check_destination_options,
    default_layout_name,
    parse_destination,
)
from .sources import (
    LocalModel,
    SourceFile,
    check_readable,
    fetched_files,
    local_model,
    planned_files,
)

__all__ = ["PUSH_FORMAT", "PUSH_OPTIONS", "PUSH_TO", "check_job", "check_push", "job_events", "push"]

log = logging.getLogger("modelpull.push")

_STOP_GRACE = 2.5
_TICK = 0.1
_TRANSFER = frozenset(option.name for option in TRANSFER_OPTIONS)
#: the options of a push itself (everything else goes to the source)
PUSH_OPTIONS: dict[str, str] = {
    "insecure": "allow plain http to the destination registry",
    "chunk_size": "the largest chunk one upload request carries, in bytes (default 512 MiB)",
    "created": "the creation time written into the config (RFC 3339; default: the source's own, else the Unix epoch)",
    "state_dir": "where unfinished uploads are recorded (default: modelpull's data folder)",
    "mount_from": "repositories of the destination registry to mount blobs from (a name or a list)",
    "source_options": "options for the source only (a dict), e.g. {'insecure': True}",
    "source_insecure": "allow plain http to the source registry (oci, ollama-registry)",
    "dry_run": "plan only: what would be pulled and pushed, and what the destination has",
}
#: sources whose models push cannot take, and what to do instead
_NOT_PUSHED = {
    "ollama": "an Ollama server keeps its models to itself; push from its store instead: ollama-registry with "
              "models_dir= the server's models folder (OLLAMA_MODELS)",
    "url": "a single file from a URL is not a model artifact modelpull can describe; put it in a folder and "
           "pull it from a Hub-like source, or push the model it belongs to",
}
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")


@dataclass
class _Request:
    """A push request, checked offline."""

    provider: str
    model: str
    fmt: Format
    destination: str
    kind: str
    target: Any
    credential: Secret | None
    source_token: Secret | None
    base_url: str | None
    source_options: dict[str, Any]
    insecure: bool
    chunk_size: int
    created: str | None
    state_dir: Path
    mount_from: list[str]
    dry_run: bool
    transfer: dict[str, Any] = field(default_factory=dict)


def _request(
    provider: object, model: object, destination: object, fmt: object, token: Any, source_token: Any,
    base_url: object, options: dict[str, Any],
) -> _Request:
    source = SOURCES.get(provider)
    if source.name in _NOT_PUSHED:
        raise IncompatibleModel(_NOT_PUSHED[source.name])
    if fmt not in ("modelpack", "docker", Format.MODELPACK, Format.DOCKER):
        raise InvalidOption(f"format must be 'modelpack' or 'docker', got {str(fmt)[:40]!r}")
    kind, target = parse_destination(destination)
    options = dict(options)
    explicit = options.pop("source_options", None) or {}
    if not isinstance(explicit, dict):
        raise InvalidOption("source_options must be a dict of the source's options")
    own = {key: options.pop(key) for key in list(options) if key in PUSH_OPTIONS}
    transfer = {key: value for key, value in options.items() if key in _TRANSFER}
    unknown = sorted(set(options) - source.option_names)
    if unknown:
        accepted = sorted((source.option_names | set(PUSH_OPTIONS)) - {"offline"} | {"offline"})
        raise InvalidOption(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for a push from "
            f"{source.name!r}; accepted: {', '.join(accepted)}"
        )
    source_options = {**options, **explicit}
    if "source_insecure" in own:
        source_options["insecure"] = own["source_insecure"]
    source_options.pop("dry_run", None)
    try:
        credential, source_secret = as_secret(token), as_secret(source_token)
    except TypeError:
        raise InvalidOption("token must be a string") from None
    insecure = check_destination_options(own.get("insecure", False))
    chunk = own.get("chunk_size", DEFAULT_CHUNK)
    try:
        chunk_size = int(chunk)
    except (TypeError, ValueError):
        raise InvalidOption(f"chunk_size must be a number of bytes, got {chunk!r}") from None
    if chunk_size < 1:
        raise InvalidOption(f"chunk_size must be positive, got {chunk!r}")
    created = own.get("created")
    if created is not None and (not isinstance(created, str) or not _RFC3339.fullmatch(created)):
        raise InvalidOption(f"created must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got {created!r}")
    state_dir = own.get("state_dir")
    if state_dir is not None and (not isinstance(state_dir, (str, os.PathLike)) or not str(state_dir)):
        raise InvalidOption(f"state_dir must be a folder path, got {state_dir!r}")
    mounts = own.get("mount_from") or []
    mounts = [mounts] if isinstance(mounts, str) else mounts
    if not isinstance(mounts, list) or not all(isinstance(m, str) for m in mounts):
        raise InvalidOption("mount_from must be a repository name or a list of them")
    return _Request(
        provider=source.name, model=model if isinstance(model, str) else "", fmt=Format(fmt),
        destination=str(destination), kind=kind, target=target, credential=credential,
        source_token=source_secret, base_url=base_url if isinstance(base_url, str) and base_url else None,
        source_options=source_options, insecure=insecure, chunk_size=chunk_size, created=created,
        state_dir=Path(state_dir).expanduser() if state_dir else _default_state_dir(), mount_from=list(mounts),
        dry_run=bool_option(own, "dry_run"), transfer=transfer,
    )


def _default_state_dir() -> Path:
    return data_dir("push")


def check_push(
    provider: object, model: object, destination: object, *, format: object = "modelpack", token: Any = None,
    source_token: Any = None, base_url: object = None, **options: Any,
) -> str:
    """Check a push request offline (what :func:`push` refuses at once); returns the source's name."""
    request = _request(provider, model, destination, format, token, source_token, base_url, options)
    make_provider(request.provider, request.model, request.source_token, request.base_url, **request.source_options)
    return request.provider


async def push(
    provider: str,
    model: str,
    destination: str,
    *,
    format: str = "modelpack",
    token: str | None = None,
    source_token: str | None = None,
    base_url: str | None = None,
    **options: Any,
) -> AsyncIterator[DownloadProgress]:
    """Publish a model to a registry or an OCI layout, yielding :class:`DownloadProgress` events.

    ``provider``/``model`` name the model as for :func:`modelpull.download_model`
    (its files are taken from that source's store; what is missing is pulled
    first, with ``source_token``/``base_url`` and the source's options).
    ``destination`` is ``oci://registry[:port]/namespace/name[:tag]`` (``token``:
    its credential, a token or ``user:password``; plain http only with
    ``insecure=True``) or ``oci-layout:PATH[:NAME]`` (a folder, or a ``.tar``).
    ``format`` is ``"modelpack"`` (CNCF ModelPack) or ``"docker"`` (Docker
    Model Runner, config v0.2). ``COMPLETE``'s ``path`` is the reference to
    pull the model by (``registry/namespace/name:tag`` or ``oci-layout:PATH:NAME``).

    Leaving the loop stops the push; the next call resumes (blobs there are
    skipped, an interrupted upload continues from the registry's offset).
    Errors never raise: one ``ERROR`` event with a stable ``error_code``, and
    the tag is written only after every blob is in place.
    """
    secrets: list[Secret | None] = [Secret(t) for t in (token, source_token) if isinstance(t, str) and t]
    reporter = ProgressReporter(ProgressTracker())
    started = False
    prov: Provider | None = None
    dest: Destination | None = None
    session = None
    try:
        request = _request(provider, model, destination, format, token, source_token, base_url, options)
        prov = make_provider(request.provider, request.model, request.source_token, request.base_url,
                             **request.source_options)
        secrets.extend(prov.secrets)
        shared = request.transfer.get("max_speed")
        shared = shared if isinstance(shared, RateLimit) else None
        policy = resolve_policy(request.transfer.get("policy"), **{
            k: v for k, v in request.transfer.items() if k != "policy" and not (k == "max_speed" and shared)
        })
        if shared is not None:
            policy = replace(policy, limit=shared)
        session = new_session(policy)
        dest = _destination(request, prov, session, policy)
        run = _Push(request, prov, dest)
        tracker = await run.prepare()
        reporter = ProgressReporter(tracker)
        started = True
        yield _scrub(reporter.event(DownloadStatus.STARTING, run.starting_message(), force=True), secrets)
        if request.dry_run:
            done = reporter.complete(f"Dry run, nothing pushed. {run.summary()}", dest.label)
            done.downloaded_bytes = tracker.done
            yield _scrub(done, secrets)
            return
        work = asyncio.ensure_future(run.execute())
        verifying_shown = False
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=_TICK)
                if work.done():
                    break
                if run.verifying:
                    event = reporter.event(DownloadStatus.VERIFYING, run.verifying, force=not verifying_shown)
                    verifying_shown = True
                else:
                    event = reporter.event(DownloadStatus.DOWNLOADING, run.progress_message())
                if event is not None:
                    yield _scrub(event, secrets)
            reference = work.result()
        finally:
            if not work.done():
                work.cancel()
                await asyncio.wait({work}, timeout=_STOP_GRACE)
            elif not work.cancelled():
                work.exception()
        run.fill(tracker)
        if not verifying_shown:
            yield _scrub(reporter.event(DownloadStatus.VERIFYING, run.checked_message(), force=True), secrets)
        yield _scrub(reporter.complete(run.done_message(reference), reference), secrets)
    except ModelpullError as exc:
        if not started:
            yield _scrub(reporter.event(DownloadStatus.STARTING, f"Starting push of {model!s:.100}", force=True),
                         secrets)
        message = exc.message
        if exc.resumable and "again" not in message:
            message += "; run the push again to resume from what is already there"
        yield _scrub(reporter.error(exc.code, message), secrets)
    except Exception as exc:  # noqa: BLE001 - the edge: one ERROR event, never a raise
        log.error("unexpected failure pushing %s: %s", type(exc).__name__, redact(str(exc), secrets))
        if not started:
            yield _scrub(reporter.event(DownloadStatus.STARTING, "Starting push", force=True), secrets)
        yield _scrub(reporter.error("internal_error", f"unexpected error ({type(exc).__name__}): {exc}"), secrets)
    finally:
        if dest is not None:
            await dest.close()
        if prov is not None:
            await prov.close()
        if session is not None:
            await session.close()


#: a service job is a push when its options name a destination under this key (and its format under the next):
#: the journal keeps them with the rest of the request, so a push job comes back like a download job
PUSH_TO = "push_to"
PUSH_FORMAT = "push_format"


def job_events(
    provider: str, model: str, token: str | None, base_url: str | None, options: dict[str, Any]
) -> AsyncIterator[DownloadProgress]:
    """The events of a service job whose options carry :data:`PUSH_TO` (``token``: the destination's)."""
    options = dict(options)
    destination = options.pop(PUSH_TO)
    fmt = options.pop(PUSH_FORMAT, "modelpack")
    return push(provider, model, destination, format=fmt, token=token, base_url=base_url, **options)


def check_job(provider: str, model: str, token: Any = None, base_url: object = None, **options: Any) -> str:
    """:func:`check_push` for a service job's request (see :func:`job_events`)."""
    destination = options.pop(PUSH_TO, None)
    fmt = options.pop(PUSH_FORMAT, "modelpack")
    return check_push(provider, model, destination, format=fmt, token=token, base_url=base_url, **options)


def _destination(request: _Request, prov: Provider, session: Any, policy: Any) -> Destination:
    if request.kind == "layout":
        assert isinstance(request.target, LayoutReference)
        return LayoutDestination(request.target, default_layout_name(request.provider, request.model))
    host, repository, tag = request.target
    return RegistryDestination(
        host, repository, tag, session=session, policy=policy, credential=request.credential,
        insecure=request.insecure, state_dir=request.state_dir, chunk_size=request.chunk_size,
        mount_from=request.mount_from, max_parallel=min(8, policy.max_parallel_files),
    )


class _Push:
    """One push: what is where, then the work, and the sentences about it."""

    def __init__(self, request: _Request, prov: Provider, dest: Destination) -> None:
        self.request = request
        self.prov = prov
        self.dest = dest
        self.local: LocalModel | None = None
        self.pull_plan: Plan | None = None
        self.draft: BuiltArtifact | None = None
        self.tracker = ProgressTracker()
        self.keys: dict[str, str] = {}  # digest (or placeholder) -> progress key
        self.sizes: dict[str, int] = {}  # progress key -> declared size
        self.present: dict[str, int] = {}
        self.phase = "push"
        self.current: str | None = None
        self.verifying: str | None = None
        self.artifact: BuiltArtifact | None = None

    # -- before the first byte ------------------------------------------------
    async def prepare(self) -> ProgressTracker:
        prov = self.prov
        self.local = await local_model(prov)
        if self.local is None:
            if prov.offline:
                raise OfflineUnavailable(
                    f"offline mode is on, and {prov.model} is not complete in the {prov.name} store; pull it once "
                    "without offline mode"
                )
            self.pull_plan = await prov.plan()
            files = planned_files(prov, self.pull_plan)
            info = _info_from_plan(self.pull_plan)
        else:
            files = self.local.files = await _hash_small(self.local.files)
            info = self.local.info
            origin = self.local.origin
            if isinstance(self.dest, RegistryDestination) and origin and origin[0] == self.dest.host:
                self.dest.mount_from.append(origin[1])  # its blobs are in that repository already
        if self.request.created:
            info.created = self.request.created
        self.info = info
        self.draft = build_artifact([_draft_file(f) for f in files], info, self.request.fmt)
        blobs = self._blobs(self.draft)
        self.present = await self.dest.present([b for b in blobs if not _is_placeholder(b, self.draft)])
        pull_items = [item for item in (self.pull_plan.items if self.pull_plan else []) if not item.local]
        total = sum(item.size or 0 for item in pull_items) + self.draft.total_size
        tracker = ProgressTracker(total)
        for item in pull_items:
            tracker.declare(item.name, item.size, item.present_bytes)
        for blob in blobs:
            tracker.declare(blob.key, blob.size, self.present.get(blob.digest, 0))
            self.sizes[blob.key] = blob.size
        self.tracker = tracker
        return tracker

    def _blobs(self, artifact: BuiltArtifact) -> list[Blob]:
        """Every blob once (the config last), each under its progress key."""
        blobs: dict[str, Blob] = {}
        for descriptor, f in artifact.layers:
            if descriptor["digest"] not in blobs:
                blobs[descriptor["digest"]] = Blob(descriptor["digest"], descriptor["size"],
                                                   f"upload {f.path.as_posix()}", path=f.disk)
        blobs[artifact.config_digest] = Blob(artifact.config_digest, len(artifact.config), "upload config",
                                             data=artifact.config)
        return list(blobs.values())

    # -- the work -----------------------------------------------------------------
    async def execute(self) -> str:
        prov = self.prov
        local = self.local
        if local is None:
            assert self.pull_plan is not None
            self.phase = "pull"
            check_free_space(prov.space_needed(self.pull_plan))
            path = await prov.fetch(self.pull_plan, self.tracker)
            local = await fetched_files(prov, self.pull_plan, path)
            # what the pulled model says of itself (its config's time, quantization) as when it was local
            self.info = local.info
            if self.request.created:
                self.info.created = self.request.created
            for item in self.pull_plan.items:
                if not item.local:
                    self.tracker.update(item.name, item.size or 0)
        check_readable(local.files)
        self.phase = "hash"
        files = []
        for f in local.files:
            digest = f.digest
            if digest is None:
                self.current = f.path.as_posix()
                assert f.disk is not None
                digest = await _sha256_file(f.disk)
            assert f.disk is not None
            files.append(ArtifactFile(f.path, f.disk, f.size, digest, f.kind))
        artifact = build_artifact(files, self.info, self.request.fmt)
        self.artifact = artifact
        blobs = self._blobs(artifact)
        for blob in blobs:
            if blob.key not in self.sizes:
                self.tracker.declare(blob.key, blob.size, 0)
                self.sizes[blob.key] = blob.size
        unknown = [b for b in blobs if b.digest not in self.present]
        if unknown:
            found = await self.dest.present(unknown)
            for blob in unknown:
                self.tracker.update(blob.key, found.get(blob.digest, 0))
        self._check_space(blobs)
        self.phase = "push"
        self.current = None

        def progress(blob: Blob, count: int) -> None:
            self.current = blob.key
            self.tracker.update(blob.key, min(count, self.sizes.get(blob.key, blob.size)))

        layers = [b for b in blobs if b.data is None]
        config = [b for b in blobs if b.data is not None]
        await self.dest.send(layers, progress)
        await self.dest.send(config, progress)
        reference = await self.dest.name(artifact, blobs, progress)
        self.fill(self.tracker)
        self.verifying = self.checking_message()
        await self.dest.check(artifact)
        return reference

    def _check_space(self, blobs: list[Blob]) -> None:
        if not isinstance(self.dest, LayoutDestination):
            return
        missing = sum(b.size for b in blobs if not self.dest.writer.has_blob(b.digest, b.size))
        folder = self.dest.where.path if not self.dest.writer.tar else self.dest.where.path.parent
        check_free_space([(folder, missing)])

    def fill(self, tracker: ProgressTracker) -> None:
        """Every declared key whole (what was pushed or found there; a guessed size included)."""
        for key, size in self.sizes.items():
            tracker.update(key, size)
        if self.pull_plan is not None:
            for item in self.pull_plan.items:
                if not item.local:
                    tracker.update(item.name, item.size or 0)

    # -- sentences ------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.prov.model

    def summary(self) -> str:
        assert self.draft is not None
        count = len({d["digest"] for d, _ in self.draft.layers})
        there = sum(self.present.values())
        text = f"{count} layer{'s' if count != 1 else ''} and a config, {format_bytes(self.draft.total_size)}"
        if there:
            text += f" ({format_bytes(there)} already at the destination)"
        if self.pull_plan is not None:
            missing = self.pull_plan.missing_bytes
            text += f"; pulled first from {self.prov.name}: {format_bytes(missing)}"
        return f"{text}; format {self.request.fmt.value}"

    def starting_message(self) -> str:
        return f"Pushing {self.model} to {self.dest.label}: {self.summary()}"

    def progress_message(self) -> str:
        if self.phase == "pull":
            what = self.tracker.current
            return f"Pulling {self.model} from {self.prov.name} first" + (f": {what}" if what else "")
        if self.phase == "hash":
            return f"Computing the sha256 of {self.current or 'the files'}"
        return f"Pushing {self.model} to {self.dest.label}" + (f": {self.current}" if self.current else "")

    def checking_message(self) -> str:
        return f"Checking that {self.dest.label} serves the manifest just pushed"

    def checked_message(self) -> str:
        assert self.artifact is not None
        return f"{self.dest.label} serves the manifest {self.artifact.manifest_digest}"

    def done_message(self, reference: str) -> str:
        assert self.artifact is not None
        notes = "; ".join(self.dest.notes[:3])
        text = (f"Pushed {self.model} to {self.dest.label} as {self.request.fmt.value} "
                f"(manifest {self.artifact.manifest_digest}); pull it with: modelpull pull oci {reference}")
        return text + (f". Note: {notes}" if notes else "")


def _info_from_plan(plan: Plan) -> Any:
    from ..providers._repo import RepoPlanDetail
    from ..providers.oci import OciPlanDetail
    from .artifact import ModelInfo

    detail = plan.detail
    info = ModelInfo(name=plan.model, revision=plan.revision)
    if isinstance(detail, RepoPlanDetail):
        info.quantization = detail.selection.label
        info.revision = detail.commit
    elif isinstance(detail, OciPlanDetail) and detail.artifact is not None:
        info.format = detail.artifact.model_format
    return info


def _draft_file(f: SourceFile) -> ArtifactFile:
    return ArtifactFile(f.path, f.disk or Path("."), f.size, f.digest or placeholder_digest(f.path), f.kind)


def _is_placeholder(blob: Blob, draft: BuiltArtifact) -> bool:
    for descriptor, f in draft.layers:
        if descriptor["digest"] == blob.digest:
            return blob.digest == placeholder_digest(f.path)
    return False


#: files without a known sha256 up to this size in all are hashed before the first event, so the
#: first event already counts them when the destination has them
_HASH_FIRST = 256 << 20


async def _hash_small(files: list[SourceFile]) -> list[SourceFile]:
    unknown = [f for f in files if f.digest is None and f.disk is not None]
    if sum(f.size for f in unknown) > _HASH_FIRST:
        return files
    hashed = []
    for f in files:
        if f.digest is None and f.disk is not None:
            f = SourceFile(f.path, f.disk, f.size, await _sha256_file(f.disk), f.kind)
        hashed.append(f)
    return hashed


async def _sha256_file(path: Path) -> str:
    cancel = threading.Event()

    def digest() -> str:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(4 << 20):
                if cancel.is_set():
                    raise InterruptedError("cancelled")
                hasher.update(block)
        return "sha256:" + hasher.hexdigest()

    try:
        return await asyncio.to_thread(digest)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _scrub(event: DownloadProgress | None, secrets: Sequence[Secret | None]) -> DownloadProgress:
    assert event is not None
    event.message = redact(event.message, list(secrets))
    if event.path:
        event.path = redact(event.path, list(secrets))
    if event.current:
        event.current = redact(event.current, list(secrets))
    return event

