"""Time the external peers (``sparseprobe_core.peers``) on a planted toy and compare their orders with
the core rankers they correspond to.

    .venv/bin/python benchmarks/bench_peers.py
"""

from __future__ import annotations

import time

import numpy as np
from scipy.stats import spearmanr

from sparseprobe_core.peers import PEERS, PeerUnavailable
from sparseprobe_core.rankers import RankContext, rank

OURS = {"neurox_probeless": "probeless", "neurox_linear_probe": "elastic_net", "tl_sparse_probe": "mean_diff"}


def main(n: int = 1000, d_mlp: int = 1536, d_model: int = 576, seed: int = 0) -> None:
    """Print each peer's time, its Spearman correlation with our ranker, and the planted neurons it finds."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    A = rng.normal(size=(n, d_mlp))
    concept = rng.choice(d_mlp, 20, replace=False)
    A[:, concept] += 0.8 * y[:, None]
    ctx = RankContext(A, y, rng.normal(size=(d_mlp, d_model)) / 24, np.zeros(d_model), seed)
    for name, peer in PEERS.items():
        start = time.perf_counter()
        try:
            order = peer(A, y, seed=seed)
        except PeerUnavailable as error:
            print(f"{name}: cannot run: {error}")
            continue
        seconds = time.perf_counter() - start
        ours = rank(OURS[name], ctx)
        rho = spearmanr(np.argsort(order), np.argsort(ours)).statistic
        hits = len(set(order[:20]) & set(concept))
        print(
            f"{name}: {seconds:.2f}s, Spearman vs ours ({OURS[name]}) {rho:.4f}, "
            f"planted concept neurons in its top 20: {hits}/20"
        )


if __name__ == "__main__":
    main()
