"""modelpull's own data folder: where files go that belong to no other tool's store."""

from __future__ import annotations

from pathlib import Path


def data_dir(*parts: str) -> Path:
    """``<user data folder>/modelpull/<parts>``: platformdirs' ``user_data_dir`` (on Linux
    ``$XDG_DATA_HOME`` or ``~/.local/share``; the platform's own place on macOS and Windows)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("modelpull", appauthor=False)).joinpath(*parts)
