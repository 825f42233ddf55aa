"""sparseprobe: the companion code of the paper "Sparse Prober".

One module per noun of the paper: ``theory`` (the reduction beta = W_out w, the noise-neuron
criterion), ``prober`` (the causality-weighted sparse prober and its path), ``rankers`` (baseline
neuron rankings), ``ablation`` (keep/remove-top-k evaluations), ``activations`` and ``models`` (the
model and its hooks), ``concepts`` (labelled texts and splits), ``config`` (every knob of a run).

The names in ``__all__`` are the public API; each is imported on first use, so importing the package
is fast and does not import torch.
"""

from __future__ import annotations

from importlib import import_module, metadata

try:
    __version__ = metadata.version("sparseprobe")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> the module that defines it; imported on first use (PEP 562), so that
# `import sparseprobe_core` (and the command line's --help) stays fast and never imports torch
_EXPORTS = {
    "Concept": "concepts",
    "ConceptError": "concepts",
    "Split": "concepts",
    "load_concept": "concepts",
    "make_split": "concepts",
    "subsample": "concepts",
    "RankerSettings": "config",
    "RunConfig": "config",
    "make_config": "config",
    "KChoice": "prober",
    "PathResult": "prober",
    "SparseProber": "prober",
    "choose_k": "prober",
    "prober_path": "prober",
    "RANKERS": "rankers",
    "RankContext": "rankers",
    "rank": "rankers",
    "load_model": "models",
    "model_info": "models",
}
__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'sparseprobe_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
