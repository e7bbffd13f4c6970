"""The progress contract for the `ollama` provider, against the Ollama emulator
(tests/servers/ollama_emulator.py follows PROTOCOLS.md §1 line for line)."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelpull import DownloadStatus, download_model

MB = 1_000_000


async def collect(*args, **kwargs):
    events, stamps = [], []
    async for event in download_model(*args, **kwargs):
        events.append(event)
        stamps.append(time.monotonic())
    return events, stamps


def assert_monotonic(events):
    done = [e.downloaded_bytes for e in events]
    percent = [e.percent for e in events]
    assert done == sorted(done), f"downloaded_bytes went backwards: {done}"
    assert percent == sorted(percent), f"percent went backwards: {percent}"


async def test_multi_layer_pull_is_one_monotonic_total(ollama_emulator):
    sizes = [3 * MB, 2 * MB, 40_000, 120]
    ollama_emulator.add_model("tiny:1b", sizes, bytes_per_sec=4 * MB)
    events, stamps = await collect("ollama", "tiny:1b", base_url=ollama_emulator.base_url)
    assert events[0].status is DownloadStatus.STARTING
    assert sum(e.is_terminal for e in events) == 1
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert done.percent == 100.0 and done.downloaded_bytes == done.total_bytes == sum(sizes)
    assert done.path == "tiny:1b"
    assert_monotonic(events)
    # past the first layer the percent keeps climbing instead of resetting to 0
    after_first = [e for e in events if e.downloaded_bytes and e.downloaded_bytes > sizes[0]]
    assert after_first and min(e.percent for e in after_first) > 50
    assert len({e.current for e in events if e.current}) >= 2
    downloading = [e for e in events if e.status is DownloadStatus.DOWNLOADING and e.total_bytes]
    assert any(e.percent < 50 for e in downloading), "the bar must not start full"
    assert all(e.downloaded_bytes <= e.total_bytes for e in downloading)
    assert not any(e.percent == 100.0 for e in events[:-1])
    for i in range(len(stamps)):
        assert len([t for t in stamps if stamps[i] <= t < stamps[i] + 1.0]) <= 12
    assert ollama_emulator.is_pulled("tiny:1b")


async def test_missing_completed_field_is_zero(ollama_emulator):
    from tests.servers.ollama_emulator import OllamaEmulator

    real_like = OllamaEmulator(include_zero_completed=False)
    real_like.start()
    try:
        real_like.add_model("z:1", [MB, 100])
        events, _ = await collect("ollama", "z:1", base_url=real_like.base_url)
    finally:
        real_like.stop()
    assert events[-1].status is DownloadStatus.COMPLETE
    assert events[-1].total_bytes == MB + 100
    assert_monotonic(events)


async def test_a_stalled_server_still_gets_an_event_every_second(ollama_emulator):
    ollama_emulator.add_model("slow:1", [2 * MB], bytes_per_sec=4 * MB)
    ollama_emulator.stall("slow:1", 3.0, after_bytes=MB, silent=True)
    events, stamps = await collect("ollama", "slow:1", base_url=ollama_emulator.base_url)
    assert events[-1].status is DownloadStatus.COMPLETE
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
    assert max(gaps) < 1.5


async def test_unknown_model_error_inside_the_stream(ollama_emulator):
    events, _ = await collect("ollama", "nope:1b", base_url=ollama_emulator.base_url)
    assert [e.status for e in events][0] is DownloadStatus.STARTING
    assert events[-1].status is DownloadStatus.ERROR
    assert events[-1].error_code == "not_found"
    assert "file does not exist" in events[-1].message  # Ollama's own words
    assert sum(e.is_terminal for e in events) == 1


async def test_http_error_before_the_stream(ollama_emulator):
    ollama_emulator.set_unknown_model_mode("http500")
    events, _ = await collect("ollama", "nope:1b", base_url=ollama_emulator.base_url)
    assert events[-1].status is DownloadStatus.ERROR
    assert events[-1].error_code == "not_found"
    assert "file does not exist" in events[-1].message


async def test_error_line_mid_stream_is_an_error_not_silence(ollama_emulator):
    ollama_emulator.add_model("flaky:1", [2 * MB, 100])
    ollama_emulator.fail_after("flaky:1", MB, error="max retries exceeded: EOF")
    events, _ = await collect("ollama", "flaky:1", base_url=ollama_emulator.base_url)
    assert events[-1].status is DownloadStatus.ERROR
    assert events[-1].error_code == "server_error"
    assert "max retries exceeded: EOF" in events[-1].message
    assert_monotonic(events)
    assert sum(e.is_terminal for e in events) == 1


async def test_stream_cut_without_success_is_incomplete(ollama_emulator):
    ollama_emulator.add_model("cut:1", [2 * MB, 100])
    ollama_emulator.cut_after("cut:1", MB)
    events, _ = await collect("ollama", "cut:1", base_url=ollama_emulator.base_url)
    assert events[-1].status is DownloadStatus.ERROR
    assert events[-1].error_code == "incomplete"
    assert "again" in events[-1].message
    assert not any(e.status is DownloadStatus.COMPLETE for e in events)


async def test_invalid_name_never_reaches_the_server(ollama_emulator):
    events, _ = await collect("ollama", "Bad Name!", base_url=ollama_emulator.base_url)
    assert events[-1].error_code == "invalid_model"
    assert not [r for r in ollama_emulator.requests if r.path == "/api/pull"]


async def test_unreachable_server_names_the_url():
    events, _ = await collect("ollama", "tiny:1b", base_url="http://127.0.0.1:9")
    assert events[-1].error_code == "connection_failed"
    assert "http://127.0.0.1:9/api/pull" in events[-1].message


async def test_ollama_host_env_without_scheme(ollama_emulator, monkeypatch):
    ollama_emulator.add_model("env:1", [1000])
    monkeypatch.setenv("OLLAMA_HOST", ollama_emulator.host_port)
    events, _ = await collect("ollama", "env:1")
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message


@pytest.mark.parametrize("how", ["break", "cancel"])
async def test_leaving_the_loop_cancels_the_pull_and_the_next_call_resumes(ollama_emulator, how):
    layers = [6 * MB, 100]
    ollama_emulator.add_model("big:1", layers, bytes_per_sec=2 * MB)

    async def consume() -> None:
        async for event in download_model("ollama", "big:1", base_url=ollama_emulator.base_url):
            if how == "break" and (event.downloaded_bytes or 0) >= MB:
                break

    if how == "cancel":
        task = asyncio.create_task(consume())
        while not any(len(p.lines or []) > 5 for p in ollama_emulator.pulls):
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await consume()
    left = time.monotonic()
    pull = await asyncio.to_thread(ollama_emulator.wait_disconnect, 2.0)
    assert pull.disconnected_at is not None
    assert time.monotonic() - left < 2.0
    await asyncio.to_thread(ollama_emulator.assert_no_progress_after_disconnect, pull)
    stopped_at = sum(pull.completed_at_disconnect.values())
    assert 0 < stopped_at < sum(layers)
    events, _ = await collect("ollama", "big:1", base_url=ollama_emulator.base_url)
    assert events[-1].status is DownloadStatus.COMPLETE
    first_progress = next(e for e in events if e.status is DownloadStatus.DOWNLOADING)
    assert first_progress.downloaded_bytes >= stopped_at  # resumed, not restarted
