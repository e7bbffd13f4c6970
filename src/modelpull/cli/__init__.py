"""The ``modelpull`` command: ``pull``, ``serve``, ``list`` and ``rm``."""

from __future__ import annotations

from . import _pull, _service  # noqa: F401  (each registers its commands on main)
from ._main import main

__all__ = ["main"]
