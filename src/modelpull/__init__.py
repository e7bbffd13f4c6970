"""modelpull: download AI models from the Hugging Face Hub, MLX repos and Ollama
through one async API with honest byte-level progress, resume and verification.

    from modelpull import download_model

    async for progress in download_model("huggingface", "org/model"):
        print(progress.status.value, progress.message, progress.percent)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._push import push
    from ._transfer import POLICIES, TransferPolicy
    from .api import download_model, plan_download
    from .errors import ERROR_CODES, ModelpullError
    from .plan import Plan, PlanItem
    from .progress import DownloadProgress, DownloadStatus
    from .providers import provider_names

#: where each public name lives: imported on first use (PEP 562), so a command
#: that needs none of them (``modelpull --help``) does not pay for them all
_HOMES = {
    "push": "._push",
    "POLICIES": "._transfer",
    "TransferPolicy": "._transfer",
    "download_model": ".api",
    "plan_download": ".api",
    "ERROR_CODES": ".errors",
    "ModelpullError": ".errors",
    "Plan": ".plan",
    "PlanItem": ".plan",
    "DownloadProgress": ".progress",
    "DownloadStatus": ".progress",
    "provider_names": ".providers",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__version__ = "0.1.0"

__all__ = [
    "ERROR_CODES",
    "POLICIES",
    "DownloadProgress",
    "DownloadStatus",
    "ModelpullError",
    "Plan",
    "PlanItem",
    "TransferPolicy",
    "download_model",
    "plan_download",
    "provider_names",
    "push",
]
