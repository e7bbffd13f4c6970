"""The HTTP transfer engine: every byte modelpull fetches goes through here.

This package is the one way in: callers import from ``modelpull._transfer``,
never from its modules.
"""

from .auth import Auth, BearerAuth, NoAuth
from .engine import FileTransfer, TransferEngine, new_session, present_bytes
from .hashing import hash_fd_range, hex_of, new_hasher
from .policy import POLICIES, TransferPolicy, resolve_policy

__all__ = [
    "POLICIES",
    "Auth",
    "BearerAuth",
    "FileTransfer",
    "NoAuth",
    "TransferEngine",
    "TransferPolicy",
    "hash_fd_range",
    "hex_of",
    "new_hasher",
    "new_session",
    "present_bytes",
    "resolve_policy",
]
