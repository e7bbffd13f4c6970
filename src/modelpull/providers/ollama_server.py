"""A running Ollama server pulls the model; we translate its stream honestly.

Ollama reports ``total``/``completed`` per layer and announces each layer only
when it reaches it, so the whole download's total grows as layers appear.
``downloaded_bytes`` is the sum over all layers and never decreases.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from typing import Any

import aiohttp

from ..errors import (
    AuthRequired,
    ConnectionFailed,
    IncompleteTransfer,
    InvalidModel,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
    ServerError,
    TransferTimeout,
)
from ..plan import Plan
from ..progress import ProgressTracker
from ..refs import parse_ollama_name
from ._places import OLLAMA, OLLAMA_URL
from ._source import Option, Source
from .base import COMMON_OPTIONS, Provider, bool_option

DEFAULT_OLLAMA = "http://localhost:11434"


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
        from ..errors import DiskFull

        return DiskFull(message)
    if "timeout" in lowered or "deadline" in lowered:
        return TransferTimeout(message)
    return ServerError(message)


class OllamaServerProvider(Provider):
    name = "ollama"

    def __init__(self, model: str, token: Any, base_url: str | None, options: dict[str, Any]) -> None:
        super().__init__(model, token, base_url, options)
        self.ref = parse_ollama_name(model)
        self.base = ollama_base_url(base_url)
        self.insecure = bool_option(self.opts, "insecure")
        if "stall_timeout" not in self.opts:
            # Ollama is silent while it verifies a multi-GB layer; that is not a stall.
            self.policy = replace(self.policy, stall_timeout=600.0)

    async def plan(self) -> Plan:
        return Plan(
            self.name, self.model, [], destination=f"{self.base} ({self.model})",
            notes=["the Ollama server fetches the layers; their sizes are known only as it announces them"],
        )

    def starting_message(self, plan: Plan) -> str:
        return f"Pulling {self.model} through the Ollama server at {self.base}"

    def progress_message(self, tracker: ProgressTracker) -> str:
        return tracker.message or f"Pulling {self.model}"

    async def fetch(self, plan: Plan, tracker: ProgressTracker) -> str:
        url = f"{self.base}/api/pull"
        body = {"model": self.model, "name": self.model, "stream": True, "insecure": self.insecure}
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
                raise classify_ollama_error(await _error_text(response), response.status)
            succeeded = await self._follow(response, tracker)
        if not succeeded:
            raise IncompleteTransfer(
                f"the Ollama server at {self.base} ended the pull of {self.model} without "
                "reporting success; run it again to resume"
            )
        return self.ref.short

    async def _follow(self, response: aiohttp.ClientResponse, tracker: ProgressTracker) -> bool:
        try:
            async for raw in response.content:
                line = raw.strip()
                if not line:
                    continue
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                if data.get("error"):
                    raise classify_ollama_error(str(data["error"]))
                status = str(data.get("status", ""))
                digest = data.get("digest")
                if digest and isinstance(data.get("total"), int):
                    key = str(digest)
                    tracker.declare(key, int(data["total"]))
                    completed = data.get("completed")
                    if isinstance(completed, int):
                        tracker.update(key, min(completed, int(data["total"])))
                    tracker.current = key
                if status == "success":
                    return True
                if status:
                    tracker.message = f"{self.model}: {status}"
                    if "verifying" in status:
                        tracker.verifying = status
        except asyncio.TimeoutError:
            raise TransferTimeout(
                f"the Ollama server at {self.base} sent nothing for {self.policy.stall_timeout:.0f}s"
            ) from None
        except aiohttp.ClientError:
            return False
        return False


async def _error_text(response: aiohttp.ClientResponse) -> str:
    raw = await response.text(errors="replace")
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
    except ValueError:
        pass
    return raw.strip()[:300] or f"HTTP {response.status}"


# -- the declaration -------------------------------------------------------------------
def _build(source: Any, model: str, token: Any, base_url: str | None, options: dict[str, Any]) -> Provider:
    return OllamaServerProvider(model, token, base_url, options)


OLLAMA_SERVER = Source(
    name="ollama",
    title="Ollama server",
    summary="Asks a running Ollama server to pull the model; modelpull turns its stream into honest progress.",
    example="gemma3:1b",
    reference="[host/][namespace/]model[:tag]",
    parse=parse_ollama_name,
    build=_build,
    options=(
        Option("insecure", "bool", "let the server use plain http to the registry", False),
        Option("stall_timeout", "float", "seconds the server may stay silent (it is quiet while it verifies)", 600.0),
        Option("connect_timeout", "float", "seconds to wait for a connection", 30.0),
        *COMMON_OPTIONS,
    ),
    base_url_help="Ollama server (default OLLAMA_HOST, else http://localhost:11434)",
    base_url_setting=OLLAMA_URL,
    place=OLLAMA,
    rank=50,
)
