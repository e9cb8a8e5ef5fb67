"""Where things live by default. One place, so docs and behaviour agree."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """The store used when ``--data-dir`` is not given: ``$ISOSTACK_DATA_DIR``, else the XDG data dir."""
    env = os.environ.get("ISOSTACK_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "isostack"
