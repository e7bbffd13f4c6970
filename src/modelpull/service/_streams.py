"""Server-Sent Events and NDJSON streams of job events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from ._jobs import Job, JobFeed, JobManager

#: a comment line every so often keeps proxies from closing an idle stream
HEARTBEAT = 15.0
SSE_RETRY_MS = 2000

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


async def job_events(
    job: Job, manager: JobManager, after: int, fmt: str, heartbeat: float = HEARTBEAT
) -> AsyncIterator[bytes]:
    """Every kept event of ``job`` after sequence number ``after``, then live ones.

    Ends once the job is not running and its last event is sent (or when the
    service stops): a run ends with one terminal event, and a paused job's
    stream ends at its ``paused`` event. Events of earlier runs are replayed
    in order (one numbering per job), each run from ``STARTING`` to its own
    terminal event.
    """
    sse = fmt == SSE
    job.watchers += 1
    try:
        if sse:
            yield f"retry: {SSE_RETRY_MS}\n\n".encode()
        seq = after
        while not manager.closing:
            events = await job.wait_after(seq, heartbeat)
            if events:
                seq = events[-1].seq
                yield b"".join(e.sse if sse else e.ndjson for e in events)
            elif job.running:
                yield b": keep-alive\n\n" if sse else b"\n"
            if not job.running and seq >= job.last_seq:
                return
    finally:
        job.watchers -= 1


async def feed_events(
    feed: JobFeed, manager: JobManager, fmt: str, heartbeat: float = HEARTBEAT
) -> AsyncIterator[bytes]:
    """Changes of every job (``{"type": "job", "job": ...}`` / ``{"type": "removed"}``)."""
    sse = fmt == SSE
    try:
        if sse:
            yield f"retry: {SSE_RETRY_MS}\n\n".encode()
        while not manager.closing:
            messages = await feed.next(heartbeat)
            if not messages:
                yield b": keep-alive\n\n" if sse else b"\n"
                continue
            lines = (json.dumps(m, separators=(",", ":")) for m in messages)
            if sse:
                yield b"".join(f"data: {line}\n\n".encode() for line in lines)
            else:
                yield b"".join(f"{line}\n".encode() for line in lines)
    finally:
        feed.close()
