"""One run configuration, built from a notebook's papermill parameters and a named profile."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths
from .concepts import shipped_concepts
from .models import DEFAULT_MODEL

# `paper` is the full run behind the committed figures; `ci` is the same code on less data, small
# enough for the test suite. Layers are given as fractions of depth so a profile fits any model.
PROFILES: dict[str, dict] = {
    "paper": dict(n_per_class=400, n_seeds=3, layer_fractions=None, rank_layer_fraction=0.5,
                  k_grid=(1, 2, 5, 10, 20, 50, 100, 200, 500), downstream=True),
    "ci": dict(n_per_class=60, n_seeds=2, layer_fractions=(0.25, 0.5, 0.75), rank_layer_fraction=0.5,
               k_grid=(1, 5, 20, 100, 500), downstream=True),
}
CI_CONCEPTS = ("python_number", "python_string")


@dataclass(frozen=True)
class RunConfig:
    """Everything a notebook's analysis depends on; recorded beside every figure it writes."""

    profile: str
    model: str
    concepts: tuple[str, ...]
    layers: tuple[int, ...] | None
    seed: int
    out_dir: Path
    n_per_class: int | None
    n_seeds: int
    rank_layer_fraction: float
    k_grid: tuple[int, ...]
    downstream: bool
    layer_fractions: tuple[float, ...] | None = field(default=None)

    def record(self) -> dict:
        """JSON-ready parameters, as written into the figure manifest."""
        d = asdict(self)
        del d["out_dir"]  # a staging folder, not a parameter of the result
        return json.loads(json.dumps(d, default=str))

    def layers_for(self, n_layers: int) -> list[int]:
        """The layers a layer sweep visits: explicit ones, the profile's fractions of depth, or all."""
        if self.layers:
            return list(self.layers)
        if self.layer_fractions:
            return sorted({min(n_layers - 1, round(f * (n_layers - 1))) for f in self.layer_fractions})
        return list(range(n_layers))

    def rank_layer(self, n_layers: int) -> int:
        """The single layer where rankings are compared (the first explicit layer, else mid-depth)."""
        return self.layers[0] if self.layers else round(self.rank_layer_fraction * (n_layers - 1))


def _parse_layers(layers: str | int | list | tuple | None) -> tuple[int, ...] | None:
    if layers in (None, "", []):
        return None
    items = str(layers).replace(" ", "").split(",") if isinstance(layers, (str, int)) else list(layers)
    try:
        return tuple(int(x) for x in items)
    except ValueError:
        raise ValueError(f"layers={layers!r} is not a comma-separated list of integers; write e.g. layers='10,15'") from None


def _out_dir(out_dir: str, profile: str, concept: str) -> Path:
    """Where figures go: explicit, else $SPARSEPROBE_OUT_DIR (run_all.sh stages there), else the paper's
    figures/ for the paper run and runs/<concept or profile>/figures for every other run."""
    chosen = out_dir or os.environ.get("SPARSEPROBE_OUT_DIR", "")
    if chosen:
        return Path(chosen) if Path(chosen).is_absolute() else paths.ROOT / chosen
    if profile == "paper" and not concept:
        return paths.FIGURES
    return paths.ROOT / "runs" / (Path(str(concept).split(",")[0]).stem if concept else profile) / "figures"


def make_config(profile: str = "paper", model: str = DEFAULT_MODEL, concept: str = "", layers="",
                seed: int = 0, out_dir: str = "") -> RunConfig:
    """Build a RunConfig from papermill parameters; unknown profiles fail with the valid names."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of: {', '.join(PROFILES)}")
    if concept:
        concepts = tuple(c.strip() for c in str(concept).split(",") if c.strip())
    elif profile == "ci":
        concepts = CI_CONCEPTS
    else:
        concepts = tuple(shipped_concepts())
    p = PROFILES[profile]
    return RunConfig(
        profile=profile, model=model, concepts=concepts, layers=_parse_layers(layers), seed=int(seed),
        out_dir=_out_dir(out_dir, profile, concept), n_per_class=p["n_per_class"], n_seeds=p["n_seeds"],
        rank_layer_fraction=p["rank_layer_fraction"], k_grid=tuple(p["k_grid"]), downstream=p["downstream"],
        layer_fractions=p["layer_fractions"],
    )


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every random draw in the core also takes `seed`)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
