"""Typed errors raised inside modelpull, each with a stable ``error_code``.

Inside the library these are exceptions; at the edge of :func:`download_model`
each one becomes exactly one ``ERROR`` event carrying ``error_code`` and the
message. The codes are part of the public API and never change meaning.
"""

from __future__ import annotations

__all__ = [
    "ERROR_CODES",
    "AuthRequired",
    "ChecksumMismatch",
    "ConnectionFailed",
    "DiskFull",
    "GatedModel",
    "IncompatibleModel",
    "IncompleteTransfer",
    "InvalidModel",
    "InvalidOption",
    "ModelNotFound",
    "ModelpullError",
    "OfflineUnavailable",
    "RevisionNotFound",
    "ServerError",
    "TransferTimeout",
    "UnsafeSource",
    "UnsupportedProvider",
]


class ModelpullError(Exception):
    """Base of every error modelpull reports; ``code`` is the stable error code."""

    code: str = "error"
    #: True when running the same download again continues from what is on disk.
    resumable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class UnsupportedProvider(ModelpullError):
    code = "unsupported_provider"


class InvalidModel(ModelpullError):
    code = "invalid_model"


class InvalidOption(ModelpullError):
    code = "invalid_option"


class ModelNotFound(ModelpullError):
    code = "not_found"


class RevisionNotFound(ModelpullError):
    code = "revision_not_found"


class GatedModel(ModelpullError):
    code = "gated"


class AuthRequired(ModelpullError):
    code = "auth_required"


class IncompatibleModel(ModelpullError):
    code = "incompatible_model"


class ConnectionFailed(ModelpullError):
    code = "connection_failed"
    resumable = True


class ServerError(ModelpullError):
    code = "server_error"
    resumable = True


class TransferTimeout(ModelpullError):
    code = "timeout"
    resumable = True


class IncompleteTransfer(ModelpullError):
    code = "incomplete"
    resumable = True


class ChecksumMismatch(ModelpullError):
    code = "checksum_mismatch"


class DiskFull(ModelpullError):
    code = "disk_full"
    resumable = True


class OfflineUnavailable(ModelpullError):
    """Offline mode is on and what was asked for is not complete on disk."""

    code = "offline"


class UnsafeSource(ModelpullError):
    """The source described something we refuse to act on (path escape, bad digest)."""

    code = "unsafe_source"


ERROR_CODES: tuple[str, ...] = tuple(
    cls.code
    for cls in (
        UnsupportedProvider,
        InvalidModel,
        InvalidOption,
        ModelNotFound,
        RevisionNotFound,
        GatedModel,
        AuthRequired,
        IncompatibleModel,
        ConnectionFailed,
        ServerError,
        TransferTimeout,
        IncompleteTransfer,
        ChecksumMismatch,
        DiskFull,
        UnsafeSource,
        OfflineUnavailable,
    )
) + ("internal_error",)
