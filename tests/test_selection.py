"""Tests for sparseprobe_core.selection: the four neuron selectors on planted layers, their error
bookkeeping, and input validation. No model is needed; knockoff tests skip without knockpy."""

from __future__ import annotations

import sys
from functools import cache

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from sparseprobe_core import selection as S
from sparseprobe_core import theory as T


@cache  # read-only planted layer shared by the tests below
def _planted(seed: int = 0, hard: bool = True, n: int = 600):
    return T.planted_mlp(n=n, d_mlp=256, d_model=64, k_true=16, seed=seed, hard=hard)


def _contributions(P):
    half = np.random.default_rng(0).permutation(P.y.size)
    fit, crit = np.sort(half[: P.y.size // 2]), np.sort(half[P.y.size // 2 :])
    w, _ = T.fit_output_probe(P.M[fit], P.y[fit], seed=0)
    return T.neuron_contributions(P.A[crit], T.effective_neuron_weights(P.W_out, w)), P.y[crit]


def _assert_valid(sel: S.Selection, d: int) -> None:
    assert sel.selected.dtype == np.int64 and sel.selected.ndim == 1
    np.testing.assert_array_equal(sel.selected, np.unique(sel.selected))  # sorted, unique
    assert sel.k == sel.selected.size and (sel.k == 0 or 0 <= sel.selected[0] <= sel.selected[-1] < d)


def _has_knockpy() -> bool:
    try:
        import knockpy  # noqa: F401
    except ImportError:
        return False
    return True


needs_knockpy = pytest.mark.skipif(not _has_knockpy(), reason=f"knockpy not installed ({S.KNOCKPY_INSTALL})")


@pytest.mark.parametrize("method", ["noise_rule", "noise_rule_bh", "stability", "cv_1se", "knockoff+"])
def test_every_selector_returns_sorted_unique_indices(method):
    if method == "knockoff+" and not _has_knockpy():
        pytest.skip(f"knockpy not installed ({S.KNOCKPY_INSTALL})")
    P = _planted()
    C_val, y_val = _contributions(P)
    sel = {
        "noise_rule": lambda: S.noise_rule(C_val, y_val),
        "noise_rule_bh": lambda: S.noise_rule(C_val, y_val, threshold="bh"),
        "stability": lambda: S.stability_selection(P.A, P.y, n_subsamples=10, random_state=0),
        "cv_1se": lambda: S.cv_one_se(P.A, P.y, random_state=0),
        "knockoff+": lambda: S.knockoff_filter(P.A, P.y, random_state=0),
    }[method]()
    assert sel.method == method
    _assert_valid(sel, 256)
    assert sel.k > 0  # every selector finds something on this planted layer
    assert S.selection_error(sel.selected, _planted().true_idx)["power"] >= 0.2  # stability: q = 11 of k* = 16


def test_noise_rule_is_the_theory_rule():
    C_val, y_val = _contributions(_planted())
    res = T.select_by_noise_removal(C_val, y_val)
    sel = S.noise_rule(C_val, y_val)
    np.testing.assert_array_equal(sel.selected, res.kept)
    assert sel.info["tau"] == res.tau and sel.info["n_pass_t"] >= sel.k and sel.info["n_pass_dJ"] >= sel.k


def test_stability_threshold_is_monotone_and_the_bound_holds():
    P = _planted()
    q, d = 20, 256
    # ev chosen per threshold so that q = floor(sqrt(ev (2 thr - 1) d)) stays 20: same subsamples, same
    # paths, same frequencies; only the cut moves
    runs = {
        thr: S.stability_selection(
            P.A, P.y, threshold=thr, ev=(q + 0.5) ** 2 / ((2 * thr - 1) * d), n_subsamples=10, random_state=1
        )
        for thr in (0.6, 0.75, 0.9)
    }
    for thr, sel in runs.items():
        assert sel.info["q"] == q
        np.testing.assert_array_equal(sel.info["frequency"], runs[0.6].info["frequency"])
        np.testing.assert_array_equal(sel.selected, np.flatnonzero(sel.info["frequency"] >= thr))
        # Meinshausen-Buehlmann: E[V] <= q_hat^2 / ((2 thr - 1) d), q_hat <= q
        assert sel.info["q_hat"] <= q
        assert sel.info["ev_bound"] == pytest.approx(sel.info["q_hat"] ** 2 / ((2 * thr - 1) * d))
    for lo, hi in ((0.6, 0.75), (0.75, 0.9)):
        assert np.isin(runs[hi].selected, runs[lo].selected).all()
    assert runs[0.6].k > runs[0.9].k


def test_cv_one_se_is_no_denser_than_cv_best():
    for seed, hard in ((0, True), (1, False)):
        P = _planted(seed, hard)
        sel = S.cv_one_se(P.A, P.y, random_state=seed)
        assert sel.info["C_1se"] <= sel.info["C_best"]
        assert sel.k <= sel.info["selected_best"].size
        best = int(np.argmax(sel.info["cv_mean"]))
        one_se = int(np.flatnonzero(sel.info["Cs"] == sel.info["C_1se"])[0])
        assert sel.info["cv_mean"][one_se] >= sel.info["cv_mean"][best] - sel.info["cv_se"][best]


def test_selectors_are_reproducible_for_a_random_state():
    P = _planted()
    a = S.stability_selection(P.A, P.y, n_subsamples=5, random_state=3)
    b = S.stability_selection(P.A, P.y, n_subsamples=5, random_state=3)
    np.testing.assert_array_equal(a.info["frequency"], b.info["frequency"])
    np.testing.assert_array_equal(
        S.cv_one_se(P.A, P.y, random_state=3).selected, S.cv_one_se(P.A, P.y, random_state=3).selected
    )


def test_knockoff_threshold_by_hand():
    W = np.array([9.0, 8.0, 7.0, 6.0, -5.0, 4.0, 3.0, -2.0, 1.0, 0.0])
    # t = 6: 0 negatives at |W| >= 6, 4 positives -> ratio (offset + 0) / 4
    assert S.knockoff_threshold(W, fdr=0.25, offset=1) == 6.0
    assert S.knockoff_threshold(W, fdr=0.25, offset=0) == 3.0  # (0 + 1 negative) / 6 positives
    # knockoff+ needs at least 1/fdr selections before it can select anything
    assert S.knockoff_threshold(W, fdr=0.1, offset=1) == np.inf
    assert S.knockoff_threshold(np.zeros(5), fdr=0.1, offset=0) == np.inf


@needs_knockpy
def test_knockoff_fdr_on_easy_planted_layers_is_near_q():
    """Mean false discovery proportion over 4 fixed seeds; knockoff+ guarantees E[FDP] <= 0.1 for
    exact knockoffs, and the estimated Gaussian model is nearly exact on the easy layer."""
    fdps, powers = [], []
    for seed in range(4):
        P = _planted(seed, hard=False, n=500)
        sel = S.knockoff_filter(P.A, P.y, fdr=0.1, random_state=seed)
        err = S.selection_error(sel.selected, P.true_idx)
        fdps.append(err["fdr"])
        powers.append(err["power"])
        plain = S.selection_error(sel.info["selected_other_offset"], P.true_idx)
        assert plain["k"] >= err["k"]  # offset 0 is never stricter than knockoff+
        assert sel.k == 0 or sel.k >= sel.info["min_nonempty_k"] == 10
    assert np.mean(fdps) <= 0.2 and max(fdps) <= 0.35
    assert np.mean(powers) >= 0.5


@needs_knockpy
def test_knockoff_filter_agrees_with_knockpy_own_pipeline():
    """Knockpy's KnockoffFilter (its CV lasso statistic) and ours on one Gaussian design with 20 of
    300 variables active: both find every active one at a similar false discovery proportion."""
    import warnings

    from knockpy.knockoff_filter import KnockoffFilter

    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 300))
    y = (0.5 * X[:, :20].sum(axis=1) + rng.standard_normal(600) > 0).astype(int)
    state = np.random.get_state()
    np.random.seed(0)
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):  # as knockoff_filter does
        warnings.simplefilter("ignore")
        theirs = np.flatnonzero(KnockoffFilter(ksampler="gaussian", fstat="lasso").forward(X=X, y=y, fdr=0.1))
    np.random.set_state(state)
    ours = S.knockoff_filter(X, y, fdr=0.1, random_state=0).selected
    for sel in (theirs, ours):
        err = S.selection_error(sel, np.arange(20))
        assert err["power"] == 1.0 and err["fdr"] <= 0.2


@needs_knockpy
def test_equicorrelated_S_is_knockpy_s_without_its_cholesky_checks():
    import knockpy.smatrix
    from sklearn.covariance import LedoitWolf

    for n in (100, 600):  # d > n (strong shrinkage) and d < n
        Sigma = LedoitWolf().fit(S._standardize(_planted(n=n).A)).covariance_
        ours = S._equicorrelated_S(Sigma, S._import_knockpy())
        np.testing.assert_allclose(ours, knockpy.smatrix.compute_smatrix(Sigma, method="equicorrelated"), atol=1e-12)
        assert np.linalg.eigvalsh(2 * Sigma - ours).min() > 0  # a valid S-matrix


@needs_knockpy
def test_layer_selections_run_every_method_on_the_same_rows():
    P = _planted(n=300)
    fit, held_out = np.arange(0, 300, 2), np.arange(1, 300, 2)
    sels = S.layer_selections(P.A, P.M, P.W_out, P.y, fit, held_out, n_subsamples=4, seed=0)
    assert [s.method for s in sels] == list(S.LAYER_METHODS)
    for sel in sels:
        _assert_valid(sel, 256)
        assert sel.info["time_s"] >= 0
    C_val = T.neuron_contributions(
        P.A[held_out], T.effective_neuron_weights(P.W_out, T.fit_output_probe(P.M[fit], P.y[fit], seed=0)[0])
    )
    np.testing.assert_array_equal(sels[0].selected, S.noise_rule(C_val, P.y[held_out]).selected)
    rows = np.concatenate([fit, held_out])
    np.testing.assert_array_equal(sels[-1].selected, S.cv_one_se(P.A[rows], P.y[rows], random_state=0).selected)


@needs_knockpy
def test_knockoff_filter_is_reproducible_and_leaves_numpy_global_state_alone():
    P = _planted()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = S.knockoff_filter(P.A, P.y, random_state=5)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    b = S.knockoff_filter(P.A, P.y, random_state=5)
    np.testing.assert_array_equal(a.info["W"], b.info["W"])


def test_knockoff_filter_names_the_install_command_without_knockpy(monkeypatch):
    for name in [m for m in sys.modules if m == "knockpy" or m.startswith("knockpy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "knockpy", None)  # makes `import knockpy` raise ImportError
    P = _planted()
    with pytest.raises(ImportError) as err:
        S.knockoff_filter(P.A, P.y)
    assert S.KNOCKPY_INSTALL in str(err.value) and "\n" not in str(err.value)


def test_selection_error_counts_decoys_as_false_and_separately():
    err = S.selection_error(np.array([3, 1, 2, 7, 7]), true_idx=np.array([1, 2, 4, 5]), decoy_idx=np.array([3]))
    assert err == {"fdr": 0.5, "power": 0.5, "k": 4, "decoys": 1, "fdr_null": 0.25}
    assert S.selection_error(np.array([], dtype=int), np.array([0]))["fdr"] == 0.0


@needs_knockpy
def test_planted_unit_has_one_row_per_method():
    rows = S.planted_unit("hard", 200, 0, n_subsamples=4)
    assert [r["method"] for r in rows] == list(S.STUDY_METHODS)
    for r in rows:
        assert 0 <= r["fdr"] <= 1 and 0 <= r["power"] <= 1 and r["decoys"] <= r["k"]
    assert rows[0]["n_select"] == 100 and rows[-1]["n_select"] == 200


@needs_knockpy
def test_planted_study_is_the_units_stacked(monkeypatch):
    monkeypatch.setenv("SPARSEPROBE_JOBS", "1")
    df = S.planted_study(ns=(200,), seeds=(0,), cases=("easy", "hard"), n_subsamples=4)
    assert list(df.method) == list(S.STUDY_METHODS) * 2 and list(df.case.unique()) == ["easy", "hard"]
    unit = S.planted_unit("hard", 200, 0, n_subsamples=4)
    np.testing.assert_array_equal(df[df.case == "hard"].k, [r["k"] for r in unit])  # a pure function of its args


_P = T.planted_mlp(n=40, d_mlp=16, d_model=8, k_true=4, seed=0)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: S.cv_one_se(_P.A[:, 0], _P.y), "X must be 2-D"),
        (lambda: S.cv_one_se(np.where(np.eye(40, 16) > 0, np.nan, _P.A), _P.y), "NaN or inf in 16 entries"),
        (lambda: S.cv_one_se(_P.A, _P.y + 1), "only 0 and 1"),
        (lambda: S.cv_one_se(_P.A, _P.y, cv=1), "cv=1"),
        (lambda: S.cv_one_se(_P.A, _P.y, Cs=[-1.0]), "positive inverse regularisation"),
        (lambda: S.cv_one_se(_P.A[:6], np.array([0, 0, 0, 0, 1, 1])), "needs at least 5 of each"),
        (lambda: S.stability_selection(_P.A, _P.y, threshold=0.5), "threshold=0.5"),
        (lambda: S.stability_selection(_P.A, _P.y, ev=0), "ev=0"),
        (lambda: S.stability_selection(_P.A, _P.y, ev=0.01), "allows q = 0"),
        (lambda: S.stability_selection(_P.A, _P.y, n_subsamples=1), "n_subsamples=1"),
        (lambda: S.knockoff_filter(_P.A, _P.y, fdr=1.5), "fdr=1.5"),
        (lambda: S.knockoff_filter(_P.A, _P.y, offset=2), "offset=2"),
        (lambda: S.knockoff_filter(_P.A, _P.y, method="magic"), "method='magic'"),
        (lambda: S.knockoff_threshold(np.ones((2, 2))), "W has shape (2, 2)"),
        (lambda: S.noise_rule(_P.A, _P.y, threshold="bonferroni"), "threshold='bonferroni'"),
        (lambda: S.selection_error(np.array([1]), np.array([], dtype=int)), "true_idx is empty"),
        (lambda: S.planted_unit("medium", 200, 0), "case='medium'"),
        (lambda: S.planted_study(seeds=()), "the study is empty"),
    ],
)
def test_malformed_input_raises_one_line_value_error(call, fragment):
    with pytest.raises(ValueError) as err:
        call()
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)
