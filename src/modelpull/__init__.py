"""modelpull: download AI models from the Hugging Face Hub, MLX repos and Ollama
through one async API with honest byte-level progress, resume and verification.

    from modelpull import download_model

    async for progress in download_model("huggingface", "org/model"):
        print(progress.status.value, progress.message, progress.percent)
"""

from ._push import push
from ._transfer import POLICIES, TransferPolicy
from .api import download_model, plan_download
from .errors import ERROR_CODES, ModelpullError
from .plan import Plan, PlanItem
from .progress import DownloadProgress, DownloadStatus
from .providers import provider_names

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
