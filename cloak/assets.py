"""Locating the shared, read-only assets (models, photos) without any network access."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import AssetMissingError

ENV_VAR = "FACECLOAK_ASSETS"


def assets_dir() -> Path:
    """Return the assets folder: $FACECLOAK_ASSETS, else ``../shared/assets`` above the cwd or the package."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise AssetMissingError(f"{ENV_VAR}={env} is not a directory")
        return path
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for base in (start, *start.parents):
            candidate = base.parent / "shared" / "assets"
            if candidate.is_dir():
                return candidate
    raise AssetMissingError(f"shared assets not found; set {ENV_VAR} to the folder holding models/ and faces/")


def asset(relative: str) -> Path:
    """Path of one asset file, with a clear error if it is missing."""
    path = assets_dir() / relative
    if not path.exists():
        raise AssetMissingError(f"asset not found: {path}")
    return path


def cache_dir() -> Path:
    """Writable cache for derived, non-personal data (anchor galleries)."""
    path = Path(os.environ.get("FACECLOAK_CACHE", Path.home() / ".cache" / "facecloak"))
    path.mkdir(parents=True, exist_ok=True)
    return path
