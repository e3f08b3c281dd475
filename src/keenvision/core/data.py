"""Where the project's real data lives: ``$KEEN_DATA``, by default ``../shared/data`` beside the project."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """The shared data folder (``KEEN_DATA``, else ``../shared/data`` relative to the working directory or to
    the source checkout)."""
    configured = os.environ.get("KEEN_DATA")
    if configured:
        return Path(configured)
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"
