"""External neuron-ranking peers, run by their own code on our activations (never used by the core).

- NeuroX 1.0.9 (Dalvi et al. 2019; Antverg & Belinkov 2022): ``linear_probe`` elastic-net probe +
  ``get_neuron_ordering`` and ``probeless.get_neuron_ordering``. Install into the venv with
  ``pip install --no-deps neurox==1.0.9 imbalanced-learn sklearn-compat`` (its own pins are ancient;
  imbalanced-learn needs sklearn-compat, which --no-deps skips).
- TransformerLens 4 ``tools.analysis.sparse_probing`` (k-sparse probe, support chosen by the
  absolute train class-mean difference, Gurnee et al. 2023 style).

Each ``*_order`` function takes (A, y) and returns a permutation of range(d_mlp), best first, or
raises ``PeerUnavailable`` saying why the peer cannot run. ``python benchmarks/peers.py`` times the
peers and compares them with ``sparseprobe_core.rankers`` on a planted toy.
"""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np


class PeerUnavailable(RuntimeError):
    """An external peer cannot run here (missing package or incompatible version)."""


def _neurox():
    """Import NeuroX's interpretation modules, or raise PeerUnavailable with the install line."""
    try:
        from neurox.interpretation import linear_probe, probeless
        from neurox.interpretation import utils as neurox_utils
    except ImportError as error:
        raise PeerUnavailable(
            f"NeuroX cannot be imported ({error}); install it with "
            "`pip install --no-deps neurox==1.0.9 imbalanced-learn sklearn-compat`"
        ) from error
    # Inside a Jupyter kernel NeuroX picks a widget progress bar, which needs ipywidgets (not a
    # dependency here); its plain text bar changes nothing else.
    neurox_utils.isnotebook = lambda: False
    return linear_probe, probeless


def _check_order(order, d_mlp: int, peer: str) -> np.ndarray:
    """The peer's order as an int array, after checking it is a permutation of range(d_mlp)."""
    order = np.asarray(order, dtype=np.int64)
    if not np.array_equal(np.sort(order), np.arange(d_mlp)):
        raise PeerUnavailable(f"{peer} returned {len(order)} indices, not a permutation of {d_mlp}")
    return order


def neurox_probeless_order(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """NeuroX ``probeless.get_neuron_ordering`` (Antverg & Belinkov 2022) on (A, y)."""
    _, probeless = _neurox()
    order = probeless.get_neuron_ordering(np.asarray(A), np.asarray(y))
    return _check_order(order, A.shape[1], "NeuroX probeless")


def neurox_linear_probe_order(
    A: np.ndarray,
    y: np.ndarray,
    lambda_l1: float = 1e-3,
    lambda_l2: float = 1e-3,
    num_epochs: int = 10,
    seed: int = 0,
    search_stride: int = 100,
) -> np.ndarray:
    """NeuroX elastic-net probe (its Adam trainer, defaults of its tutorials) + get_neuron_ordering.

    Raw activations, as in NeuroX's pipeline; ``torch.manual_seed(seed)`` fixes its init and
    batches. Within one weight-mass step NeuroX's order is a set's iteration order.
    """
    linear_probe, _ = _neurox()
    import torch

    torch.manual_seed(seed)
    X = np.ascontiguousarray(A, dtype=np.float32)
    labels = np.asarray(y, dtype=np.int64)
    threads = torch.get_num_threads()
    # Batches of 32 through one linear layer: extra threads only contend (measured 60x slower
    # with 2 threads on the 2 shared cores), so train on one thread and restore the setting.
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            probe = linear_probe.train_logistic_regression_probe(
                X, labels, lambda_l1=lambda_l1, lambda_l2=lambda_l2, num_epochs=num_epochs
            )
            class_to_idx = {int(c): int(c) for c in np.unique(labels)}
            order, _ = linear_probe.get_neuron_ordering(probe, class_to_idx, search_stride)
    finally:
        torch.set_num_threads(threads)
    # get_neuron_ordering leaves out neurons whose probe weight is exactly zero: they rank last, in
    # index order (this only matters for keep-top-k at k close to d_mlp).
    order = np.asarray(order, dtype=np.int64)
    order = np.concatenate([order, np.setdiff1d(np.arange(A.shape[1]), order)])
    return _check_order(order, A.shape[1], "NeuroX linear_probe.get_neuron_ordering")


def _sparse_probing():
    """Import TransformerLens's sparse_probing module, or raise PeerUnavailable."""
    try:
        from transformer_lens.tools.analysis import sparse_probing
    except ImportError as error:
        raise PeerUnavailable(
            f"transformer_lens.tools.analysis.sparse_probing cannot be imported ({error}); "
            "it ships with transformer-lens 4.x"
        ) from error
    return sparse_probing


def transformer_lens_sparse_probe(A: np.ndarray, y: np.ndarray, k: int, seed: int = 0, **kwargs):
    """TransformerLens ``fit_sparse_probe`` result (own 70/30 split, selects on its train part)."""
    import torch

    return _sparse_probing().fit_sparse_probe(
        torch.as_tensor(np.asarray(A, dtype=np.float64)),
        torch.as_tensor(np.asarray(y, dtype=np.int64)),
        k=k,
        seed=seed,
        **kwargs,
    )


def transformer_lens_sparse_probe_order(
    A: np.ndarray, y: np.ndarray, k: int = 10, seed: int = 0, **kwargs
) -> np.ndarray:
    """Neuron order of TransformerLens's k-sparse probe: its top-k support, then the rest.

    TL returns the top-k support it selected (by |train class-mean difference|) and the score of
    every feature; the rest of the order applies TL's own selection rule to those scores
    (stable argsort of |score|, descending), checked to reproduce its support.
    """
    import torch

    result = transformer_lens_sparse_probe(A, y, k=k, seed=seed, **kwargs)
    order = torch.argsort(result.feature_scores.abs(), descending=True, stable=True).numpy()
    support = result.selected_features.numpy()
    if not np.array_equal(order[: len(support)], support):
        raise PeerUnavailable("TransformerLens's selection rule changed; its support != our order")
    return _check_order(order, A.shape[1], "TransformerLens sparse_probing")


def transformer_lens_sparse_probe_sweep(
    A: np.ndarray, y: np.ndarray, ks, seed: int = 0, **kwargs
):
    """TransformerLens ``sweep_sparse_probe`` (held-out AUROC per k, optional random controls)."""
    import torch

    return _sparse_probing().sweep_sparse_probe(
        torch.as_tensor(np.asarray(A, dtype=np.float64)),
        torch.as_tensor(np.asarray(y, dtype=np.int64)),
        ks=list(ks),
        seed=seed,
        **kwargs,
    )


PEERS = {
    "neurox_probeless": neurox_probeless_order,
    "neurox_linear_probe": neurox_linear_probe_order,
    "tl_sparse_probe": transformer_lens_sparse_probe_order,
}


def main(n: int = 1000, d_mlp: int = 1536, d_model: int = 576, seed: int = 0) -> None:
    """Time each peer on a planted toy and print its rank correlation with our rankers."""
    from scipy.stats import spearmanr

    from sparseprobe_core.rankers import RankContext, rank

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    A = rng.normal(size=(n, d_mlp))
    concept = rng.choice(d_mlp, 20, replace=False)
    A[:, concept] += 0.8 * y[:, None]
    ctx = RankContext(A, y, rng.normal(size=(d_mlp, d_model)) / 24, np.zeros(d_model), seed)
    ours = {m: rank(m, ctx) for m in ("probeless", "mean_diff", "elastic_net")}
    pairs = {"neurox_probeless": "probeless", "neurox_linear_probe": "elastic_net",
             "tl_sparse_probe": "mean_diff"}
    for name, peer in PEERS.items():
        start = time.perf_counter()
        try:
            order = peer(A, y)
        except PeerUnavailable as error:
            print(f"{name}: cannot run: {error}")
            continue
        seconds = time.perf_counter() - start
        rho = spearmanr(np.argsort(order), np.argsort(ours[pairs[name]])).statistic
        hits = len(set(order[:20]) & set(concept))
        print(f"{name}: {seconds:.2f}s, Spearman vs ours ({pairs[name]}) {rho:.4f}, "
              f"planted concept neurons in its top 20: {hits}/20")


if __name__ == "__main__":
    main()
