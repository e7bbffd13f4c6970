"""Transfer policy: every limit of the engine, and the one retry decision, in one place.

Every request modelpull makes to a source asks the policy the same two
questions when it fails: is another attempt worth it, and how long to wait
first. The shape is Ollama's (``server/download.go``): cancellation or a full
disk stops at once, an attempt that moved bytes before it failed is not held
against the source, anything else backs off exponentially (or waits what the
server's ``Retry-After`` asked, up to a cap).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from .._lazy import lazy
from ..errors import (
    ConnectionFailed,
    DiskFull,
    IncompleteTransfer,
    InvalidOption,
    ServerError,
    TransferTimeout,
)
from .limit import RateLimit, parse_rate

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")

log = logging.getLogger("modelpull.transfer")

MB = 1000 * 1000
T = TypeVar("T")

#: typed errors that describe a failed attempt, not an answer: another attempt may succeed
_TRANSIENT = (ConnectionFailed, ServerError, TransferTimeout, IncompleteTransfer)
#: waits between attempts vary by this fraction either way, so parallel parts do not retry in step
_JITTER = 0.25


@dataclass(frozen=True)
class Retry:
    """The policy's answer to a failed attempt: wait ``delay`` seconds, then try again."""

    #: failed attempts that count against the limit, this one included
    failures: int
    delay: float


@dataclass(frozen=True)
class TransferPolicy:
    """How files are split, retried and timed out.

    A file is cut into parts of ``size / max_parts`` bytes, clamped to
    ``[min_part_size, max_part_size]``; each part is a ranged request of its own.
    At most ``max_connections`` parts of one file are fetched at once, in file
    order, so the file fills from the front and is hashed while it downloads.
    """

    name: str = "ollama"
    max_parts: int = 16
    min_part_size: int = 100 * MB
    max_part_size: int = 1000 * MB
    #: parts of one file fetched at the same time
    max_connections: int = 16
    #: bytes/s above which one connection counts as fast: no more are opened while
    #: each is that fast. None opens ``max_connections`` at once (as Ollama does).
    fast_connection: float | None = None
    #: files fetched at the same time within one download
    max_parallel_files: int = 8
    #: attempts of one part that make no progress before the file fails
    max_retries: int = 6
    #: attempts at a metadata request (manifest, file list) before it fails; with the
    #: backoff below an unreachable server fails within a few seconds
    request_attempts: int = 3
    #: a connection silent this long is a stall: it is dropped and retried
    stall_timeout: float = 30.0
    connect_timeout: float = 30.0
    #: the wait after the first failure; it doubles with every failure in a row
    backoff_initial: float = 0.5
    #: the longest wait between two attempts
    backoff_max: float = 15.0
    #: the longest ``Retry-After`` we honour; a longer one is waited this long
    retry_after_max: float = 120.0
    #: how often part state is written beside the partial file
    state_interval: float = 0.5
    #: once every part is taken, the rest of a part whose connection is far slower than
    #: its peers (or silent) is split and given to an idle connection (``scheduler``)
    split_tail: bool = True
    #: bytes/s the whole download may use, over all its connections and files (None: no cap)
    max_speed: float | None = None
    #: part bodies over the engine's lean HTTP/1.1 client (``wire``) when it can serve the
    #: URL; False: always aiohttp
    lean_client: bool = True
    #: a cap shared with other downloads (a service's), on top of ``max_speed``
    limit: RateLimit | None = field(default=None, compare=False, repr=False)

    def rate_limit(self) -> RateLimit | None:
        """The cap one download's connections are paced by: its own, within the shared one."""
        if self.max_speed:
            return RateLimit(self.max_speed, parent=self.limit)
        return self.limit

    def part_size(self, size: int) -> int:
        part = size // max(1, self.max_parts)
        return max(self.min_part_size, min(self.max_part_size, part), 1)

    def split(self, size: int) -> list[tuple[int, int]]:
        """Byte ranges ``[start, end)`` covering ``size`` bytes."""
        if size <= 0:
            return [(0, 0)]
        step = self.part_size(size)
        ranges = [(start, min(size, start + step)) for start in range(0, size, step)]
        if len(ranges) > self.max_parts:  # clamp: fold the tail into the last part
            ranges = ranges[: self.max_parts - 1] + [(ranges[self.max_parts - 1][0], size)]
        return ranges

    # -- retries: the one decision ----------------------------------------
    def retryable_status(self, status: int) -> bool:
        """429 and 5xx: the server is overloaded or failing for now. Anything else is its answer."""
        return status == 429 or status >= 500

    def retryable(self, error: BaseException) -> bool:
        """Is another attempt worth making after ``error``?

        Cancellation and a full disk stop at once; so does a TLS failure (a
        certificate or a protocol mismatch does not heal) and any typed error
        that is an answer (not found, refused, corrupt) or that running again
        cannot fix (``resumable`` False). A broken, refused or silent
        connection, a cut body, and an overloaded server are worth another
        attempt.
        """
        if isinstance(error, (asyncio.CancelledError, DiskFull)):
            return False
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return False
        if isinstance(error, aiohttp.ClientSSLError):
            return False
        if isinstance(error, aiohttp.ClientResponseError):
            return self.retryable_status(error.status)
        if isinstance(error, (aiohttp.ClientError, asyncio.TimeoutError)):
            return True
        if isinstance(error, _TRANSIENT):
            return error.resumable
        return False

    def backoff(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failed attempts in a row.

        The server's ``Retry-After`` when it sent one (at most
        ``retry_after_max``), else ``backoff_initial * 2**(failures - 1)`` up to
        ``backoff_max``, give or take a quarter.
        """
        if retry_after is not None:
            return max(0.0, min(retry_after, self.retry_after_max))
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** max(0, failures - 1))
        return delay * (1 - _JITTER + 2 * _JITTER * random.random())

    def retry(
        self,
        error: BaseException,
        failures: int,
        *,
        progressed: bool = False,
        retry_after: float | None = None,
        retries: int | None = None,
    ) -> Retry | None:
        """After an attempt failed with ``error``: try again (how, when), or None to give up.

        ``failures`` is the count so far (0 before the first failure);
        ``progressed`` says the attempt moved bytes before it failed (it
        stalled, or its connection broke mid-body): that is not held against
        the source, the count starts over with this attempt. More than
        ``retries`` failures in a row (default ``max_retries``) give up.
        """
        if not self.retryable(error):
            return None
        failures = 1 if progressed else failures + 1
        if failures > (self.max_retries if retries is None else retries):
            return None
        return Retry(failures, self.backoff(failures, retry_after))


async def retry_request(
    policy: TransferPolicy, call: Callable[[], Awaitable[T]], *, what: str = "request"
) -> T:
    """``await call()``, again while it fails in a way the policy deems worth retrying.

    For metadata requests (a manifest, a file list): up to
    ``policy.request_attempts`` attempts with the policy's backoff, or the
    ``retry_after`` (seconds) an error carries. The last error is raised as it
    came.
    """
    failures = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            retry = policy.retry(
                exc, failures, retry_after=_retry_after_of(exc),
                retries=policy.request_attempts - 1,
            )
            if retry is None:
                raise
            failures = retry.failures
            log.info("retrying the %s in %.1fs: %s", what, retry.delay, getattr(exc, "message", exc))
            await asyncio.sleep(retry.delay)


def _retry_after_of(error: BaseException) -> float | None:
    value = getattr(error, "retry_after", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


#: Ollama's own policy (server/download.go): up to 16 parts of 100 MB to 1 GB.
OLLAMA = TransferPolicy()
#: One connection per file, for servers that dislike parallel ranges.
SINGLE = TransferPolicy(
    name="single", max_parts=1, min_part_size=1, max_part_size=1 << 62, split_tail=False
)

#: Up to Ollama's 16 connections, but over smaller parts taken in file order (the
#: file fills from the front, so it is hashed while it downloads, and a
#: connection that finishes early takes the next part instead of idling), and
#: only as many connections as help: one fast connection stays alone.
DEFAULT = replace(
    OLLAMA, name="default", max_parts=64, min_part_size=8 * MB, max_part_size=4000 * MB,
    fast_connection=150 * MB,
)

POLICIES: dict[str, TransferPolicy] = {
    "ollama": OLLAMA,
    "default": DEFAULT,
    "single": SINGLE,
}

_TUNABLE: dict[str, Callable[[Any], Any]] = {
    "max_parts": int,
    "part_size": int,
    "max_connections": int,
    "max_parallel_files": int,
    "max_retries": int,
    "request_attempts": int,
    "stall_timeout": float,
    "connect_timeout": float,
    "backoff_initial": float,
    "backoff_max": float,
    "max_speed": parse_rate,
}


#: the settings :func:`resolve_policy` takes besides the policy's name
POLICY_SETTINGS = frozenset(_TUNABLE)


def resolve_policy(value: Any = None, **overrides: Any) -> TransferPolicy:
    """A policy from a name or a :class:`TransferPolicy`, with optional overrides.

    ``part_size`` fixes the part size (both clamps).
    """
    if value is None:
        policy = POLICIES["default"]
    elif isinstance(value, TransferPolicy):
        policy = value
    elif isinstance(value, str) and value in POLICIES:
        policy = POLICIES[value]
    else:
        raise InvalidOption(
            f"unknown transfer policy {value!r}; use one of {', '.join(sorted(POLICIES))} "
            "or a modelpull.TransferPolicy"
        )
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        if raw is None:
            continue
        kind = _TUNABLE.get(key)
        if kind is None:
            raise InvalidOption(f"unknown transfer setting {key!r}")
        if kind is parse_rate:
            changes[key] = parse_rate(raw)
            continue
        try:
            number = kind(raw)
        except (TypeError, ValueError):
            raise InvalidOption(f"{key} must be a number, got {raw!r}") from None
        if number <= 0:
            raise InvalidOption(f"{key} must be positive, got {raw!r}")
        if key == "part_size":
            changes["min_part_size"] = changes["max_part_size"] = int(number)
        else:
            changes[key] = number
    if not changes:
        return policy
    resolved = replace(policy, **changes)
    if resolved.backoff_initial > resolved.backoff_max:
        raise InvalidOption(
            f"backoff_initial ({resolved.backoff_initial:g}) must not exceed backoff_max "
            f"({resolved.backoff_max:g})"
        )
    return resolved
