"""Cases 1-5: cut connections, stalls, flipped bytes, 503/429 with Retry-After, retries exhausted.

Each runs for the providers whose bytes go through modelpull's transfer engine
(``huggingface`` via olah, ``ollama-registry`` via docker-registry) with the
fault proxy between modelpull and the server, and for ``ollama`` (the Ollama
server moves the bytes; modelpull follows its stream) where the case applies.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import pytest

from modelpull import POLICIES, DownloadStatus

from .conftest import BIG, FAST, MB, Figures, OllamaSource, Source

COMPLETE, ERROR = DownloadStatus.COMPLETE, DownloadStatus.ERROR


# ------------------------------------------------------------------ 1. cuts
async def test_1_three_cuts_in_one_file_complete_with_the_right_digest(source: Source, figures: Figures) -> None:
    source.proxy.cut_after(BIG // 5, path=source.big_path, times=3)

    events = await source.pull(**FAST)

    assert events[-1].status is COMPLETE, events[-1].message
    cuts = source.proxy.faults_fired("cut")
    assert len(cuts) == 3, cuts
    source.verify()
    assert not source.leftovers()
    ranges = source.proxy.ranges(source.big_path)
    assert len(ranges) == 4, ranges  # the first request and one resume per cut
    assert all(r and not r.startswith("bytes=0-") for r in ranges[1:]), ranges  # each resumed mid-file
    # A reset throws away what was in flight (socket and client buffers); nothing else is fetched twice.
    assert source.proxy.wait_idle()  # the log is final
    fetched = source.proxy.body_bytes(source.big_path)
    assert 0 <= fetched - source.big_size <= 3 * (BIG // 5), fetched
    figures.record("1-cuts", source.provider, faults_survived=len(cuts), file_bytes=source.big_size,
                   bytes_sent=fetched, refetched=fetched - source.big_size)


async def test_1_ollama_cut_stream_is_resumable_and_the_next_pull_resumes(
    ollama_source: OllamaSource, figures: Figures
) -> None:
    """The Ollama server moves the bytes: a cut stream is one clear, resumable ERROR per
    attempt, and the next pull continues where the server stopped."""
    proxy, emulator = ollama_source.proxy, ollama_source.emulator
    weights = emulator.model(ollama_source.model).layers[0].digest
    outcomes = []
    for _ in range(3):
        proxy.cut_after(600, path="/api/pull", times=1)
        before = emulator.progress(weights)
        events = await ollama_source.pull()
        outcomes.append(events[-1].error_code)
        assert events[-1].status is ERROR
        assert "again" in events[-1].message
        assert emulator.wait_idle()
        assert emulator.progress(weights) >= before  # the server kept what it had
    events = await ollama_source.pull()
    assert events[-1].status is COMPLETE, events[-1].message
    assert events[-1].downloaded_bytes == ollama_source.total_size
    assert outcomes == ["incomplete"] * 3, outcomes
    figures.record("1-cuts", "ollama", faults_survived=3, runs=4)


# ------------------------------------------------------------------ 2. stalls
async def test_2_a_stall_longer_than_the_timeout_is_detected_and_retried(source: Source, figures: Figures) -> None:
    source.proxy.stall(30.0, after_bytes=BIG // 3, path=source.big_path, times=1)

    started = time.monotonic()
    events = await source.pull(**FAST)
    elapsed = time.monotonic() - started

    assert events[-1].status is COMPLETE, events[-1].message
    source.verify()
    stalled = [e for e in source.proxy.requests(source.big_path) if e.stall_started is not None]
    assert len(stalled) == 1
    detected = stalled[0].detected_after
    assert detected is not None, "the client never dropped the stalled connection"
    assert 0.8 <= detected < 5.0, detected  # the stall timeout is 1 s
    assert elapsed < 30.0
    ranges = source.proxy.ranges(source.big_path)
    assert ranges[-1] and not ranges[-1].startswith("bytes=0-"), ranges  # resumed, not restarted
    figures.record("2-stall", source.provider, stall_timeout=FAST["stall_timeout"],
                   detected_after_s=round(detected, 2), total_s=round(elapsed, 2))


async def test_2_ollama_silent_server_is_a_timeout_and_the_next_pull_completes(
    ollama_source: OllamaSource, figures: Figures
) -> None:
    proxy = ollama_source.proxy
    proxy.stall(30.0, after_bytes=1_000, path="/api/pull", times=1)
    events = await ollama_source.pull(stall_timeout=1.0)
    assert events[-1].status is ERROR and events[-1].error_code == "timeout", events[-1]
    assert "again" in events[-1].message
    assert proxy.wait_idle()
    stalled = [e for e in proxy.requests("/api/pull") if e.stall_started is not None]
    assert stalled and stalled[0].detected_after is not None
    assert 0.8 <= stalled[0].detected_after < 5.0
    events = await ollama_source.pull(stall_timeout=1.0)
    assert events[-1].status is COMPLETE, events[-1].message
    figures.record("2-stall", "ollama", stall_timeout=1.0, detected_after_s=round(stalled[0].detected_after, 2))


@pytest.mark.parametrize("where", ["metadata", "file"])
async def test_2_a_source_that_answers_nothing_at_all_is_detected(
    source: Source, where: str, figures: Figures
) -> None:
    """Not a byte, not even a status line: the file list / manifest, or a file request."""
    path = source.meta_path if where == "metadata" else source.big_path
    source.proxy.hang(30.0, path=path, times=1)

    started = time.monotonic()
    events = await source.pull(**FAST)
    elapsed = time.monotonic() - started

    source.proxy.wait_idle()
    hung = [e for e in source.proxy.requests(path) if "hang" in e.faults]
    assert len(hung) == 1 and hung[0].detected_after is not None, hung
    assert 0.8 <= hung[0].detected_after < 5.0, hung[0].detected_after
    last = events[-1]
    if last.status is ERROR:  # a plan is not retried by every provider: one clear error, then a rerun
        assert where == "metadata" and last.error_code == "timeout", last
        assert "again" in last.message
        events = await source.pull(**FAST)
    assert events[-1].status is COMPLETE, events[-1].message
    source.verify()
    figures.record(f"2-silent-{where}", source.provider, stall_timeout=FAST["stall_timeout"],
                   detected_after_s=round(hung[0].detected_after, 2),
                   outcome="retried, complete" if last.status is COMPLETE else "timeout error, rerun complete",
                   seconds=round(elapsed, 2))


async def test_2_ollama_server_that_answers_nothing_at_all_is_detected(ollama_source: OllamaSource) -> None:
    ollama_source.proxy.hang(30.0, path="/api/pull", times=1)
    events = await ollama_source.pull(stall_timeout=1.0)
    assert events[-1].error_code == "timeout", events[-1]
    ollama_source.proxy.wait_idle()
    hung = ollama_source.proxy.requests("/api/pull")[0]
    assert hung.detected_after is not None and 0.8 <= hung.detected_after < 5.0
    assert (await ollama_source.pull(stall_timeout=1.0))[-1].status is COMPLETE


# ------------------------------------------------------------------ 3. flipped bytes
async def test_3_flipped_bytes_are_a_checksum_mismatch_and_nothing_is_published(
    source: Source, figures: Figures
) -> None:
    rule = source.proxy.flip(at=BIG // 2, path=source.big_path, times=None)

    events = await source.pull(**FAST)

    assert events[-1].status is ERROR
    assert events[-1].error_code == "checksum_mismatch", events[-1].message
    assert "again" in events[-1].message
    assert source.proxy.faults_fired("flip")
    assert not source.published()
    # the corrupt partial is gone (never resumed later); other files may keep resumable partials
    assert not source.leftovers(of_big_file=True), source.leftovers()

    source.proxy.remove(rule)
    events = await source.pull(**FAST)
    assert events[-1].status is COMPLETE, events[-1].message
    source.verify()
    figures.record("3-flip", source.provider, detected=True, published_corrupt=False)


# ------------------------------------------------------------------ 4. 503 / 429 with Retry-After
async def test_4_503_and_429_with_retry_after_are_waited_out(source: Source, figures: Figures) -> None:
    source.proxy.error(503, retry_after=1, path=source.big_path, times=1)
    source.proxy.error(429, retry_after=1, path=source.big_path, times=1)

    events = await source.pull(**FAST)

    assert events[-1].status is COMPLETE, events[-1].message
    source.verify()
    tries = source.proxy.requests(source.big_path)
    assert [t.status for t in tries[:3]] == [503, 429, 206] or [t.status for t in tries[:3]] == [503, 429, 200]
    waits = [b.started - (a.finished or 0) for a, b in itertools.pairwise(tries[:3])]
    assert all(0.9 <= w < 3.0 for w in waits), waits  # told 1 s: waited about 1 s, not the backoff
    figures.record("4-retry-after", source.provider, retry_after_s=1,
                   waited_s=[round(w, 2) for w in waits])


async def test_4_a_huge_retry_after_is_capped(source: Source, figures: Figures) -> None:
    source.proxy.error(503, retry_after=3600, path=source.big_path, times=1)
    policy = replace(POLICIES["default"], retry_after_max=1.0, stall_timeout=1.0, max_retries=3)

    started = time.monotonic()
    events = await source.pull(policy=policy)

    assert events[-1].status is COMPLETE, events[-1].message
    assert time.monotonic() - started < 20
    tries = source.proxy.requests(source.big_path)
    wait = tries[1].started - (tries[0].finished or 0)
    assert 0.9 <= wait < 3.0, wait
    figures.record("4-retry-after-cap", source.provider, retry_after_s=3600, cap_s=1.0, waited_s=round(wait, 2))


async def test_4_ollama_503_before_the_stream_is_a_server_error_then_completes(ollama_source: OllamaSource) -> None:
    ollama_source.proxy.error(503, retry_after=1, path="/api/pull", times=1)
    events = await ollama_source.pull()
    assert events[-1].status is ERROR and events[-1].error_code == "server_error", events[-1]
    assert "503" in events[-1].message or "Service Unavailable" in events[-1].message, events[-1].message
    events = await ollama_source.pull()
    assert events[-1].status is COMPLETE


# ------------------------------------------------------------------ 5. retries exhausted
async def test_5_retries_exhausted_is_one_error_that_says_what_and_that_a_rerun_resumes(
    source: Source, figures: Figures
) -> None:
    source.proxy.truncate(2 * MB, path=source.big_path, times=1)
    failing = source.proxy.error(503, path=source.big_path, times=None, skip=1)

    events = await source.pull(stall_timeout=1.0, max_retries=2)

    last = events[-1]
    assert last.status is ERROR and last.error_code == "server_error", last
    assert "503" in last.message, last.message
    assert "again" in last.message and "resume" in last.message, last.message
    assert sum(e.is_terminal for e in events) == 1
    assert last.downloaded_bytes and last.downloaded_bytes >= 2 * MB  # the progress made is reported
    errors = [e for e in source.proxy.requests(source.big_path) if e.status == 503]
    assert len(errors) == 2  # max_retries=2: two retries after the attempt that made progress
    assert not source.published()

    source.proxy.remove(failing)
    source.proxy.clear_log()
    events = await source.pull(**FAST)
    assert events[-1].status is COMPLETE, events[-1].message
    assert events[0].downloaded_bytes >= 2 * MB  # the rerun started from what was on disk
    second = source.proxy.body_bytes(source.big_path)
    assert second <= source.big_size - 2 * MB, second
    source.verify()
    figures.record("5-exhausted", source.provider, attempts=len(errors), error_code=last.error_code,
                   resumed_from=events[0].downloaded_bytes, refetched=second - (source.big_size - 2 * MB))


async def test_5_a_connection_that_always_breaks_ends_as_incomplete(source: Source) -> None:
    source.proxy.reset_mid_header(path=source.big_path, times=None)
    events = await source.pull(stall_timeout=1.0, max_retries=2)
    last = events[-1]
    assert last.status is ERROR and last.error_code in ("incomplete", "connection_failed"), last
    assert "again" in last.message
    # three attempts (max_retries=2); aiohttp itself retries a GET once on a dropped keep-alive connection
    assert 3 <= len(source.proxy.faults_fired("reset_header")) <= 6


async def test_5_truncated_bodies_that_announce_the_full_length_are_resumed(source: Source) -> None:
    source.proxy.truncate(BIG // 4, path=source.big_path, times=2)
    events = await source.pull(**FAST)
    assert events[-1].status is COMPLETE, events[-1].message
    assert len(source.proxy.faults_fired("truncate")) == 2
    source.verify()
