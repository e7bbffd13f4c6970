"""The HTTP transfer engine: every byte modelpull fetches goes through here.

This package is the one way in: callers import from ``modelpull._transfer``,
never from its modules.
"""

from .auth import Auth, BearerAuth, NoAuth, same_origin
from .engine import ErrorForResponse, TransferEngine
from .hashing import file_has_digest, hash_fd_range, hex_of, new_hasher
from .http import (
    ServerBusy,
    TooManyRedirects,
    describe,
    new_session,
    read_capped,
    retry_after,
    send,
)
from .limit import RateLimit, parse_rate
from .parts import STATE_SUFFIX, FileTransfer, PartialFile, present_bytes, read_partial
from .policy import POLICIES, POLICY_SETTINGS, Retry, TransferPolicy, resolve_policy, retry_request

__all__ = [
    "POLICIES",
    "POLICY_SETTINGS",
    "STATE_SUFFIX",
    "Auth",
    "BearerAuth",
    "ErrorForResponse",
    "FileTransfer",
    "NoAuth",
    "PartialFile",
    "RateLimit",
    "Retry",
    "ServerBusy",
    "TooManyRedirects",
    "TransferEngine",
    "TransferPolicy",
    "describe",
    "file_has_digest",
    "hash_fd_range",
    "hex_of",
    "new_hasher",
    "new_session",
    "parse_rate",
    "present_bytes",
    "read_capped",
    "read_partial",
    "resolve_policy",
    "retry_after",
    "retry_request",
    "same_origin",
    "send",
]
