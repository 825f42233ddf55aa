"""Repository paths, built from this file's location so notebooks run from any working directory, and
the one way this project writes a file or folder that others read (atomically)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
CONCEPTS = DATA / "concepts"
NOTEBOOKS = ROOT / "notebooks"
FIGURES = ROOT / "figures"


def cache_dir() -> Path:
    """Activation cache folder (git-ignored); `SPARSEPROBE_CACHE` overrides it, e.g. for tests (set but empty:
    the default, not the working directory)."""
    return Path(os.environ.get("SPARSEPROBE_CACHE", "").strip() or ROOT / ".cache" / "activations")


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Create `path` (a file, or a folder) by ``write(tmp)`` on a temporary path beside it, then rename.

    A killed run leaves either the old `path` or none, never half a file; readers never see a partial
    one. A folder that another process completed first is kept (its writer won the race).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (tmp.is_dir() and path.is_dir() and any(path.iterdir())):
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return path
