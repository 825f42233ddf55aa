"""Control labels and control neuron sets for the limitations notebook (paper claim 5).

A probe's accuracy on a concept mixes what the model encodes with what the probe can fit. Hewitt &
Liang (2019) separate the two with a *control task*: labels with the concept's label frequencies but
no concept, assigned by a random function of the word type, so a probe can only succeed on it by
memorising token identity. Selectivity = concept score - control score.
"""

from __future__ import annotations

import numpy as np


def random_labels(y: np.ndarray, seed: int) -> np.ndarray:
    """A random permutation of y: the same class counts, no relation to the inputs at all."""
    return np.random.default_rng(seed).permutation(np.asarray(y))


def control_labels(token_ids: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Control task (Hewitt & Liang 2019): one random label per distinct probed token id.

    The distinct ids are put in a random order and the first ones, covering as close to
    ``sum(y)`` examples as whole types allow, get label 1 (a type goes to class 1 iff the midpoint
    of its count falls below ``sum(y)``). Identical tokens always share a label, so the labels
    depend on the input only through token identity. When one token dominates the data the class
    frequencies can only be matched approximately; a single class raises ValueError.
    """
    token_ids, y = np.asarray(token_ids), np.asarray(y)
    if token_ids.shape != y.shape or token_ids.ndim != 1:
        raise ValueError(f"token_ids has shape {token_ids.shape} and y {y.shape}; pass one probed token id per example")
    types, inverse, counts = np.unique(token_ids, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(types))
    before = np.cumsum(counts[order]) - counts[order]
    label_of_type = np.zeros(len(types), dtype=np.int64)
    label_of_type[order] = (before + counts[order] / 2 < int(np.sum(y == 1))).astype(np.int64)
    labels = label_of_type[inverse]
    if labels.min() == labels.max():
        raise ValueError(
            f"the {len(types)} distinct probed tokens give the control task one class "
            "only; it needs a concept whose examples end in varied tokens"
        )
    return labels


def loud_idle_neurons(A: np.ndarray, W_out: np.ndarray, direction: np.ndarray, k: int) -> np.ndarray:
    """The k neurons with the largest mean |a_i| among the half with the smallest |W_out[i] . d|.

    "Loud but idle": highly active, yet writing little along the concept direction d (small
    writing norm or poor alignment). Ordered by mean |a_i|, largest first.
    """
    beta = np.abs(np.asarray(W_out) @ (np.asarray(direction) / np.linalg.norm(direction)))
    idle = np.flatnonzero(beta <= np.median(beta))
    if not 1 <= k <= len(idle):
        raise ValueError(
            f"k={k} but only {len(idle)} neurons are in the low-|W_out . d| half; pass 1 <= k <= {len(idle)}"
        )
    loudness = np.abs(np.asarray(A)).mean(axis=0)[idle]
    return idle[np.argsort(-loudness, kind="stable")[:k]]
