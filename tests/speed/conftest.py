"""Fixtures of the speed-feature tests: the slow tail, the bandwidth cap, one copy on disk.

These tests check behaviour, never speed: who fetched which bytes (counted at
the fault proxy or the Hub front), what was written where (``strace``), what
rate came out over a few seconds (with generous bounds), which files share an
inode. Timings belong to ``bench/``.

* ``registry`` (module): Debian's docker-registry on loopback.
* ``make_proxy(upstream)``: a started :class:`FaultProxy`, stopped after the test.
* ``collect(provider, model, **options)``: every event of one download, checked
  against the progress contract (one terminal event, nothing going backwards,
  the total never growing past the plan's).
* ``traced_writes(provider, model, **options)``: the download in a child Python
  under ``strace``; returns every ``pwrite``/``pwritev`` as (file, offset, length).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelpull import DownloadProgress, DownloadStatus, download_model
from tests.servers.fault_proxy import FaultProxy
from tests.servers.registry import DockerRegistry
from tests.servers.strace import strace_download


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def make_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def check_contract(events: list[DownloadProgress]) -> None:
    assert events and events[0].status is DownloadStatus.STARTING, events[:1]
    assert sum(e.is_terminal for e in events) == 1 and events[-1].is_terminal
    done = [e.downloaded_bytes or 0 for e in events]
    assert done == sorted(done), f"downloaded_bytes went backwards: {done}"
    totals = {e.total_bytes for e in events[1:] if e.total_bytes is not None}
    # bytes counted twice would push the total past the plan's
    assert len(totals) <= 1, f"the total changed during the download: {sorted(totals)}"


async def collect(provider: str, model: str, **options: Any) -> list[DownloadProgress]:
    events = [event async for event in download_model(provider, model, **options)]
    check_contract(events)
    return events


_WRITE = re.compile(r"^(?:pwrite64|pwritev)\(\d+<(?P<path>[^>]*)>, .*, (?P<offset>\d+)\)\s+=\s+(?P<n>\d+)$")
_WRITE2 = re.compile(r"^pwritev2\(\d+<(?P<path>[^>]*)>, .*, (?P<offset>\d+), \d+\)\s+=\s+(?P<n>\d+)$")


def traced_writes(provider: str, model: str, **options: Any) -> tuple[list[tuple[str, int, int]], dict[str, Any]]:
    """Run one download under strace; (every write as (path, offset, length), the last event)."""
    trace, last = strace_download("pwrite64,pwritev,pwritev2", provider, model, string_size=0, **options)
    return parse_writes(trace), last


def parse_writes(trace: str) -> list[tuple[str, int, int]]:
    writes: list[tuple[str, int, int]] = []
    pending: dict[str, str] = {}
    for line in trace.splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        if rest.startswith("<... ") and " resumed>" in rest:
            rest = pending.pop(pid, "") + rest.split(" resumed>", 1)[1]
        match = _WRITE.match(rest) or _WRITE2.match(rest)
        if match:
            writes.append((match.group("path"), int(match.group("offset")), int(match.group("n"))))
    return writes


def written_once(writes: list[tuple[str, int, int]], path_part: str, size: int) -> None:
    """The writes to the file whose path contains ``path_part`` cover [0, size) exactly once."""
    spans = sorted((offset, offset + length) for path, offset, length in writes if path_part in path)
    assert spans, f"no write to {path_part} was seen"
    covered = 0
    for start, end in spans:
        assert start == covered, f"bytes {min(start, covered)}-{max(start, covered)} written twice or never"
        covered = end
    assert covered == size, (covered, size)
