"""Tests for sparseprobe_core.theory: the reduction identity, the column-space projection, the
noise-neuron criterion on planted ground truth, and input validation."""

from functools import cache

import numpy as np
import pytest
import torch

from sparseprobe_core import theory as T

N, D_MODEL, D_MLP = 300, 64, 256


def _random_mlp_weights(seed: int, gated: bool):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D_MODEL, generator=g, dtype=torch.float64)
    W_in = torch.randn(D_MODEL, D_MLP, generator=g, dtype=torch.float64) / D_MODEL**0.5
    W_out = torch.randn(D_MLP, D_MODEL, generator=g, dtype=torch.float64) / D_MLP**0.5
    b_out = torch.randn(D_MODEL, generator=g, dtype=torch.float64)
    if gated:  # Llama / SmolLM2 style: a = silu(W_gate x) * (W_up x), no biases
        W_up = torch.randn(D_MODEL, D_MLP, generator=g, dtype=torch.float64) / D_MODEL**0.5
        a = torch.nn.functional.silu(x @ W_in) * (x @ W_up)
    else:  # GPT-2 style: a = gelu(W_in x + b_in)
        b_in = torch.randn(D_MLP, generator=g, dtype=torch.float64)
        a = torch.nn.functional.gelu(x @ W_in + b_in)
    m = a @ W_out + b_out
    return a.numpy(), W_out.numpy(), b_out.numpy(), m.numpy()


@pytest.mark.parametrize("gated", [False, True], ids=["dense_gelu", "gated_silu"])
def test_output_probe_equals_neuron_probe(gated):
    A, W_out, b_out, M = _random_mlp_weights(seed=1, gated=gated)
    rng = np.random.default_rng(2)
    w, c = rng.standard_normal(D_MODEL), 0.7
    s_out = M @ w + c
    s_neuron = T.output_to_neuron_score(A, W_out, b_out, w, c)
    assert T.max_relative_difference(s_out, s_neuron) < 1e-10
    # the same score as a sum of per-neuron contributions plus the constant
    C = T.neuron_contributions(A, T.effective_neuron_weights(W_out, w))
    assert T.max_relative_difference(s_out, C.sum(axis=1) + w @ b_out + c) < 1e-10


def test_contribution_decomposition_factors_beta():
    A, W_out, _, _ = _random_mlp_weights(seed=3, gated=False)
    w = np.random.default_rng(4).standard_normal(D_MODEL)
    y = np.arange(N) % 2
    dec = T.contribution_decomposition(A, W_out, w, y)
    np.testing.assert_allclose(dec.beta, W_out @ w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dec.writing_norm * np.linalg.norm(w) * dec.cos_theta, W_out @ w, rtol=1e-12, atol=1e-12)
    assert np.all(np.abs(dec.cos_theta) <= 1 + 1e-12)
    np.testing.assert_allclose(
        dec.mean_activation_by_class.mean(axis=0), dec.mean_activation, rtol=1e-12, atol=1e-12
    )  # balanced classes


def test_writable_projection_of_an_output_probe_has_no_remainder():
    rng = np.random.default_rng(5)
    W_out = rng.standard_normal((D_MLP, D_MODEL))
    v = W_out @ rng.standard_normal(D_MODEL)
    proj = T.writable_projection(W_out, v)
    assert np.linalg.norm(proj.v_perp) < 1e-10 * np.linalg.norm(v)
    np.testing.assert_allclose(W_out @ proj.w, v, rtol=1e-10, atol=1e-10)
    assert proj.outside_fraction < 1e-20


def test_writable_projection_splits_a_free_neuron_probe():
    rng = np.random.default_rng(6)
    W_out = rng.standard_normal((D_MLP, D_MODEL))
    v = rng.standard_normal(D_MLP)
    v_par, v_perp, w = T.writable_projection(W_out, v)
    np.testing.assert_allclose(v_par + v_perp, v, rtol=0, atol=1e-12)
    assert np.max(np.abs(W_out.T @ v_perp)) < 1e-9  # orthogonal to every column of W_out
    np.testing.assert_allclose(W_out @ w, v_par, rtol=1e-10, atol=1e-10)
    # a random direction in R^256 has ~ (256 - 64) / 256 of its energy outside a 64-dim subspace
    frac = T.writable_projection(W_out, v).outside_fraction
    assert abs(frac - (D_MLP - D_MODEL) / D_MLP) < 0.1


def test_noise_scores_match_brute_force_removal():
    rng = np.random.default_rng(7)
    n, d = 400, 12
    y = np.arange(n) % 2
    latent = rng.standard_normal((n, 1))  # correlated contributions, so g_i != Sigma_ii
    C = rng.standard_normal((n, d)) + latent * rng.uniform(0, 1, d) + np.outer(y, rng.uniform(0, 1, d))
    scores = T.noise_scores(C, y, ridge=0.0)
    J_all = T.fisher_ratio(C.sum(axis=1), y)
    brute = np.array([T.fisher_ratio(np.delete(C, i, axis=1).sum(axis=1), y) - J_all for i in range(d)])
    np.testing.assert_allclose(scores, brute, rtol=1e-9, atol=1e-12)
    order = rng.permutation(d)
    curve = T.fisher_curve(C, y, order)
    assert curve[4] == pytest.approx(T.fisher_ratio(C[:, order[:5]].sum(axis=1), y), rel=1e-12)


K_TRUE = 32


@cache  # shared by the precision and the k tests; results are only read
def _planted_recovery(seed: int, hard: bool) -> dict:
    """Fit the output probe on one half, run every ranking on the other half."""
    P = T.planted_mlp(n=1000, d_mlp=512, d_model=128, k_true=K_TRUE, seed=seed, hard=hard)
    idx = np.random.default_rng(seed).permutation(P.y.shape[0])
    fit, crit = idx[:500], idx[500:]
    w, _ = T.fit_output_probe(P.M[fit], P.y[fit], seed=seed)
    C = T.neuron_contributions(P.A[crit], T.effective_neuron_weights(P.W_out, w))
    A, y = P.A[crit], P.y[crit]
    res = T.select_by_noise_removal(C, y)
    orders = {
        "criterion": res.order,
        "mean_abs_activation": np.argsort(-np.abs(A).mean(axis=0), kind="stable"),
        "mean_difference": np.argsort(-np.abs(A[y == 1].mean(axis=0) - A[y == 0].mean(axis=0)), kind="stable"),
    }
    return {
        "precision": {m: T.precision_at_k(o, P.true_idx, K_TRUE) for m, o in orders.items()},
        "recall": {m: T.recall_at_k(o, P.true_idx, K_TRUE) for m, o in orders.items()},
        "k": res.k,
        "kept": res.kept,
        "planted": P,
    }


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "easy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_criterion_recovers_planted_concept_neurons(seed, hard):
    out = _planted_recovery(seed, hard)
    p = out["precision"]
    assert p["criterion"] >= p["mean_difference"]
    assert p["criterion"] >= p["mean_abs_activation"]
    if hard:  # loud noise neurons fill the top of the activation-magnitude ranking
        assert p["criterion"] - p["mean_abs_activation"] >= 0.5
    else:
        assert p["criterion"] >= 0.9


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "easy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_criterion_chooses_k_near_the_label_visible_set(seed, hard):
    """K should match true_idx plus the decoys: the decoys' class signal is visible to any
    label-trained probe, so the rule keeps them (documented in planted_mlp); nothing else."""
    out = _planted_recovery(seed, hard)
    P, kept = out["planted"], out["kept"]
    visible = np.union1d(P.true_idx, P.decoy_idx)
    assert abs(out["k"] - visible.size) <= 0.25 * K_TRUE
    assert np.isin(P.true_idx, kept).mean() >= 0.9  # recall of the kept set
    assert np.setdiff1d(kept, visible).size <= 2  # pure-noise false positives
    assert not np.isin(P.loud_idx, kept).any()
    assert np.isin(P.weak_writer_idx, kept).mean() >= 0.8 if hard else True


def test_planted_generator_is_deterministic_and_consistent():
    a, b = T.planted_mlp(seed=3), T.planted_mlp(seed=3)
    np.testing.assert_array_equal(a.A, b.A)
    assert a.true_idx.size == 16 and not np.isin(a.decoy_idx, a.true_idx).any()
    assert np.abs(a.W_out[a.decoy_idx] @ a.concept_dir).max() < 1e-12
    # concept neurons move the output along u with the class; loud neurons are loud
    y = a.y
    shift_u = (a.A[y == 1].mean(0) - a.A[y == 0].mean(0)) * (a.W_out @ a.concept_dir)
    assert np.all(shift_u[a.true_idx] > 0)
    assert np.abs(a.A[:, a.loud_idx]).mean() > 3 * np.abs(a.A[:, a.true_idx]).mean()


@pytest.mark.parametrize(
    "call, fragment",
    [
        (
            lambda: T.output_to_neuron_score(np.ones((5, 8)), np.ones((6, 4)), np.zeros(4), np.ones(4)),
            "A has 8 columns but W_out has 6 rows",
        ),
        (
            lambda: T.neuron_contributions(np.ones((5, 8)), T.effective_neuron_weights(np.ones((4, 8)), np.ones(8))),
            "beta has shape (4,) but A has 8 columns",
        ),
        (lambda: T.contribution_decomposition(np.ones((5, 8)), np.ones((4, 8)), np.ones(4)), "pass W_out.T"),
        (lambda: T.effective_neuron_weights(np.ones((8, 4)), np.ones(5)), "w has shape (5,)"),
        (
            lambda: T.output_to_neuron_score(np.ones((5, 8)), np.ones((8, 4)), np.zeros(3), np.ones(4)),
            "b_out has shape (3,)",
        ),
        (lambda: T.writable_projection(np.ones((8, 4)), np.ones(4)), "v has shape (4,)"),
        (lambda: T.noise_scores(np.ones((6, 3)), np.array([0, 1, 0, 1, 0])), "y has shape (5,)"),
        (
            lambda: T.select_by_noise_removal(np.ones((6, 3)), np.zeros(6, dtype=int)),
            "6 rows of class 0 and 0 of class 1",
        ),
        (lambda: T.noise_scores(np.ones((4, 3)), np.array([0, 2, 0, 2])), "only 0 and 1"),
        (lambda: T.precision_at_k(np.arange(5), np.array([1]), 6), "k=6"),
        (
            lambda: T.select_by_noise_removal(np.ones((6, 3)), np.array([0, 1] * 3), threshold="bonferroni"),
            "threshold='bonferroni'",
        ),
        (
            lambda: T.select_by_noise_removal(np.ones((6, 3)), np.array([0, 1] * 3), tau=2.0, threshold="bh"),
            "pass tau=None",
        ),
        (lambda: T.bh_t_threshold(np.ones(4), fdr=1.5), "fdr=1.5"),
        (lambda: T.bh_t_threshold(np.ones((2, 2))), "t has shape (2, 2)"),
        (lambda: T.bh_t_threshold(np.ones(4), df=0), "df=0"),
    ],
)
def test_malformed_input_raises_one_line_value_error(call, fragment):
    with pytest.raises(ValueError) as err:
        call()
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# named variant of the rule: Benjamini-Hochberg instead of the universal threshold
# ---------------------------------------------------------------------------------------------


def test_default_rule_is_the_universal_threshold():
    P = T.planted_mlp(n=400, d_mlp=256, k_true=16, seed=4, hard=False)
    C = T.neuron_contributions(P.A, T.effective_neuron_weights(P.W_out, P.concept_dir))
    default = T.select_by_noise_removal(C, P.y)
    named = T.select_by_noise_removal(C, P.y, threshold="universal")
    assert default.tau == pytest.approx(np.sqrt(2 * np.log(256)))
    np.testing.assert_array_equal(default.kept, named.kept)
    np.testing.assert_array_equal(default.order, named.order)


def _bh_brute_force(t, fdr, df):
    """Textbook BH on one-sided p-values (normal, or Student t with df): the set of rejected indices."""
    from scipy import stats

    p = stats.norm.sf(t) if df is None else stats.t.sf(t, df)
    d = p.size
    k_max = max((k for k in range(1, d + 1) if np.sort(p)[k - 1] <= fdr * k / d), default=0)
    return set(np.flatnonzero(p <= np.sort(p)[k_max - 1])) if k_max else set()


@pytest.mark.parametrize("df", [None, 60])
@pytest.mark.parametrize("n_signal", [0, 1, 20, 200])
def test_bh_t_threshold_matches_textbook_bh(n_signal, df):
    rng = np.random.default_rng(n_signal)
    t = rng.standard_normal(500)
    t[:n_signal] += rng.uniform(2, 5, n_signal)
    tau = T.bh_t_threshold(t, fdr=0.1, df=df)
    assert set(np.flatnonzero(t >= tau)) == _bh_brute_force(t, 0.1, df)
    if n_signal >= 20:  # many significant neurons: BH is more lenient than the universal threshold
        assert tau < np.sqrt(2 * np.log(500))


def test_bh_variant_holds_its_level_under_the_global_null():
    """No neuron has a class difference: any selection is a false discovery, so FDR = P(k > 0) <= 0.1."""
    rng = np.random.default_rng(0)
    y = np.arange(100) % 2
    any_selected = [
        T.select_by_noise_removal(rng.standard_normal((100, 500)), y, threshold="bh").k > 0 for _ in range(200)
    ]
    assert np.mean(any_selected) <= 0.15  # 0.1 plus ~2 binomial standard errors over 200 runs


def test_bh_variant_keeps_more_planted_neurons_at_small_n():
    """At n = 200 (100 rows for the rule) the universal threshold is what makes the rule strict."""
    P = T.planted_mlp(n=200, d_mlp=512, d_model=64, k_true=32, seed=0, hard=False)
    half = np.random.default_rng(0).permutation(200)
    fit, crit = np.sort(half[:100]), np.sort(half[100:])
    w, _ = T.fit_output_probe(P.M[fit], P.y[fit], seed=0)
    C = T.neuron_contributions(P.A[crit], T.effective_neuron_weights(P.W_out, w))
    universal = T.select_by_noise_removal(C, P.y[crit])
    bh = T.select_by_noise_removal(C, P.y[crit], threshold="bh", fdr=0.1)
    recall = [np.isin(P.true_idx, r.kept).mean() for r in (universal, bh)]
    assert bh.tau < universal.tau and recall[1] > recall[0] + 0.15
    assert np.setdiff1d(bh.kept, P.true_idx).size <= 0.2 * bh.k  # still few false neurons


# ---------------------------------------------------------------------------------------------
# post-norm blocks (Gemma 2/3)
# ---------------------------------------------------------------------------------------------


def _gemma_norm(M: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """Gemma3RMSNorm of transformers, in float64: x * rsqrt(mean(x^2) + eps) * (1 + weight)."""
    x = torch.from_numpy(M)
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + torch.from_numpy(weight))).numpy()


def test_post_norm_matches_gemma_rmsnorm_and_factors_through_the_gain():
    A, W_out, b_out, M = _random_mlp_weights(seed=4, gated=True)
    rng = np.random.default_rng(5)
    weight, eps = rng.normal(0, 2, D_MODEL), 1e-6
    scale = 1.0 + weight
    P = T.post_norm(M, scale, eps)
    np.testing.assert_allclose(P, _gemma_norm(M, weight, eps), rtol=1e-12, atol=1e-12)
    # a probe on P is r(x) times a neuron probe with beta^g = W_out (scale * w), plus c
    w, c = rng.standard_normal(D_MODEL), -0.3
    gain = T.post_norm_gain(M, eps)
    beta_g = T.post_norm_neuron_weights(W_out, scale, w)
    assert np.all(gain > 0)
    assert T.max_relative_difference(P @ w + c, gain * (A @ beta_g + b_out @ (scale * w)) + c) < 1e-10
    with pytest.raises(ValueError, match="post-MLP norm"):
        T.post_norm(M, scale[:-1], eps)


def test_compare_post_norm_probe_separates_scale_and_gain():
    """With scale 1 and a gain that is constant across rows, the post-norm probe is the pre-norm one
    up to a rescaling of its input: same AUROC, same neuron ranking."""
    planted = T.planted_mlp(n=400, d_mlp=128, d_model=32, k_true=8, seed=0, hard=False)
    A, W_out, y = planted.A, planted.W_out, planted.y
    M = A @ W_out
    train, test = np.arange(0, 400, 2), np.arange(1, 400, 2)
    M_const = M / np.sqrt((M**2).mean(axis=1, keepdims=True)) * 3.0  # every row at rms 3: constant gain
    A_const = A * (M_const[:, :1] / M[:, :1])  # the activations that produce those rows
    ones = np.ones(W_out.shape[1])
    r = T.compare_post_norm_probe(
        A_const, M_const, T.post_norm(M_const, ones, 0.0), y, train, test, W_out, np.zeros(W_out.shape[1]), ones, 0.0
    )
    assert r.identity_pre < 1e-10 and r.identity_post < 1e-10
    np.testing.assert_allclose(r.gain, 1 / 3.0)
    assert r.auroc_pre == pytest.approx(r.auroc_post, abs=1e-3) and r.auroc_post_linear == r.auroc_post
    assert r.spearman_gain == pytest.approx(1.0) and r.spearman_pre_post > 0.99
    # a per-example gain that varies: the reductions still hold exactly, AUROCs stay comparable
    weight = np.random.default_rng(1).normal(0, 1, W_out.shape[1])
    r = T.compare_post_norm_probe(
        A, M, T.post_norm(M, 1 + weight, 1e-6), y, train, test, W_out, np.zeros(W_out.shape[1]), 1 + weight, 1e-6
    )
    assert r.identity_pre < 1e-10 and r.identity_post < 1e-10 and np.ptp(r.gain) > 0
    assert 0.5 < r.auroc_post <= 1.0 and -1 <= r.spearman_pre_post <= 1


# --- the concept direction: one function, four declared estimators -----------------------------------
@pytest.mark.parametrize("estimator", T.DIRECTION_ESTIMATORS)
def test_concept_direction_recovers_the_planted_direction(estimator):
    P = T.planted_mlp(n=1000, d_mlp=256, d_model=64, k_true=16, seed=0, hard=False)
    d = T.concept_direction(P.M, P.y, estimator=estimator, seed=0)
    assert d.shape == (64,) and np.linalg.norm(d) == pytest.approx(1.0)
    assert d @ P.concept_dir > 0.6  # along u, and oriented so that class 1 scores higher
    flipped = T.concept_direction(P.M, 1 - P.y, estimator=estimator, seed=0)
    np.testing.assert_allclose(flipped, -d, atol=1e-6 if estimator != "l2_probe_cv" else 0.05)


def test_concept_direction_estimators_are_what_they_say():
    P = T.planted_mlp(n=600, d_mlp=128, d_model=32, k_true=8, seed=1)
    M, y = P.M, P.y
    shift = M[y == 1].mean(axis=0) - M[y == 0].mean(axis=0)
    np.testing.assert_allclose(T.concept_direction(M, y, estimator="mean_diff"), shift / np.linalg.norm(shift))
    w, _ = T.fit_output_probe(M, y, C=0.3, seed=2)
    np.testing.assert_allclose(T.concept_direction(M, y, estimator="l2_probe", C=0.3, seed=2), w / np.linalg.norm(w))
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(M, y).coef_[0]
    np.testing.assert_allclose(T.concept_direction(M, y, estimator="lda_shrinkage"), lda / np.linalg.norm(lda))
    with pytest.raises(ValueError, match="unknown direction estimator 'pca'; use one of l2_probe"):
        T.concept_direction(M, y, estimator="pca")
