"""Small asyncio helpers that work on Python 3.10 (no TaskGroup there)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any


async def run_all(awaitables: Iterable[Awaitable[Any]]) -> None:
    """Run concurrently; on the first failure (or our own cancellation) cancel the rest.

    Returns only when every task has finished, so nothing keeps running behind
    the caller's back.
    """
    tasks = [asyncio.ensure_future(aw) for aw in awaitables]
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
