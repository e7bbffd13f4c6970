"""Transfer policy: every limit of the engine, named in one place."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import InvalidOption

MB = 1000 * 1000


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
    #: a connection silent this long is a stall: it is dropped and retried
    stall_timeout: float = 30.0
    connect_timeout: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 15.0
    #: the longest ``Retry-After`` we honour before giving up on the server
    retry_after_max: float = 120.0
    #: how often part state is written beside the partial file
    state_interval: float = 0.5

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


#: Ollama's own policy (server/download.go): up to 16 parts of 100 MB to 1 GB.
OLLAMA = TransferPolicy()
#: One connection per file, for servers that dislike parallel ranges.
SINGLE = TransferPolicy(name="single", max_parts=1, min_part_size=1, max_part_size=1 << 62)

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

_TUNABLE = {
    "max_parts": int,
    "part_size": int,
    "max_connections": int,
    "max_parallel_files": int,
    "max_retries": int,
    "stall_timeout": float,
    "connect_timeout": float,
}


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
    return replace(policy, **changes) if changes else policy
