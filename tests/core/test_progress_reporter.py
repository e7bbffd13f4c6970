"""The reporter's guarantees, on a real tracker."""

import time

from modelpull.progress import DownloadStatus, ProgressReporter, ProgressTracker


def test_percent_and_bytes_never_decrease_when_total_grows():
    tracker = ProgressTracker()
    reporter = ProgressReporter(tracker)
    tracker.declare("layer-a", 1000)
    tracker.update("layer-a", 1000)
    first = reporter.event(DownloadStatus.DOWNLOADING, "m", force=True)
    tracker.declare("layer-b", 10)  # a new layer appears: the total grows
    second = reporter.event(DownloadStatus.DOWNLOADING, "m", force=True)
    assert second.downloaded_bytes >= first.downloaded_bytes
    assert second.percent >= first.percent
    assert second.total_bytes == 1010


def test_tracker_counters_only_move_forward():
    tracker = ProgressTracker(100)
    tracker.update("f", 60)
    tracker.update("f", 20)
    assert tracker.done == 60


def test_only_a_finished_download_says_100_percent():
    tracker = ProgressTracker(10_000_000)
    tracker.update("f", 9_999_999)
    event = ProgressReporter(tracker).event(DownloadStatus.DOWNLOADING, "m", force=True)
    assert event.percent < 100.0


def test_throttle_and_heartbeat():
    tracker = ProgressTracker(100)
    reporter = ProgressReporter(tracker)
    assert reporter.event(DownloadStatus.DOWNLOADING, "m") is not None
    tracker.update("f", 1)
    assert reporter.event(DownloadStatus.DOWNLOADING, "m") is None  # < 0.1 s later
    time.sleep(0.12)
    assert reporter.event(DownloadStatus.DOWNLOADING, "m") is not None  # changed
    time.sleep(0.12)
    assert reporter.event(DownloadStatus.DOWNLOADING, "m") is None  # unchanged, < 1 s
    time.sleep(1.0)
    assert reporter.event(DownloadStatus.DOWNLOADING, "m") is not None  # heartbeat
