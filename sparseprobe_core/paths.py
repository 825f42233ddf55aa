"""Repository paths, built from this file's location so notebooks run from any working directory."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
CONCEPTS = DATA / "concepts"
NOTEBOOKS = ROOT / "notebooks"
FIGURES = ROOT / "figures"


def cache_dir() -> Path:
    """Activation cache folder (git-ignored); `SPARSEPROBE_CACHE` overrides it, e.g. for tests."""
    return Path(os.environ.get("SPARSEPROBE_CACHE", ROOT / ".cache" / "activations"))
