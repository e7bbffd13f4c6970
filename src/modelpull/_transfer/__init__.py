"""The HTTP transfer engine: every byte modelpull fetches goes through here."""

from .auth import Auth, BearerAuth, NoAuth
from .engine import FileTransfer, TransferEngine
from .policy import POLICIES, TransferPolicy, resolve_policy

__all__ = [
    "POLICIES",
    "Auth",
    "BearerAuth",
    "FileTransfer",
    "NoAuth",
    "TransferEngine",
    "TransferPolicy",
    "resolve_policy",
]
