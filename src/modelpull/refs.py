"""Parsing and validating model references, before any network call."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidModel

__all__ = ["OllamaName", "parse_hf_repo_id", "parse_ollama_name"]

OLLAMA_DEFAULT_HOST = "registry.ollama.ai"
OLLAMA_DEFAULT_NAMESPACE = "library"
OLLAMA_DEFAULT_TAG = "latest"

_PART = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
_NAMESPACE = r"[A-Za-z0-9_][A-Za-z0-9_\-]*"
_HOST = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(:[0-9]{1,5})?"


@dataclass(frozen=True)
class OllamaName:
    """A fully qualified Ollama model name (host/namespace/model:tag)."""

    host: str
    namespace: str
    model: str
    tag: str

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """The name as Ollama displays it (defaults left out)."""
        text = f"{self.model}:{self.tag}"
        if self.namespace != OLLAMA_DEFAULT_NAMESPACE or self.host != OLLAMA_DEFAULT_HOST:
            text = f"{self.namespace}/{text}"
        if self.host != OLLAMA_DEFAULT_HOST:
            text = f"{self.host}/{text}"
        return text

    @property
    def repository(self) -> str:
        return f"{self.namespace}/{self.model}"


def parse_ollama_name(name: object) -> OllamaName:
    """Parse ``[host/][namespace/]model[:tag]`` by Ollama's rules.

    Raises :class:`InvalidModel` with the reason for anything Ollama would reject.
    """
    if not isinstance(name, str) or not name:
        raise InvalidModel("an Ollama model name is required, e.g. 'gemma3:1b'")
    shown = name if len(name) <= 120 else name[:117] + "..."
    rest, tag = name, OLLAMA_DEFAULT_TAG
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
    pieces = rest.split("/")
    if len(pieces) > 3:
        raise InvalidModel(f"invalid Ollama model name {shown!r}: too many '/' parts")
    host, namespace = OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE
    if len(pieces) == 3:
        host, namespace, model = pieces
    elif len(pieces) == 2:
        namespace, model = pieces
    else:
        (model,) = pieces
    checks = (
        ("host", host, _HOST, 350),
        ("namespace", namespace, _NAMESPACE, 80),
        ("model", model, _PART, 80),
        ("tag", tag, _PART, 80),
    )
    for what, value, pattern, limit in checks:
        if not value or len(value) > limit or not re.fullmatch(pattern, value):
            raise InvalidModel(
                f"invalid Ollama model name {shown!r}: bad {what} {value[:40]!r} "
                f"(1-{limit} letters, digits, '_', '-', '.'; starting with a letter, digit or '_'); "
                "expected [host/][namespace/]model[:tag], e.g. 'gemma3:1b'"
            )
    return OllamaName(host, namespace, model, tag)


_HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?"


def parse_hf_repo_id(model: object) -> str:
    """Validate a Hub repo id (``org/name`` or a legacy ``name``)."""
    if not isinstance(model, str) or not model:
        raise InvalidModel("a Hugging Face repo id is required, e.g. 'org/model'")
    shown = model if len(model) <= 120 else model[:117] + "..."
    if (
        len(model) > 96
        or "--" in model
        or ".." in model
        or not re.fullmatch(rf"(?:{_HF_PART}/)?{_HF_PART}", model)
    ):
        raise InvalidModel(
            f"invalid Hugging Face repo id {shown!r}: expected 'org/name' made of letters, "
            "digits, '-', '_' and '.', e.g. 'Qwen/Qwen2.5-0.5B-Instruct'"
        )
    return model
