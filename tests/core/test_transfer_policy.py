"""The one retry policy: what is retryable, how long to wait, and who asks it.

The decisions are read off :class:`TransferPolicy` directly; the waits are
measured on real loopback servers: a small aiohttp app for
``retry_request``, docker-registry behind the fault proxy for the engine.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from modelpull import POLICIES, DownloadStatus, download_model
from modelpull._transfer import (
    ServerBusy,
    TransferPolicy,
    resolve_policy,
    retry_after,
    retry_request,
)
from modelpull.errors import (
    AuthRequired,
    ChecksumMismatch,
    ConnectionFailed,
    DiskFull,
    IncompleteTransfer,
    InvalidOption,
    ModelNotFound,
    ServerError,
    TransferTimeout,
    UnsafeSource,
)
from tests.servers import free_port
from tests.servers.fault_proxy import FaultProxy
from tests.servers.registry import DockerRegistry

POLICY = TransferPolicy()


# ------------------------------------------------------------------ what is retryable
@pytest.mark.parametrize(("status", "retryable"), [
    (429, True), (500, True), (502, True), (503, True), (504, True),
    (400, False), (401, False), (403, False), (404, False), (416, False),
])
def test_overloaded_or_failing_servers_are_retried_answers_are_not(status: int, retryable: bool) -> None:
    assert POLICY.retryable_status(status) is retryable


def _final(error: ConnectionFailed) -> ConnectionFailed:
    error.resumable = False
    return error


@pytest.mark.parametrize(("error", "retryable"), [
    (ConnectionFailed("refused"), True),
    (ServerError("HTTP 503"), True),
    (TransferTimeout("silent"), True),
    (IncompleteTransfer("cut"), True),
    (aiohttp.ServerDisconnectedError(), True),
    (asyncio.TimeoutError(), True),
    # the end of the line: cancelled, the disk is full, or an answer no retry changes
    (asyncio.CancelledError(), False),
    (DiskFull("full"), False),
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (_final(ConnectionFailed("bad certificate")), False),
    (ModelNotFound("404"), False),
    (AuthRequired("401"), False),
    (ChecksumMismatch("corrupt"), False),
    (UnsafeSource("bad digest"), False),
    (ValueError("a bug"), False),
])
def test_which_failures_are_worth_another_attempt(error: BaseException, retryable: bool) -> None:
    assert POLICY.retryable(error) is retryable


async def test_a_tls_failure_is_not_retried() -> None:
    """https spoken to a plain http server: a protocol mismatch never heals."""
    plain = _server([lambda: web.Response(text="plain http")])
    async with plain as (url, _), aiohttp.ClientSession() as session:
        try:
            await session.get(url.replace("http://", "https://"))
        except aiohttp.ClientError as exc:
            tls_error: BaseException = exc
        else:
            pytest.fail("https to a plain http server succeeded")
    assert isinstance(tls_error, aiohttp.ClientSSLError)
    assert not POLICY.retryable(tls_error)
    assert POLICY.retry(tls_error, 0) is None


# ------------------------------------------------------------------ how long to wait
def test_backoff_doubles_from_its_first_wait_up_to_its_cap_give_or_take_a_quarter() -> None:
    policy = replace(POLICY, backoff_initial=0.5, backoff_max=3.0)
    for failures, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        waits = [policy.backoff(failures) for _ in range(200)]
        assert all(0.75 * nominal <= w <= 1.25 * nominal for w in waits), (failures, min(waits), max(waits))
        assert max(waits) - min(waits) > 0.1 * nominal  # jittered: parallel parts do not retry in step


def test_the_servers_retry_after_is_waited_but_capped() -> None:
    policy = replace(POLICY, retry_after_max=10.0)
    assert policy.backoff(1, retry_after=2.5) == 2.5
    assert policy.backoff(6, retry_after=3600) == 10.0
    assert policy.backoff(1, retry_after=-5) == 0.0


# ------------------------------------------------------------------ the one decision
def test_failures_in_a_row_count_an_attempt_that_moved_bytes_starts_the_count_over() -> None:
    policy = replace(POLICY, max_retries=2, backoff_initial=0.5, backoff_max=15.0)
    busy = ServerError("HTTP 503")
    first = policy.retry(busy, 0)
    assert first is not None and first.failures == 1 and 0.375 <= first.delay <= 0.625
    second = policy.retry(busy, first.failures)
    assert second is not None and second.failures == 2 and 0.75 <= second.delay <= 1.25
    assert policy.retry(busy, second.failures) is None  # a third failure in a row: give up
    # a stall (or a cut) after bytes arrived is not held against the source
    stalled = policy.retry(TransferTimeout("stalled"), second.failures, progressed=True)
    assert stalled is not None and stalled.failures == 1
    # the server's Retry-After replaces the backoff
    told = policy.retry(busy, 0, retry_after=4.0)
    assert told is not None and told.delay == 4.0
    # cancelled or out of disk: stop at once, whatever the count
    assert policy.retry(asyncio.CancelledError(), 0) is None
    assert policy.retry(DiskFull("full"), 0, progressed=True) is None
    # a caller may give its own limit (metadata requests use request_attempts - 1)
    assert policy.retry(busy, 1, retries=1) is None


def test_backoff_and_request_attempts_are_tuned_like_the_other_limits() -> None:
    policy = resolve_policy("default", backoff_initial="0.25", backoff_max=4, request_attempts="5")
    assert (policy.backoff_initial, policy.backoff_max, policy.request_attempts) == (0.25, 4.0, 5)
    assert resolve_policy("default", backoff_initial=None) is POLICIES["default"]
    for bad in ({"backoff_initial": -1}, {"backoff_max": 0}, {"backoff_initial": "soon"},
                {"request_attempts": 0}, {"backoff_initial": 20, "backoff_max": 5}):
        with pytest.raises(InvalidOption):
            resolve_policy("default", **bad)


# ------------------------------------------------------------------ retry_request, on a real server
class _Hits:
    def __init__(self) -> None:
        self.times: list[float] = []


@asynccontextmanager
async def _server(answers: list[Callable[[], web.Response]]) -> AsyncIterator[tuple[str, _Hits]]:
    """A loopback server answering its requests with ``answers`` in turn (the last one repeats)."""
    hits = _Hits()

    async def handle(request: web.Request) -> web.Response:
        hits.times.append(time.monotonic())
        return answers[min(len(hits.times), len(answers)) - 1]()

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/meta", hits
    finally:
        await runner.cleanup()


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict:
    """A metadata request as a source module makes it: statuses become typed errors."""
    try:
        async with session.get(url) as response:
            if response.status == 404:
                raise ModelNotFound(f"{url} does not exist")
            if POLICY.retryable_status(response.status):
                raise ServerBusy(f"{url} answered HTTP {response.status}", retry_after(response))
            return await response.json()
    except aiohttp.ClientConnectorError as exc:
        raise ConnectionFailed(f"cannot connect to {url}: {exc.os_error}") from None


def _busy(retry_after_s: str | None = None) -> Callable[[], web.Response]:
    headers = {"Retry-After": retry_after_s} if retry_after_s is not None else {}
    return lambda: web.json_response({"errors": []}, status=503, headers=headers)


def _ok() -> Callable[[], web.Response]:
    return lambda: web.json_response({"files": ["config.json"]})


async def test_retry_request_tries_again_while_the_server_is_busy() -> None:
    policy = replace(POLICY, backoff_initial=0.05, backoff_max=0.05)
    async with _server([_busy(), _busy(), _ok()]) as (url, hits), aiohttp.ClientSession() as session:
        answer = await retry_request(policy, lambda: _get_json(session, url))
    assert answer == {"files": ["config.json"]}
    assert len(hits.times) == 3


async def test_retry_request_gives_up_after_request_attempts_with_the_last_error() -> None:
    policy = replace(POLICY, backoff_initial=0.05, backoff_max=0.05, request_attempts=2)
    async with _server([_busy()]) as (url, hits), aiohttp.ClientSession() as session:
        with pytest.raises(ServerBusy, match="HTTP 503"):
            await retry_request(policy, lambda: _get_json(session, url))
    assert len(hits.times) == 2


async def test_retry_request_waits_what_the_server_asked() -> None:
    policy = replace(POLICY, backoff_initial=0.01, backoff_max=0.01)
    async with _server([_busy("1"), _ok()]) as (url, hits), aiohttp.ClientSession() as session:
        await retry_request(policy, lambda: _get_json(session, url))
    assert len(hits.times) == 2
    assert 0.9 <= hits.times[1] - hits.times[0] < 3.0


async def test_retry_request_does_not_retry_an_answer() -> None:
    missing = _server([lambda: web.json_response({}, status=404), _ok()])
    async with missing as (url, hits), aiohttp.ClientSession() as session:
        with pytest.raises(ModelNotFound):
            await retry_request(POLICY, lambda: _get_json(session, url))
    assert len(hits.times) == 1


async def test_an_unreachable_server_fails_within_a_few_seconds_after_request_attempts() -> None:
    url = f"http://127.0.0.1:{free_port()}/meta"  # nothing listens there
    attempts = 0

    async def call() -> dict:
        nonlocal attempts
        attempts += 1
        return await _get_json(session, url)

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConnectionFailed):
            await retry_request(POLICY, call)
    assert attempts == POLICY.request_attempts == 3
    assert time.monotonic() - started < 5.0


# ------------------------------------------------------------------ the engine asks the policy
@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def proxy(registry: DockerRegistry) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(registry.url).start()
    try:
        yield fault_proxy
    finally:
        fault_proxy.stop()


@pytest.mark.parametrize(("backoff", "low", "high"), [(1.6, 1.2, 3.0), (0.02, 0.0, 0.6)])
async def test_a_failed_part_waits_the_policys_backoff_before_it_is_asked_again(
    registry: DockerRegistry, proxy: FaultProxy, tmp_path: Path, backoff: float, low: float, high: float
) -> None:
    model = registry.push_tiny(weights=200_000)
    weights = f"/v2/{model.repo}/blobs/{model.layer_digests[0]}"
    proxy.error(503, path=weights, times=1)  # no Retry-After: the backoff decides
    policy = replace(POLICIES["default"], backoff_initial=backoff, backoff_max=backoff)
    events = [e async for e in download_model(
        "ollama-registry", f"{proxy.netloc}/{model.repo}:{model.tag}", insecure=True,
        models_dir=str(tmp_path / "models"), policy=policy,
    )]
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    failed, retried = proxy.requests(weights)
    assert failed.status == 503 and retried.status in (200, 206)
    assert failed.finished is not None
    assert low <= retried.started - failed.finished < high, retried.started - failed.finished
