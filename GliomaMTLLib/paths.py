"""Where GliomaMTL keeps things on disk: one naming scheme for folders and environment variables.

Every folder has one environment variable, ``GLIOMAMTL_<NAME>``, that overrides its default:

| variable              | folder                                   | default                                   |
|-----------------------|------------------------------------------|-------------------------------------------|
| ``GLIOMAMTL_CACHE``   | derived, re-creatable files (ONNX, anatomy, prepared arrays) | user cache folder (platformdirs) |
| ``GLIOMAMTL_DATA``    | what the user made: correction store, model registry | user data folder (platformdirs)  |
| ``GLIOMAMTL_MODELS``  | extra bundle folders searched by name (``os.pathsep`` list) | none; then the shipped bundles |
| ``GLIOMAMTL_RECIPES`` | training recipes (YAML)                  | ``training/configs`` beside the package    |
| ``GLIOMAMTL_DEBUG``   | not a folder: ``1`` shows tracebacks of user errors | unset                          |

Setting ``GLIOMAMTL_CACHE=none`` disables the on-disk caches that are optional (anatomy).
This module imports nothing heavy, so the command line can use it before parsing arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "gliomamtl"
#: Folder that holds ``GliomaMTLLib`` (the repository root in a checkout, the module folder in Slicer).
PACKAGE_PARENT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS_DIR = PACKAGE_PARENT / "Resources" / "Models"
_DISABLED = ("none", "off", "0", "false")


def _from_env(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def cache_enabled() -> bool:
    """False when the user switched optional on-disk caches off (``GLIOMAMTL_CACHE=none``)."""
    return os.environ.get("GLIOMAMTL_CACHE", "").strip().lower() not in _DISABLED


def cache_dir() -> Path:
    """Folder of derived files that can always be rebuilt: ``$GLIOMAMTL_CACHE`` or the user cache folder."""
    env = _from_env("GLIOMAMTL_CACHE")
    if env is not None and cache_enabled():
        return env
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir(APP_NAME, appauthor=False))
    except ImportError:  # platformdirs is a dependency; this only guards a stripped-down install
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / APP_NAME


def data_dir() -> Path:
    """Folder of what the user made (corrections, fine-tuned models): ``$GLIOMAMTL_DATA`` or the user data folder."""
    env = _from_env("GLIOMAMTL_DATA")
    if env is not None:
        return env
    try:
        from platformdirs import user_data_dir

        return Path(user_data_dir(APP_NAME, appauthor=False))
    except ImportError:
        base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(base) / APP_NAME


def store_dir() -> Path:
    """Default correction store."""
    return data_dir() / "corrections"


def registry_dir() -> Path:
    """Default model registry (fine-tuned versions)."""
    return data_dir() / "models"


def recipes_dir() -> Path:
    """Folder of training recipes: ``$GLIOMAMTL_RECIPES`` or ``training/configs`` beside the package."""
    return _from_env("GLIOMAMTL_RECIPES") or PACKAGE_PARENT / "training" / "configs"


def debug_enabled() -> bool:
    """True when ``GLIOMAMTL_DEBUG`` asks for tracebacks."""
    return os.environ.get("GLIOMAMTL_DEBUG", "").strip().lower() not in ("", *_DISABLED)
