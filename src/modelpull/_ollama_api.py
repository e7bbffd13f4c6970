"""An Ollama server's HTTP API, spoken in one place (PROTOCOLS.md section 1).

* :class:`OllamaClient`: ``POST /api/pull`` as a stream of JSON objects,
  ``GET /api/tags``, ``DELETE /api/delete``, ``GET /api/version``, over an
  aiohttp session the caller owns.
* :func:`list_tags` and :func:`delete_model`: the same for callers without an
  event loop (the inventory, the CLI); they also work when the calling thread
  runs one, by running in a thread of their own.
* :func:`ollama_base_url`: where the server is (``base_url``, ``OLLAMA_HOST``,
  localhost:11434); :func:`classify_ollama_error`: Ollama's error words as a
  typed error.

Ollama answers an error before its stream starts with an HTTP status and
``{"error": "..."}``, and an error after the stream started as a line
``{"error": "..."}`` inside a 200 response; both become the same typed error,
keeping Ollama's words.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._lazy import lazy
from ._transfer import read_capped
from .errors import (
    AuthRequired,
    ConnectionFailed,
    DiskFull,
    InvalidModel,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
    ServerError,
    TransferTimeout,
)

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")


__all__ = [
    "DEFAULT_OLLAMA",
    "OllamaClient",
    "classify_ollama_error",
    "delete_model",
    "list_tags",
    "ollama_base_url",
]

DEFAULT_OLLAMA = "http://localhost:11434"
#: the most we read of a non-streamed answer (a list of tags, an error)
_MAX_ANSWER = 8 << 20
_MAX_ERROR_BODY = 64 << 10
_MAX_ERROR_TEXT = 300
T = TypeVar("T")


def ollama_base_url(base_url: str | None) -> str:
    """``base_url``, else ``OLLAMA_HOST`` (scheme optional), else localhost:11434."""
    raw = (base_url or os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA).strip()
    if "://" not in raw:
        raw = "http://" + raw
    scheme, _, rest = raw.partition("://")
    host = rest.split("/", 1)[0]
    if scheme not in ("http", "https") or not host:
        raise InvalidOption(f"the Ollama address must be http(s)://host:port, got {raw!r}")
    if host.startswith("0.0.0.0"):
        host = "127.0.0.1" + host[len("0.0.0.0"):]
    if ":" not in host.rsplit("]", 1)[-1]:
        host += ":11434"
    return f"{scheme}://{host}" + ("/" + rest.split("/", 1)[1].rstrip("/") if "/" in rest else "")


def classify_ollama_error(text: str, status: int | None = None) -> ModelpullError:
    """An Ollama error text (HTTP body or stream line) as a typed error, keeping its words."""
    lowered = text.lower()
    message = f"Ollama: {text}"
    if "file does not exist" in lowered or "not found" in lowered or status == 404:
        return ModelNotFound(message + " (check the model name and tag on ollama.com/library)")
    if "invalid model name" in lowered or "invalid name" in lowered or status == 400:
        return InvalidModel(message)
    if status in (401, 403) or "unauthorized" in lowered:
        return AuthRequired(message)
    if "no space left" in lowered or "disk" in lowered and "full" in lowered:
        return DiskFull(message)
    if "timeout" in lowered or "deadline" in lowered:
        return TransferTimeout(message)
    return ServerError(message)


class OllamaClient:
    """One Ollama server's API over the caller's session (its timeouts apply)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    # -- pull ----------------------------------------------------------------
    async def pull(
        self, model: str, *, insecure: bool = False
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Ask the server to pull ``model``; yield each JSON object of its progress stream.

        Raises the typed error of an error answer or an ``{"error": ...}``
        line, :class:`ConnectionFailed` when no server answers and
        :class:`TransferTimeout` when it falls silent. A stream that breaks
        simply ends: a caller that saw no ``success`` knows the pull did not
        finish. Closing the generator closes the connection, which cancels the
        pull on the server.
        """
        url = f"{self.base}/api/pull"
        body = {"model": model, "name": model, "stream": True, "insecure": insecure}
        try:
            response = await self.session.post(url, json=body)
        except asyncio.TimeoutError:
            raise TransferTimeout(f"the Ollama server at {self.base} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(
                f"cannot connect to the Ollama server at {url} ({type(exc).__name__}); is Ollama "
                "running? Set base_url or OLLAMA_HOST if it listens elsewhere"
            ) from None
        async with response:
            if response.status != 200:
                text = await _error_text(response)
                raise classify_ollama_error(text or f"HTTP {response.status}", response.status)
            try:
                async for raw in response.content:
                    data = _json_line(raw)
                    if data is None:
                        continue
                    if data.get("error"):
                        raise classify_ollama_error(str(data["error"]))
                    yield data
            except asyncio.TimeoutError:
                silent = self.session.timeout.sock_read or 0.0
                raise TransferTimeout(
                    f"the Ollama server at {self.base} sent nothing for {silent:.0f}s"
                ) from None
            except aiohttp.ClientError:
                return

    # -- the rest of the API -------------------------------------------------
    async def tags(self) -> list[dict[str, Any]]:
        """The models the server has (``GET /api/tags``), one dict per model as Ollama sends it."""
        data = await self._request("GET", "/api/tags")
        models = data.get("models") if isinstance(data, dict) else None
        return [entry for entry in models or [] if isinstance(entry, dict)]

    async def delete(self, name: str) -> None:
        """Remove ``name`` from the server; :class:`ModelNotFound` (Ollama's words) if it has none."""
        await self._request("DELETE", "/api/delete", {"model": name, "name": name})

    async def version(self) -> str:
        data = await self._request("GET", "/api/version")
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, str):
            raise ServerError(f"the server at {self.base} did not say its Ollama version")
        return version

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base}{path}"
        try:
            async with self.session.request(method, url, json=body) as response:
                if response.status >= 400:
                    text = await _error_text(response)
                    if response.status == 404:
                        raise ModelNotFound(f"Ollama: {text or 'not found'}")
                    raise ServerError(
                        f"the Ollama server answered HTTP {response.status}: {text[:200]}"
                    )
                raw = await read_capped(response, _MAX_ANSWER)
                if len(raw) > _MAX_ANSWER:
                    raise ServerError(f"the server at {url} answered more than {_MAX_ANSWER} bytes")
        except asyncio.TimeoutError:
            raise ConnectionFailed(f"no Ollama server answers at {url} (timed out)") from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionFailed(f"no Ollama server answers at {url} ({exc.os_error})") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"no Ollama server answers at {url} ({exc})") from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerError(f"the server at {url} answered something that is not JSON") from None


# -- for callers without an event loop -------------------------------------------
def list_tags(base: str, timeout: float) -> list[dict[str, Any]]:
    """:meth:`OllamaClient.tags`, blocking; ``timeout`` bounds connecting and each read."""
    return _blocking(base, timeout, lambda client: client.tags())


def delete_model(base: str, name: str, timeout: float) -> None:
    """:meth:`OllamaClient.delete`, blocking; ``timeout`` bounds connecting and each read."""
    _blocking(base, timeout, lambda client: client.delete(name))


def _blocking(base: str, timeout: float, call: Callable[[OllamaClient], Awaitable[T]]) -> T:
    async def run() -> T:
        limits = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        async with aiohttp.ClientSession(timeout=limits, trust_env=True) as session:
            return await call(OllamaClient(session, base))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    # This thread runs an event loop we must not block inside of: use a thread of our own.
    outcome: dict[str, Any] = {}

    def in_thread() -> None:
        try:
            outcome["value"] = asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=in_thread, name="modelpull-ollama-api", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


# -- reading answers ---------------------------------------------------------------
def _json_line(raw: bytes) -> dict[str, Any] | None:
    line = raw.strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def _error_text(response: aiohttp.ClientResponse) -> str:
    """Ollama's ``{"error": ...}`` text, else the body itself (shortened); may be empty."""
    raw = (await read_capped(response, _MAX_ERROR_BODY)).decode("utf-8", "replace")
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
    except ValueError:
        pass
    return raw.strip()[:_MAX_ERROR_TEXT]
