"""Keeping tokens out of reprs, messages, logs and URLs."""

from __future__ import annotations

from collections.abc import Iterable

_MASK = "***"


class Secret:
    """A credential whose value is only available through :meth:`reveal`.

    ``repr``/``str`` never show the value, so a Secret can sit in dataclasses,
    exceptions and log records without leaking.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> str:
        raise TypeError("a Secret cannot be pickled")


def as_secret(value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value or None
    if not isinstance(value, str):
        raise TypeError("token must be a string")
    value = value.strip()
    return Secret(value) if value else None


def redact(text: str, secrets: Iterable[Secret | None]) -> str:
    """Replace every secret value (of 4+ characters) found in ``text`` by ``***``."""
    for secret in secrets:
        if secret is None:
            continue
        value = secret.reveal()
        if len(value) >= 4 and value in text:
            text = text.replace(value, _MASK)
    return text
