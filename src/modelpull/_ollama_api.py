"""Placeholder until the shared Ollama API module lands (lead branch only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .errors import ConnectionFailed, ModelNotFound, ServerError
from .providers.ollama_server import ollama_base_url

__all__ = ["delete_model", "list_tags", "ollama_base_url"]


def _request(url: str, method: str, body: dict[str, Any] | None, timeout: float) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read(8 << 20)
    except urllib.error.HTTPError as exc:
        text = exc.read(4096).decode("utf-8", "replace")
        try:
            text = str(json.loads(text).get("error") or text)
        except (ValueError, AttributeError):
            pass
        if exc.code == 404:
            raise ModelNotFound(f"Ollama: {text.strip() or 'not found'}") from None
        raise ServerError(f"the Ollama server answered HTTP {exc.code}: {text.strip()[:200]}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionFailed(f"no Ollama server answers at {url} ({reason})") from None
    return json.loads(raw) if raw.strip() else None


def list_tags(base: str, timeout: float) -> list[dict[str, Any]]:
    data = _request(f"{base}/api/tags", "GET", None, timeout)
    return [e for e in (data or {}).get("models") or [] if isinstance(e, dict)]


def delete_model(base: str, name: str, timeout: float) -> None:
    _request(f"{base}/api/delete", "DELETE", {"model": name, "name": name}, timeout)
