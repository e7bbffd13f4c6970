"""The HTTP transfer engine: every byte modelpull fetches goes through here."""

from .engine import FileTransfer, TransferEngine
from .policy import POLICIES, TransferPolicy, resolve_policy
from .auth import Auth, BearerAuth, NoAuth

__all__ = [
    "Auth",
    "BearerAuth",
    "FileTransfer",
    "NoAuth",
    "POLICIES",
    "TransferEngine",
    "TransferPolicy",
    "resolve_policy",
]
