"""HTTP plumbing shared by every request modelpull makes to a source.

* :func:`new_session`: the one way sessions are made (timeouts, buffers, proxies).
* :func:`send`: the one request loop. Redirects are followed here, by hand,
  so the :class:`~modelpull._transfer.auth.Auth` decides the headers for every
  hop and an ``Authorization`` header never reaches another host; a ``401`` is
  answered once by asking the auth to refresh (a token realm, Basic).
* :func:`read_capped`: a small body (a manifest, a token) read whole, up to a limit.
* :func:`retry_after`: the server's ``Retry-After``, in seconds (the policy caps it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol

from yarl import URL

from .._lazy import lazy
from ..errors import ServerError
from .auth import Auth
from .policy import TransferPolicy

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")

REDIRECTS = (301, 302, 303, 307, 308)
#: the redirects that keep the method and the body
KEEP_BODY_REDIRECTS = (307, 308)
_MAX_REDIRECTS = 10
#: how much a response may buffer before reading pauses (aiohttp's default is 64 KiB)
_READ_BUFFER = 1 << 20


class TooManyRedirects(ServerError):
    """The source sent us round in circles (more than ten redirects)."""


class ServerBusy(ServerError):
    """HTTP 429 or 5xx: come back later, after ``retry_after`` seconds if the server said.

    :func:`~modelpull._transfer.policy.retry_request` waits what it carries.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def new_session(policy: TransferPolicy, **kwargs: Any) -> aiohttp.ClientSession:
    """An HTTP session with the engine's timeouts: connect and read stalls, no total."""
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=policy.connect_timeout, sock_read=policy.stall_timeout
    )
    connector = aiohttp.TCPConnector(limit=64, limit_per_host=32, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        timeout=timeout,
        connector=connector,
        auto_decompress=False,
        trust_env=True,
        read_bufsize=_READ_BUFFER,
        **kwargs,
    )


async def send(
    session: aiohttp.ClientSession,
    url: URL,
    headers: dict[str, str],
    auth: Auth,
    method: str = "GET",
    body: Callable[[], Any] | None = None,
) -> aiohttp.ClientResponse:
    """``method url``, following redirects and answering one ``401`` through ``auth``.

    ``body`` makes the request body afresh for each attempt (an upload); a
    request with one follows only ``307``/``308``, the redirects that keep
    method and body. Returns the final response unread: the caller reads and
    releases it (``async with``). Raises :class:`TooManyRedirects`, and
    whatever aiohttp raises for a connection that fails or times out.
    """
    refreshed = False
    follow = KEEP_BODY_REDIRECTS if body is not None else REDIRECTS
    for _ in range(_MAX_REDIRECTS + 1):
        response = await session.request(
            method, url, headers={**headers, **auth.headers_for(url)},
            data=body() if body is not None else None, allow_redirects=False,
        )
        if response.status in follow and "Location" in response.headers:
            location = URL(response.headers["Location"], encoded=True)
            response.release()
            url = url.join(location)
            continue
        if response.status == 401 and not refreshed:
            refreshed = True
            try:
                renewed = await auth.refresh(session, response)
            except BaseException:
                response.release()
                raise
            if renewed:
                response.release()
                continue
        return response
    raise TooManyRedirects(f"too many redirects fetching {describe(url)}")


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to ``limit + 1`` bytes: more than ``limit`` means it is too large."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await response.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


def retry_after(response: _HasHeaders) -> float | None:
    """The response's ``Retry-After`` in seconds (delta or HTTP date), None without one."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds)


def describe(url: URL) -> str:
    """A URL as messages show it: no query, no fragment."""
    return str(url.with_query(None).with_fragment(None))
