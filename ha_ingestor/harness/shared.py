"""Where the project's shared material lives: ../shared next to the repository (real-ha harness, samples)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path | None:
    """``$HA_INGESTOR_SHARED``, else the nearest ``shared/`` (holding ``real-ha/``) beside a parent folder."""
    configured = os.environ.get("HA_INGESTOR_SHARED")
    if configured:
        return Path(configured) if (Path(configured) / "real-ha").is_dir() else None
    for parent in REPO.parents:
        candidate = parent / "shared"
        if (candidate / "real-ha").is_dir():
            return candidate
    return None


def samples_dir() -> Path | None:
    shared = shared_dir()
    return shared / "real-ha" / "samples" if shared is not None else None
