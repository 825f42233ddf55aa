"""Tests for sparseprobe_core.rankers."""

import numpy as np
import pytest

from sparseprobe_core.prober import SparseProber, prober_path
from sparseprobe_core.rankers import (
    RANKERS,
    RankContext,
    _mass_entry_fraction,
    concept_direction,
    paper_path,
    probeless_scores,
    rank,
)

CONCEPT = np.array([7, 23, 41, 55])
LOUD_NOISE = np.array([3, 30])  # huge but label-independent activations


def planted(n: int = 300, d_mlp: int = 64, d_model: int = 16, seed: int = 0) -> RankContext:
    """Concept neurons shift by 1.5 sd with the label and write along one shared output direction (as a
    concept feature is written); two noise neurons sit at ~20 (loud)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    A = rng.normal(size=(n, d_mlp))
    A[:, CONCEPT] += 1.5 * y[:, None]
    A[:, LOUD_NOISE] += 20.0
    W_out = rng.normal(size=(d_mlp, d_model))
    # without a shared direction, a concept neuron that happens to write almost orthogonally to the
    # concept direction is rightly ranked low by the contribution-weighted prober
    W_out[CONCEPT] += 2.0 * np.eye(d_model)[0]
    b_out = rng.normal(size=d_model)
    grad = rng.normal(size=(n, d_mlp))
    return RankContext(A=A, y=y, W_out=W_out, b_out=b_out, seed=seed, grad=grad)


@pytest.fixture(scope="module")
def ctx() -> RankContext:
    return planted()


@pytest.mark.parametrize("method", sorted(RANKERS))
def test_every_method_is_a_deterministic_permutation(ctx, method):
    order = rank(method, ctx)
    assert np.array_equal(np.sort(order), np.arange(ctx.A.shape[1]))
    assert np.array_equal(order, rank(method, ctx))


def test_random_changes_with_seed(ctx):
    other = RankContext(A=ctx.A, y=ctx.y, W_out=ctx.W_out, b_out=ctx.b_out, seed=ctx.seed + 1)
    assert not np.array_equal(rank("random", ctx), rank("random", other))


LABEL_AWARE = ["mean_diff", "f_stat", "probeless", "dense_l2", "l1_probe", "elastic_net"]


@pytest.mark.parametrize("method", LABEL_AWARE + [m for m in RANKERS if m.startswith("sparse_")])
def test_label_aware_methods_put_concept_neurons_on_top(ctx, method):
    assert set(rank(method, ctx)[: len(CONCEPT)]) == set(CONCEPT)


def test_act_magnitude_prefers_loud_noise(ctx):
    top = rank("act_magnitude", ctx)[: len(CONCEPT)]
    assert set(LOUD_NOISE) <= set(top)
    assert not set(CONCEPT) <= set(top)


def test_probeless_equals_mean_diff_for_two_classes(ctx):
    assert np.array_equal(rank("probeless", ctx), rank("mean_diff", ctx))


def test_probeless_general_formula_over_three_classes():
    rng = np.random.default_rng(3)
    A, y = rng.normal(size=(90, 5)), np.repeat([0, 1, 2], 30)
    mu = [A[y == c].mean(axis=0) for c in range(3)]
    expected = np.abs(mu[0] - mu[1]) + np.abs(mu[0] - mu[2]) + np.abs(mu[1] - mu[2])
    ctx = RankContext(A=A, y=y, W_out=np.eye(5), b_out=np.zeros(5))
    assert np.allclose(probeless_scores(ctx), expected)


def test_direct_effect_follows_writing_norm_and_zero_writer_is_last():
    rng = np.random.default_rng(1)
    d_mlp = 32
    A = np.tile(rng.normal(size=(100, 1)), (1, d_mlp))  # identical activations for every neuron
    W_out = rng.normal(size=(d_mlp, 8))
    W_out[5] = 0.0
    ctx = RankContext(A=A, y=np.repeat([0, 1], 50), W_out=W_out, b_out=np.zeros(8))
    order = rank("direct_effect", ctx)
    assert order[-1] == 5
    assert np.array_equal(order, np.argsort(-np.linalg.norm(W_out, axis=1), kind="stable"))


def test_grad_x_act_model_uses_grad_and_needs_it(ctx):
    expected = np.argsort(-np.abs(ctx.A * ctx.grad).mean(axis=0), kind="stable")
    assert np.array_equal(rank("grad_x_act_model", ctx), expected)
    bare = RankContext(A=ctx.A, y=ctx.y, W_out=ctx.W_out, b_out=ctx.b_out)
    with pytest.raises(ValueError, match=r"RankContext\.grad"):
        rank("grad_x_act_model", bare)


def test_grad_x_act_probe_uses_given_direction(ctx):
    direction = np.random.default_rng(2).normal(size=ctx.W_out.shape[1])
    with_dir = RankContext(A=ctx.A, y=ctx.y, W_out=ctx.W_out, b_out=ctx.b_out, direction=direction)
    scores = np.abs(ctx.A).mean(axis=0) * np.abs(ctx.W_out @ direction)
    assert np.array_equal(rank("grad_x_act_probe", with_dir), np.argsort(-scores, kind="stable"))


def test_sparse_prober_rankers_are_the_path_entry_order_and_the_coefw_fit(ctx):
    st = ctx.settings
    path = prober_path(
        ctx.A,
        ctx.y,
        weighting="norm",
        W_out=ctx.W_out,
        n_strengths=st.path_n_strengths,
        c_max_ratio=st.path_c_max_ratio,
        seed=ctx.seed,
    ).ranking
    assert np.array_equal(rank("sparse_prober_norm", ctx), path)
    d = concept_direction(ctx)
    prober = SparseProber(weighting="contribution", W_out=ctx.W_out, direction=d, k=st.coefw_k, seed=ctx.seed)
    assert np.array_equal(rank("sparse_prober_contribution_coefw", ctx), prober.fit(ctx.A, ctx.y).ranking_)


def test_mass_entry_fraction_is_neurox_cumulative_mass():
    # row 0 sorted by |w|: 0 (3), 3 (2), 1 (1), 2 (0) -> mass before entry 0, 3/6, 5/6, 6/6
    assert np.allclose(_mass_entry_fraction(np.array([[3.0, -1, 0, 2]])), [0, 5 / 6, 1, 1 / 2])
    two_rows = np.array([[3.0, -1, 0, 2], [0.0, 0, 1, 0]])  # neuron 2 leads row 1
    assert np.allclose(_mass_entry_fraction(two_rows), [0, 5 / 6, 0, 1 / 2])


def test_unknown_method_lists_valid_names(ctx):
    with pytest.raises(ValueError, match="valid: random, act_magnitude"):
        rank("nope", ctx)


def test_shape_mismatch_is_rejected(ctx):
    bad = RankContext(A=ctx.A, y=ctx.y, W_out=ctx.W_out[:-1], b_out=ctx.b_out)
    with pytest.raises(ValueError, match="same layer"):
        rank("mean_diff", bad)


def test_paper_path_counts_the_neurons_ordered_by_entry(ctx):
    st = ctx.settings
    d = concept_direction(ctx)
    steps = prober_path(
        ctx.A,
        ctx.y,
        weighting="contribution",
        W_out=ctx.W_out,
        direction=d,
        n_strengths=st.path_n_strengths,
        c_max_ratio=st.path_c_max_ratio,
        seed=ctx.seed,
    ).entry_step
    path = paper_path(ctx)
    n = path.n_entered
    assert n == (steps >= 0).sum() and 0 < n <= ctx.A.shape[1]
    # notebook 03 takes the paper's ranking from this one walk instead of rank(), which would walk again
    assert np.array_equal(rank("sparse_prober_contribution", ctx), path.ranking)
    assert set(rank("sparse_prober_contribution", ctx)[:n]) == set(np.flatnonzero(steps >= 0))
