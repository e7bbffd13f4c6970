"""The ``modelpull`` command: ``pull``, ``push``, ``serve``, ``list`` and ``rm``."""

from __future__ import annotations

from . import _pull, _push, _service  # noqa: F401  (each registers its commands on main)
from ._main import main

__all__ = ["main"]
