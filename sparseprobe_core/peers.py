"""External neuron-ranking peers, run by their own code on our activations (an optional extra).

- NeuroX 1.0.9 (Dalvi et al. 2019; Antverg & Belinkov 2022): ``linear_probe`` elastic-net probe +
  ``get_neuron_ordering``, and ``probeless.get_neuron_ordering``.
- TransformerLens 4 ``tools.analysis.sparse_probing.fit_sparse_probe`` (k-sparse probe, support
  chosen by the absolute train class-mean difference, Gurnee et al. 2023 style).

Every peer has one signature, ``peer(A, y, *, seed) -> order`` (a permutation of range(d_mlp), best
first), and raises ``PeerUnavailable`` saying why it cannot run. Install: ``pip install -e .[peers]``
for their run-time needs, then ``pip install --no-deps neurox==1.0.9``: NeuroX's own metadata pins
its 2021 stack (torch 1.8.1, transformers 4.6.1, ...), which cannot be installed beside this one,
while the ``interpretation`` modules used here run unchanged on it. ``./run_all.sh`` does both.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

NEUROX_EPOCHS = 50  # NeuroX's Adam epochs for the elastic-net probe (its tutorials use 10; 50 converge here)
NEUROX_LAMBDA = 1e-3  # lambda_l1 = lambda_l2, the defaults of NeuroX's tutorials
TL_SUPPORT = 10  # TransformerLens's k-sparse support size; the rest of the order follows its own score
INSTALL = "pip install -e '.[peers]' && pip install --no-deps neurox==1.0.9 (./run_all.sh does it)"


class PeerUnavailable(RuntimeError):
    """An external peer cannot run here (missing package or incompatible version)."""


def neurox_modules():
    """NeuroX's ``linear_probe`` and ``probeless`` modules, or PeerUnavailable with the install line."""
    try:
        from neurox.interpretation import linear_probe, probeless
        from neurox.interpretation import utils as neurox_utils
    except ImportError as error:
        raise PeerUnavailable(f"NeuroX cannot be imported ({error}); install it with {INSTALL}") from None
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


def neurox_probeless(A: np.ndarray, y: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """NeuroX ``probeless.get_neuron_ordering`` (Antverg & Belinkov 2022) on (A, y); deterministic, so
    `seed` is unused."""
    _, probeless = neurox_modules()
    order = probeless.get_neuron_ordering(np.asarray(A), np.asarray(y))
    return _check_order(order, A.shape[1], "NeuroX probeless")


@contextlib.contextmanager
def _one_torch_thread():
    """Batches of 32 through one linear layer: extra threads only contend (measured 60x slower with 2
    threads on the 2 shared cores), so NeuroX trains on one thread; the setting is restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def neurox_linear_probe(A: np.ndarray, y: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """NeuroX's elastic-net probe (its Adam trainer on raw activations, as in NeuroX's pipeline) +
    ``get_neuron_ordering``; ``torch.manual_seed(seed)`` fixes its init and batches. Within one
    weight-mass step NeuroX's order is a set's iteration order."""
    linear_probe, _ = neurox_modules()
    import torch

    torch.manual_seed(seed)
    X = np.ascontiguousarray(A, dtype=np.float32)
    labels = np.asarray(y, dtype=np.int64)
    with _one_torch_thread(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        probe = linear_probe.train_logistic_regression_probe(
            X, labels, lambda_l1=NEUROX_LAMBDA, lambda_l2=NEUROX_LAMBDA, num_epochs=NEUROX_EPOCHS
        )
        order, _ = linear_probe.get_neuron_ordering(probe, {int(c): int(c) for c in np.unique(labels)}, 100)
    # get_neuron_ordering leaves out neurons whose probe weight is exactly zero: they rank last, in
    # index order (this only matters for keep-top-k at k close to d_mlp).
    order = np.asarray(order, dtype=np.int64)
    order = np.concatenate([order, np.setdiff1d(np.arange(A.shape[1]), order)])
    return _check_order(order, A.shape[1], "NeuroX linear_probe.get_neuron_ordering")


def tl_sparse_probe(A: np.ndarray, y: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Neuron order of TransformerLens's k-sparse probe (k = TL_SUPPORT): its support, then the rest.

    TL returns the support it selected (by |train class-mean difference|, on its own 70/30 split) and
    the score of every feature; the rest of the order applies TL's own selection rule to those scores
    (stable argsort of |score|, descending), checked to reproduce its support.
    """
    try:
        import torch
        from transformer_lens.tools.analysis import sparse_probing
    except ImportError as error:
        raise PeerUnavailable(f"transformer_lens.tools.analysis.sparse_probing cannot be imported ({error})") from None
    result = sparse_probing.fit_sparse_probe(
        torch.as_tensor(np.asarray(A, dtype=np.float64)),
        torch.as_tensor(np.asarray(y, dtype=np.int64)),
        k=TL_SUPPORT,
        seed=seed,
    )
    order = torch.argsort(result.feature_scores.abs(), descending=True, stable=True).numpy()
    support = result.selected_features.numpy()
    if not np.array_equal(order[: len(support)], support):
        raise PeerUnavailable("TransformerLens's selection rule changed; its support != our order")
    return _check_order(order, A.shape[1], "TransformerLens sparse_probing")


PEERS = {
    "neurox_probeless": neurox_probeless,
    "neurox_linear_probe": neurox_linear_probe,
    "tl_sparse_probe": tl_sparse_probe,
}


def available(require: bool) -> tuple[list[str], dict[str, str]]:
    """The peers that run here (checked on a tiny problem) and, for the others, why not.

    With `require`, a peer that cannot run is an error (the paper profile must not lose methods
    silently); without, it is reported and left out."""
    rng = np.random.default_rng(0)
    A, y = rng.normal(size=(40, 32)), np.repeat([0, 1], 20)
    ok, why = [], {}
    for name, peer in PEERS.items():
        try:
            peer(A, y, seed=0)
            ok.append(name)
        except PeerUnavailable as error:
            why[name] = str(error).splitlines()[0]
    if require and why:
        raise PeerUnavailable("; ".join(f"{name}: {reason}" for name, reason in why.items()))
    return ok, why
