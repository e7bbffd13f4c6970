"""Speed and ETA as the reporter computes them, on a clock the test moves (no sleeping).

The first ETA of a download is not computed from a fraction of a second that includes
connection setup (the page once showed 154,410 s for a 20 s download); none is given
before bytes have flowed for a while, none while the transfer stalls; speed does not
jump with every burst; COMPLETE carries the average speed of the bytes fetched.
"""

from __future__ import annotations

from modelpull.progress import DownloadStatus, ProgressReporter, ProgressTracker

MB = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _download(total: int, present: int = 0) -> tuple[ProgressTracker, ProgressReporter, Clock]:
    tracker = ProgressTracker(total)
    tracker.declare("model.safetensors", total, present)
    clock = Clock()
    return tracker, ProgressReporter(tracker, clock=clock), clock


def _tick(reporter: ProgressReporter, clock: Clock, seconds: float = 0.1):
    clock.now += seconds
    return reporter.event(DownloadStatus.DOWNLOADING, "m", force=True)


def test_setup_time_and_a_slow_first_chunk_give_no_absurd_eta():
    total = 20 * MB  # a 20 s download at 1 MB/s
    tracker, reporter, clock = _download(total)
    reporter.event(DownloadStatus.STARTING, "m", force=True)
    for _ in range(8):  # 0.8 s of connection setup, nothing arrives
        event = _tick(reporter, clock)
        assert event.speed_bps is None and event.eta_seconds is None
    done, etas = 0, []
    for step in range(200):
        done += 1 if step == 0 else 100_000  # a tiny first chunk, then 1 MB/s
        tracker.update("model.safetensors", done)
        event = _tick(reporter, clock)
        if event.eta_seconds is not None:
            etas.append((step, event.eta_seconds, (total - done) / MB))
    first_step = etas[0][0]
    assert first_step >= 10 * reporter.ETA_WARMUP - 1, "an ETA before bytes flowed for ETA_WARMUP seconds"
    for step, eta, truth in etas:
        assert abs(eta - truth) <= 0.25 * truth + 1, f"step {step}: ETA {eta:.1f}s, truth {truth:.1f}s"


def test_speed_is_smoothed_over_bursts():
    tracker, reporter, clock = _download(100 * MB)
    done, speeds = 0, []
    for step in range(100):  # 1 MB/s on average, in bursts of 0.5 MB every half second
        if step % 5 == 0:
            done += 500_000
        tracker.update("model.safetensors", done)
        event = _tick(reporter, clock)
        if step > 30 and event.speed_bps is not None:
            speeds.append(event.speed_bps)
    assert speeds and min(speeds) > 0.85 * MB and max(speeds) < 1.15 * MB, (min(speeds), max(speeds))


def test_no_eta_while_the_transfer_stalls_and_speed_decays():
    tracker, reporter, clock = _download(50 * MB)
    done = 0
    for _ in range(40):
        done += 100_000
        tracker.update("model.safetensors", done)
        event = _tick(reporter, clock)
    assert event.eta_seconds is not None and event.speed_bps > 0.9 * MB
    for _ in range(70):  # 7 s without a byte
        event = _tick(reporter, clock)
    assert event.eta_seconds is None
    assert event.speed_bps < 0.2 * MB


def test_bytes_already_on_disk_do_not_count_as_speed_and_complete_has_the_average():
    tracker, reporter, clock = _download(10 * MB, present=6 * MB)
    first = reporter.event(DownloadStatus.STARTING, "m", force=True)
    assert first.downloaded_bytes == 6 * MB and first.speed_bps is None
    done = 6 * MB
    for _ in range(40):  # 4 MB in 4 s
        done += 100_000
        tracker.update("model.safetensors", done)
        event = _tick(reporter, clock)
        assert event.speed_bps is None or event.speed_bps < 1.2 * MB
    complete = reporter.complete("done", "/path")
    assert complete.speed_bps is not None and abs(complete.speed_bps - MB) < 0.05 * MB
    assert complete.files is not None and complete.files[0].present == 10 * MB

    # nothing to fetch: no average speed
    tracker, reporter, clock = _download(10 * MB, present=10 * MB)
    reporter.event(DownloadStatus.STARTING, "m", force=True)
    clock.now += 0.3
    assert reporter.complete("done", "/path").speed_bps is None


def test_events_carry_every_file_about_once_a_second():
    tracker = ProgressTracker(3_000)
    for name in ("a", "b", "c"):
        tracker.declare(name, 1_000)
    clock = Clock()
    reporter = ProgressReporter(tracker, clock=clock)
    first = reporter.event(DownloadStatus.STARTING, "m", force=True)
    assert [(f.name, f.size, f.present) for f in first.files] == [("a", 1000, 0), ("b", 1000, 0), ("c", 1000, 0)]
    with_files = 0
    for step in range(30):
        tracker.update("a", min(1000, 40 * (step + 1)))
        clock.now += 0.1
        event = reporter.event(DownloadStatus.DOWNLOADING, "m")
        if event is not None and event.files is not None:
            with_files += 1
            assert event.files[0].present == tracker.present_of("a")
    assert 2 <= with_files <= 4
    assert "files" in first.to_dict() and first.to_dict()["files"][0] == {"name": "a", "size": 1000, "present": 0}
    assert "files=" not in repr(first)
