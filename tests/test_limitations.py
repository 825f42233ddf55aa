"""Control labels and control neuron sets of the limitations notebook (sparseprobe_core.controls)."""

import numpy as np
import pytest

from sparseprobe_core.controls import control_labels, loud_idle_neurons, random_labels


def test_random_labels_keep_counts_and_break_the_concept(rng):
    y = np.repeat([0, 1], 500)
    r = random_labels(y, seed=3)
    assert np.bincount(r).tolist() == [500, 500]
    assert abs(np.mean(r == y) - 0.5) < 0.06
    assert np.array_equal(r, random_labels(y, seed=3))


def test_control_labels_are_a_function_of_the_token_and_keep_frequencies(rng):
    tokens = rng.integers(0, 300, size=2000)
    y = rng.permutation(np.r_[np.ones(600, int), np.zeros(1400, int)])
    c = control_labels(tokens, y, seed=0)
    for t in np.unique(tokens):
        assert len(set(c[tokens == t].tolist())) == 1  # identical tokens share a label
    assert abs(c.sum() - 600) <= np.bincount(tokens).max()  # frequency kept up to one type
    assert not np.array_equal(c, control_labels(tokens, y, seed=1))


def test_control_labels_refuse_a_single_class():
    with pytest.raises(ValueError, match="one class"):
        control_labels(np.full(50, 7), np.r_[np.zeros(25, int), np.ones(25, int)], seed=0)


def test_loud_idle_neurons_are_loud_and_write_little(rng):
    W_out = rng.normal(size=(40, 8))
    d = np.zeros(8)
    d[0] = 1.0
    W_out[:5, 0] = 0.0  # neurons 0-4 write nothing along d ...
    A = rng.normal(size=(100, 40))
    A[:, :5] += 10.0  # ... and are the loudest
    A[:, 5:10] += 20.0  # louder still, but they write along d
    W_out[5:10, 0] = 5.0
    assert sorted(loud_idle_neurons(A, W_out, d, 5).tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="pass 1 <= k"):
        loud_idle_neurons(A, W_out, d, 30)
