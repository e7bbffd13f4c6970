"""Modules imported on first use.

``modelpull --help`` and ``modelpull list`` never open a connection, yet the
sources they describe are written against aiohttp, whose import alone takes
longer than the 0.25 s budget for a command's start. A module that needs it
writes::

    if TYPE_CHECKING:
        import aiohttp
    else:
        aiohttp = lazy("aiohttp")

and the real import happens the first time an attribute is read (inside a
request, an ``except`` clause that matches, an ``isinstance``).
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = ["lazy"]


class _LazyModule(types.ModuleType):
    """Stands for a module until one of its attributes is read."""

    def __getattr__(self, attr: str) -> Any:
        value = getattr(importlib.import_module(self.__name__), attr)
        setattr(self, attr, value)  # the next read is a plain attribute
        return value


def lazy(name: str) -> Any:
    """A stand-in for module ``name`` that imports it when first used."""
    return _LazyModule(name)
