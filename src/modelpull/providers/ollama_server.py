"""A running Ollama server pulls the model; we translate its stream honestly.

Ollama reports ``total``/``completed`` per layer and announces each layer only
when it reaches it, so the whole download's total grows as layers appear.
``downloaded_bytes`` is the sum over all layers and never decreases. The
server's API is spoken by :mod:`modelpull._ollama_api`.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import replace
from typing import Any

from yarl import URL

from .._ollama_api import DEFAULT_OLLAMA, OllamaClient, classify_ollama_error, ollama_base_url
from ..errors import IncompleteTransfer
from ..plan import LocalCopy, Plan
from ..progress import ProgressTracker
from ..refs import parse_ollama_name
from ._places import OLLAMA, OLLAMA_URL
from ._source import COMMON_OPTIONS, Option, Source
from .base import Provider, bool_option

# ``ollama_base_url`` and ``classify_ollama_error`` live in ``modelpull._ollama_api``;
# they stay importable from here for the modules that import them from here.
__all__ = ["DEFAULT_OLLAMA", "OllamaServerProvider", "classify_ollama_error", "ollama_base_url"]


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

    async def local_copy(self) -> LocalCopy | None:
        """The model in Ollama's store on this machine (``OLLAMA_MODELS``), when the server is local."""
        from ..stores.ollama_store import OllamaStore
        from .ollama_registry import local_ollama_copy

        host = (URL(self.base).host or "").strip("[]")
        if host not in ("localhost", "127.0.0.1", "::1"):
            return None
        return local_ollama_copy(self.name, self.ref, OllamaStore())

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
        client = OllamaClient(self.session, self.base)
        async with aclosing(client.pull(self.model, insecure=self.insecure)) as lines:
            async for data in lines:
                if self._follow(data, tracker):
                    return self.ref.short
        raise IncompleteTransfer(
            f"the Ollama server at {self.base} ended the pull of {self.model} without "
            "reporting success; run it again to resume"
        )

    def _follow(self, data: dict[str, Any], tracker: ProgressTracker) -> bool:
        """One line of Ollama's stream into the tracker; True once it says ``success``."""
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
        return False


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
