r"""Neuron selection with a stated error guarantee: the noise rule against three principled selectors.

Every selector returns a ``Selection`` (method name, sorted unique neuron indices, k, and an ``info``
dict with what the method computed on the way). Inputs are one layer's activations ``X`` (n, d_mlp)
and binary labels ``y`` in {0, 1}; the noise rule instead takes held-out contributions
``C_val = A_val * beta`` of an output probe (``theory.neuron_contributions``).

Selectors
---------
``noise_rule``           the paper's rule (``theory.select_by_noise_removal``): neuron i is kept iff
                         removing it lowers the Fisher ratio of the probe score AND its Welch t passes a
                         threshold (``threshold="universal"``: t_i >= sqrt(2 ln d); ``"bh"``: the
                         Benjamini-Hochberg step at level ``fdr`` on one-sided Student-t p-values of t_i).
                         Guarantee: the universal threshold bounds the family-wise error of the t clause
                         (P[any null neuron has t_i >= sqrt(2 ln d)] <= ~1/sqrt(4 pi ln d), ~0.1 at
                         d = 512) for independent normal null t_i (Student t tails make it 0.135 with
                         100 rows and d = 500, measured); BH bounds its FDR by ``fdr`` under
                         independence or positive dependence (PRDS). Neither says anything about decoys.
``knockoff_filter``      model-X knockoffs (Candes et al. 2018), second-order Gaussian: Sigma from
                         Ledoit-Wolf on the standardised X, S-matrix and knockoffs from knockpy, lasso
                         coefficient-difference statistic W_j = |b_j| - |b~_j| from an L1 logistic fit
                         on [X, X~] at a cross-validated C, threshold (``knockoff_threshold``)::

                             T = min{ t > 0 : (offset + #{j: W_j <= -t}) / max(1, #{j: W_j >= t}) <= q }

                         offset = 1 (knockoff+) controls FDR = E[V / max(R, 1)] <= q; offset = 0
                         controls the modified FDR E[V / (R + 1/q)] <= q. Both hold exactly for
                         knockoffs of the true distribution of X; with an estimated Gaussian model they
                         are approximate. Knockoff+ can never select fewer than 1/q neurons (its
                         first admissible t has R >= (1 + 0) / q), so "none selected" at q = 0.1 means
                         "fewer than ~10 detectable", never "no concept neurons".
``stability_selection``  Meinshausen & Buehlmann (2010): L1 logistic fits on ``n_subsamples`` random
                         half-subsamples along a C grid, each path stopped once it has selected q
                         neurons; neuron j is kept iff its selection frequency Pi_j >= ``threshold``.
                         With q = floor(sqrt(ev (2 threshold - 1) d)), their Theorem 1 bounds the
                         expected number of false selections::

                             E[V] <= q^2 / ((2 threshold - 1) d) <= ev

                         (assumes exchangeable noise variables and a selector no worse than random).
``cv_one_se``            L1 logistic path on a C grid, k-fold stratified CV of the log-loss, the sparsest
                         C whose mean CV score is within one standard error (sd over folds / sqrt(k))
                         of the best; refit on all rows. No error guarantee: CV targets prediction, and
                         the lasso's CV-best model is known to over-select; 1-SE is the usual hedge.

Activations or contributions
----------------------------
The three comparators run on the standardised activations of all n rows, not on contributions.
A contribution is c_j = beta_j a_j with beta_j fixed by a probe fitted on other rows, so for beta_j
!= 0 it carries the same information as a_j: knockoffs test H0_j: y independent of a_j given a_-j,
which is the same hypothesis for c_j, and every comparator standardises each column first, which
removes |beta_j|. Using contributions would only cost half of the rows (to fit beta out of sample)
and make neurons with beta_j ~ 0 degenerate columns. The noise rule needs contributions by design;
``planted_unit`` gives it the same n rows and it spends half on the probe, as in notebook 01.

Ground truth on the planted layer
---------------------------------
``selection_error`` scores a selection against ``true_idx``: FDR = |S \\ true| / max(|S|, 1) and power
= |S & true| / k*. Decoys (class-shifted neurons writing orthogonally to the concept direction) count
as false discoveries there, yet they are statistically non-null (y depends on them), so no label-based
selector can reject them; they are also counted on their own, and ``fdr_null`` counts only the
neurons with no class signal at all, the FDR that knockoffs and BH actually promise.
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.covariance import LedoitWolf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import l1_min_c
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from . import concepts, parallel, theory

__all__ = [
    "KNOCKPY_INSTALL",
    "LAYER_METHODS",
    "STUDY_METHODS",
    "Selection",
    "cv_one_se",
    "knockoff_filter",
    "knockoff_threshold",
    "layer_selections",
    "noise_rule",
    "planted_study",
    "planted_unit",
    "selection_error",
    "stability_selection",
]

KNOCKPY_INSTALL = "pip install knockpy==1.3.5"
KNOCKOFF_METHODS = ("equicorrelated", "mvr", "maxent", "sdp")
# liblinear penalises the intercept; scaling its column by 100 makes that penalty negligible (as in
# prober.py). The columns are centred, so the intercept only absorbs class imbalance.
_INTERCEPT_SCALING = 100.0
# Default C grid: multiples of l1_min_c (the C at which the first neuron enters; the empty model there
# is not fitted), 10^0.2 apart. Three decades: on the planted layer (n = 1000) the CV log-loss is
# still falling at 100 l1_min_c, and 1000 l1_min_c is nearly unregularised.
_C_FACTORS = np.logspace(0, 3, 16)[1:]


@dataclass(frozen=True, eq=False)  # arrays: compare by identity
class Selection:
    """The neurons a selector keeps: ``selected`` sorted and unique, ``k = len(selected)``."""

    method: str
    selected: np.ndarray
    k: int
    info: dict = field(default_factory=dict)


def _selection(method: str, selected: np.ndarray, **info) -> Selection:
    selected = np.unique(np.asarray(selected, dtype=np.int64))
    return Selection(method, selected, int(selected.size), info)


# ---------------------------------------------------------------------------------------------
# input checks (one-line errors)
# ---------------------------------------------------------------------------------------------


def _check_Xy(X: np.ndarray, y: np.ndarray, min_per_class: int = 2) -> tuple[np.ndarray, np.ndarray]:
    X = theory.as_2d(X, "X").astype(np.float64, copy=False)
    bad = int(X.size - np.count_nonzero(np.isfinite(X)))
    if bad:
        raise ValueError(f"X contains NaN or inf in {bad} entries; drop or impute those rows first")
    y = theory.check_y(y, X.shape[0])
    counts = np.bincount(y, minlength=2)
    if counts.min() < min_per_class:
        raise ValueError(
            f"y has {counts[0]} rows of class 0 and {counts[1]} of class 1; this selector "
            f"needs at least {min_per_class} of each"
        )
    return X, y


def _standardize(X: np.ndarray) -> np.ndarray:
    """Z-score each column; constant columns (dead neurons) become 0 rather than NaN."""
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _check_fraction(value: float, name: str, lo: float, hi: float, hint: str) -> float:
    if not lo < value < hi:
        raise ValueError(f"{name}={value}; pass {lo} < {name} < {hi} ({hint})")
    return float(value)


def _C_grid(X: np.ndarray, y: np.ndarray, Cs: Sequence[float] | None) -> np.ndarray:
    """Ascending C grid: the given Cs, or l1_min_c(X, y) times 10^(0.2 .. 3)."""
    if Cs is None:
        return float(l1_min_c(X, y, loss="log", fit_intercept=False)) * _C_FACTORS
    Cs = np.asarray(Cs, dtype=np.float64)
    if Cs.ndim != 1 or Cs.size == 0 or Cs.min() <= 0:
        raise ValueError(
            f"Cs={Cs.tolist()!r}; pass a non-empty 1-D sequence of positive inverse regularisation strengths"
        )
    return np.sort(Cs)


def _l1_logistic(C: float, random_state: int) -> LogisticRegression:
    return LogisticRegression(
        C=C,
        l1_ratio=1.0,
        solver="liblinear",
        intercept_scaling=_INTERCEPT_SCALING,
        max_iter=1000,
        random_state=random_state,
    )


def _cv_scores(X: np.ndarray, y: np.ndarray, Cs: np.ndarray, cv: int, seed: int, patience: int = 2) -> np.ndarray:
    """Held-out -log-loss of L1 logistic fits, shape (folds, Cs walked), C ascending, stratified folds.

    The walk stops once the mean score has fallen for ``patience`` strengths in a row after its best:
    the largest C are by far the slowest liblinear fits (at n = 4000 the top one costs as much as the
    ten smallest) and past the optimum they only add neurons. LogisticRegressionCV cannot stop early.
    """
    folds = list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(X, y))
    columns = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in Cs:
            columns.append(
                [
                    -log_loss(y[te], _l1_logistic(C, seed).fit(X[tr], y[tr]).predict_proba(X[te]), labels=[0, 1])
                    for tr, te in folds
                ]
            )
            mean = np.mean(columns, axis=1)
            if int(np.argmax(mean)) < len(columns) - patience:
                break
    return np.asarray(columns).T


# ---------------------------------------------------------------------------------------------
# the paper's rule
# ---------------------------------------------------------------------------------------------


def noise_rule(
    C_val: np.ndarray,
    y_val: np.ndarray,
    *,
    threshold: str = "universal",
    tau: float | None = None,
    fdr: float = 0.1,
    ridge: float = 1e-6,
) -> Selection:
    """Neurons that are not noise: Delta J_i < 0 and t_i passes ``threshold`` (see theory.select_by_noise_removal).

    ``C_val`` are contributions c_i = a_i beta_i on rows the probe was not fitted on. ``threshold``:
    "universal" (t_i >= tau, tau = sqrt(2 ln d) unless given; the default rule) or "bh" (Benjamini-
    Hochberg at level ``fdr`` on p_i = P(T_{n-2} > t_i)). ``info``: the full ``NoiseRemovalResult`` and
    how many neurons pass each clause on its own.
    """
    res = theory.select_by_noise_removal(C_val, y_val, tau=tau, ridge=ridge, threshold=threshold, fdr=fdr)
    name = "noise_rule" if threshold == "universal" else f"noise_rule_{threshold}"
    return _selection(
        name,
        res.kept,
        tau=res.tau,
        n_pass_t=int((res.t >= res.tau).sum()),
        n_pass_dJ=int((res.scores < 0).sum()),
        result=res,
    )


# ---------------------------------------------------------------------------------------------
# knockoffs
# ---------------------------------------------------------------------------------------------


def knockoff_threshold(W: np.ndarray, *, fdr: float = 0.1, offset: int = 1) -> float:
    """T = min{t in {|W_j| > 0}: (offset + #{W_j <= -t}) / max(1, #{W_j >= t}) <= fdr}; inf if none."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 1:
        raise ValueError(f"W has shape {W.shape}; pass one knockoff statistic per neuron (1-D)")
    _check_fraction(fdr, "fdr", 0.0, 1.0, "the target false discovery rate")
    if offset not in (0, 1):
        raise ValueError(f"offset={offset}; pass 1 (knockoff+, controls FDR) or 0 (controls modified FDR)")
    ts = np.unique(np.abs(W[W != 0]))  # candidate thresholds, ascending
    neg, pos = np.sort(-W[W < 0]), np.sort(W[W > 0])
    n_neg = neg.size - np.searchsorted(neg, ts, side="left")  # #{W_j <= -t}
    n_pos = pos.size - np.searchsorted(pos, ts, side="left")  # #{W_j >= t}
    ok = (offset + n_neg) / np.maximum(n_pos, 1) <= fdr
    return float(ts[ok][0]) if ok.any() else float("inf")


def _import_knockpy():
    try:
        import knockpy.knockoffs
        import knockpy.utilities
    except ImportError as err:
        raise ImportError(f"knockoff_filter needs knockpy, which is not installed; run: {KNOCKPY_INSTALL}") from err
    return knockpy


def _equicorrelated_S(Sigma: np.ndarray, knockpy, tol: float = 1e-5, num_iter: int = 10) -> np.ndarray:
    """Knockpy's equicorrelated S-matrix, S = gamma s I with s = min(1, 2 lambda_min(Sigma)), computed as
    knockpy does but without its d x d Cholesky checks.

    Knockpy (``mac.solve_equicorrelated``) binary-searches the largest gamma in (0, 1) such that
    2 Sigma - gamma S - tol I is positive definite, with one Cholesky factorisation per step (10 steps:
    1.8 s at d = 2048, one thread). For S proportional to I that matrix's smallest eigenvalue is
    2 lambda_min - gamma s, so the same search runs on that scalar; lambda_min comes from knockpy's
    own ``utilities.calc_mineig``. ``tests/test_selection.py`` checks the result equals knockpy's.
    """
    lam = float(knockpy.utilities.calc_mineig(Sigma))
    s = min(2 * lam, 1.0)
    lower, upper = 0.0, 1.0
    for _ in range(num_iter):
        gamma = (lower + upper) / 2
        lower, upper = (gamma, upper) if 2 * lam - gamma * s >= tol else (lower, gamma)
    return lower * s * np.eye(Sigma.shape[0])


@contextlib.contextmanager
def _numpy_global_seed(seed: int) -> Iterator[None]:
    """Knockpy draws from numpy's global generator: seed it for the call, then restore its state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def knockoff_filter(
    X: np.ndarray,
    y: np.ndarray,
    *,
    fdr: float = 0.1,
    offset: int = 1,
    method: str = "equicorrelated",
    cv: int = 3,
    Cs: Sequence[float] | None = None,
    random_state: int | None = None,
) -> Selection:
    """Model-X knockoff filter (Gaussian, Ledoit-Wolf covariance) with the lasso coefficient difference.

    Steps: z-score X; Sigma = LedoitWolf(X) (a correlation-like matrix; shrinkage keeps it positive
    definite when d > n); S = knockpy S-matrix by ``method``; X~ ~ N(X - X Sigma^-1 S,
    2S - S Sigma^-1 S); L1 logistic on [X, X~] (columns randomly permuted so ties do not favour
    either copy) at the C of best ``cv``-fold CV log-loss; W_j = |b_j| - |b~_j|; keep W_j >= T with
    T = ``knockoff_threshold(W, fdr=fdr, offset=offset)``. Guarantee (exact for the true
    distribution of X): offset 1 (knockoff+) FDR <= fdr; offset 0 modified FDR <= fdr.

    ``method``: "equicorrelated" (default: closed form, S = min(1, 2 lambda_min) I on the correlation
    scale; ``_equicorrelated_S``, knockpy's S without its Cholesky checks: 0.03 / 0.06 s) or knockpy's
    "mvr", "maxent", "sdp". Measured with 400 rows, one thread (benchmarks/bench_selection.py): at
    d = 1536 / 2048 knockpy's S-matrix takes 2 / 3 s (equicorrelated), 65 / 97 s (mvr), 60 / 97 s
    (maxent), 238 / 291 s (sdp); the whole filter with equicorrelated S 1.9 / 3.7 CPU s. Above 1000
    neurons knockpy solves mvr, maxent and sdp on a block-diagonal approximation and then shrinks S
    until it is valid, which left mean diag(S) at 0.14-0.33 against 0.47-0.53 for equicorrelated
    (smaller S = knockoffs closer to the originals = less power). On the 512-neuron planted layer mvr
    and equicorrelated selected equally well. Ledoit-Wolf shrinkage keeps the correlation matrix well
    conditioned, the case in which equicorrelated knockoffs lose little. ``cv`` = 3 folds and every
    other value of the default C grid (7 values): CV here only places C for the statistic, it does
    not decide the selection, and on the planted layer 3 vs 5 folds and 7 vs 15 values gave the same
    selections at less than half the cost. ``info``: W, threshold, the selection at the other offset
    (``selected_other_offset``), ``min_nonempty_k`` (the fewest neurons this offset can select
    when it selects any: ceil(1/fdr) for knockoff+), the CV-chosen C and mean diag(S).
    """
    X, y = _check_Xy(X, y, min_per_class=cv)
    if cv < 2:
        raise ValueError(f"cv={cv}; pass at least 2 folds")
    _check_fraction(fdr, "fdr", 0.0, 1.0, "the target false discovery rate")
    if offset not in (0, 1):
        raise ValueError(f"offset={offset}; pass 1 (knockoff+, controls FDR) or 0 (controls modified FDR)")
    if method not in KNOCKOFF_METHODS:
        raise ValueError(f"method={method!r}; pass one of {', '.join(KNOCKOFF_METHODS)}")
    knockpy = _import_knockpy()
    rng = check_random_state(random_state)
    seed = int(rng.randint(2**31 - 1))
    X = _standardize(X)
    d = X.shape[1]
    # One BLAS thread: knockpy checks S with a dozen small Cholesky factorisations, and on a busy
    # 2-core machine OpenBLAS threads made each ~100x slower (0.25 s for 256 x 256, measured). knockpy
    # prints progress for large d (block-diagonal approximation); keep the caller's stdout clean.
    with threadpool_limits(limits=1, user_api="blas"):
        # Shrinkage makes Sigma positive definite, so one LU inverse is exact; LedoitWolf's own
        # precision_ (pinvh: a full eigendecomposition) took 3.2 of 9 s at d = 2048 (measured).
        Sigma = LedoitWolf(store_precision=False).fit(X).covariance_
        S = _equicorrelated_S(Sigma, knockpy) if method == "equicorrelated" else None
        with _numpy_global_seed(seed), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sampler = knockpy.knockoffs.GaussianSampler(
                X=X, mu=np.zeros(d), Sigma=Sigma, invSigma=np.linalg.inv(Sigma), S=S, method=method
            )
            Xk = sampler.sample_knockoffs()
    perm = rng.permutation(2 * d)
    features = np.concatenate([X, Xk], axis=1)[:, perm]
    Cs = _C_grid(features, y, Cs)[1::2] if Cs is None else _C_grid(features, y, Cs)
    C = float(Cs[np.argmax(_cv_scores(features, y, Cs, cv, seed).mean(axis=0))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        b = np.empty(2 * d)
        b[perm] = _l1_logistic(C, seed).fit(features, y).coef_[0]
    W = np.abs(b[:d]) - np.abs(b[d:])
    T = knockoff_threshold(W, fdr=fdr, offset=offset)
    T_other = knockoff_threshold(W, fdr=fdr, offset=1 - offset)
    name = "knockoff+" if offset == 1 else "knockoff"
    # knockoff+ passes no threshold with fewer than 1/fdr positives: k = 0 then says nothing about k*
    return _selection(
        name,
        np.flatnonzero(W >= T),
        W=W,
        threshold=T,
        fdr=fdr,
        offset=offset,
        min_nonempty_k=int(np.ceil(1 / fdr - 1e-9)) if offset == 1 else 1,
        selected_other_offset=np.flatnonzero(W >= T_other),
        C=C,
        mean_diag_S=float(np.diag(sampler.fetch_S()).mean()),
    )


# ---------------------------------------------------------------------------------------------
# stability selection
# ---------------------------------------------------------------------------------------------


def _first_q_on_path(X: np.ndarray, y: np.ndarray, Cs: np.ndarray, q: int, seed: int) -> np.ndarray:
    """The first q neurons to enter an L1 logistic path on an ascending C grid (ties: larger |coef| first)."""
    order: list[int] = []
    seen = np.zeros(X.shape[1], dtype=bool)
    for C in Cs:
        coef = _l1_logistic(C, seed).fit(X, y).coef_[0]
        new = np.flatnonzero((coef != 0) & ~seen)
        new = new[np.argsort(-np.abs(coef[new]), kind="stable")]
        order.extend(new.tolist())
        seen[new] = True
        if len(order) >= q:
            break
    return np.asarray(order[:q], dtype=np.int64)


def stability_selection(
    X: np.ndarray,
    y: np.ndarray,
    *,
    threshold: float = 0.75,
    ev: float = 1.0,
    n_subsamples: int = 50,
    Cs: Sequence[float] | None = None,
    random_state: int | None = None,
) -> Selection:
    """Meinshausen-Buehlmann stability selection with L1 logistic regression on half-subsamples.

    q = floor(sqrt(ev (2 threshold - 1) d)) neurons per subsample (the first q to enter the path on
    ``Cs``, default l1_min_c of the subsample times 10^(0.2 .. 3)); Pi_j = share of the
    ``n_subsamples`` stratified half-subsamples whose q neurons include j; keep Pi_j >= threshold.
    Bound: E[V] <= q_hat^2 / ((2 threshold - 1) d) <= ev, q_hat = mean neurons per subsample.
    ``info``: frequencies Pi, q, q_hat, the bound.
    """
    X, y = _check_Xy(X, y, min_per_class=4)
    if not 0.5 < threshold <= 1:
        raise ValueError(
            f"threshold={threshold}; pass 0.5 < threshold <= 1 (Meinshausen-Buehlmann's bound "
            "needs > 0.5; 0.6-0.9 is usual)"
        )
    if ev <= 0:
        raise ValueError(f"ev={ev}; pass a positive bound on the expected number of false selections")
    if n_subsamples < 2:
        raise ValueError(f"n_subsamples={n_subsamples}; pass at least 2 (50-100 is usual)")
    d = X.shape[1]
    q = int(np.floor(np.sqrt(ev * (2 * threshold - 1) * d)))
    if q < 1:
        raise ValueError(
            f"ev={ev} with threshold={threshold} and d={d} allows q = 0 neurons per subsample; "
            "raise ev or lower threshold"
        )
    rng = check_random_state(random_state)
    X = _standardize(X)
    counts = np.zeros(d)
    sizes = []
    idx0, idx1 = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(n_subsamples):
            half = np.concatenate(
                [rng.choice(idx0, idx0.size // 2, replace=False), rng.choice(idx1, idx1.size // 2, replace=False)]
            )
            Xb, yb = X[half] - X[half].mean(axis=0), y[half]
            chosen = _first_q_on_path(Xb, yb, _C_grid(Xb, yb, Cs), q, int(rng.randint(2**31 - 1)))
            counts[chosen] += 1
            sizes.append(chosen.size)
    freq = counts / n_subsamples
    q_hat = float(np.mean(sizes))
    return _selection(
        "stability",
        np.flatnonzero(freq >= threshold),
        frequency=freq,
        q=q,
        q_hat=q_hat,
        threshold=threshold,
        ev_bound=q_hat**2 / ((2 * threshold - 1) * d),
    )


# ---------------------------------------------------------------------------------------------
# cross-validation, one-standard-error rule
# ---------------------------------------------------------------------------------------------


def cv_one_se(
    X: np.ndarray, y: np.ndarray, *, cv: int = 5, Cs: Sequence[float] | None = None, random_state: int | None = None
) -> Selection:
    """L1 logistic path, ``cv``-fold stratified CV log-loss; the smallest C within 1 SE of the best; refit.

    SE = sd of the fold scores at the best C / sqrt(cv). ``Cs`` default: l1_min_c times
    10^(0.2 .. 3) (15 values), walked upwards and stopped two values after the CV optimum (the
    largest C are the slowest fits). ``info``: C_best, C_1se, the walked ``Cs`` with their CV mean
    and SE, and ``selected_best`` (the refit at C_best; C_1se <= C_best, so 1-SE is the sparser
    model unless the lasso path is non-monotone in C).
    """
    X, y = _check_Xy(X, y, min_per_class=cv)
    if cv < 2:
        raise ValueError(f"cv={cv}; pass at least 2 folds (5 or 10 are usual)")
    rng = check_random_state(random_state)
    seed = int(rng.randint(2**31 - 1))
    X = _standardize(X)
    Cs = _C_grid(X, y, Cs)
    scores = _cv_scores(X, y, Cs, cv, seed)
    Cs = Cs[: scores.shape[1]]
    mean = scores.mean(axis=0)
    se = scores.std(axis=0, ddof=1) / np.sqrt(cv)
    best = int(np.argmax(mean))
    one_se = int(np.flatnonzero(mean >= mean[best] - se[best])[0])  # Cs ascending: sparsest first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        coef_1se = _l1_logistic(Cs[one_se], seed).fit(X, y).coef_[0]
        coef_best = coef_1se if one_se == best else _l1_logistic(Cs[best], seed).fit(X, y).coef_[0]
    return _selection(
        "cv_1se",
        np.flatnonzero(coef_1se),
        C_best=float(Cs[best]),
        C_1se=float(Cs[one_se]),
        Cs=Cs,
        cv_mean=mean,
        cv_se=se,
        selected_best=np.flatnonzero(coef_best),
    )


# ---------------------------------------------------------------------------------------------
# every selector on one real layer
# ---------------------------------------------------------------------------------------------

LAYER_METHODS = ("noise_rule", "noise_rule_bh", "knockoff+", "knockoff", "stability", "cv_1se")


def layer_selections(
    A: np.ndarray,
    M: np.ndarray,
    W_out: np.ndarray,
    y: np.ndarray,
    fit: np.ndarray,
    held_out: np.ndarray,
    *,
    fdr: float = 0.1,
    stability_threshold: float = 0.75,
    ev: float = 1.0,
    n_subsamples: int = 30,
    seed: int = 0,
) -> list[Selection]:
    """Every method of LAYER_METHODS on one layer of a model, from the same rows ``fit`` + ``held_out``.

    As in ``planted_unit``: the noise rules fit the output probe w on M[fit] (``theory.fit_output_probe``)
    and judge the contributions a_i (W_out w)_i on the ``held_out`` rows; the comparators select on the
    activations of both parts together. Each selection's ``info["time_s"]`` is its wall time (knockoff
    and knockoff+ share one knockoff draw and one time).
    """
    rows = np.concatenate([fit, held_out])
    out = []
    start = time.perf_counter()
    w, _ = theory.fit_output_probe(M[fit], y[fit], seed=seed)
    C_val = theory.neuron_contributions(A[held_out], theory.effective_neuron_weights(W_out, w))
    probe_s = time.perf_counter() - start
    for threshold in ("universal", "bh"):
        start = time.perf_counter()
        sel = noise_rule(C_val, y[held_out], threshold=threshold, fdr=fdr)
        sel.info["time_s"] = probe_s + time.perf_counter() - start
        out.append(sel)
    start = time.perf_counter()
    ko = knockoff_filter(A[rows], y[rows], fdr=fdr, offset=1, random_state=seed)
    ko.info["time_s"] = time.perf_counter() - start
    out += [ko, _selection("knockoff", ko.info["selected_other_offset"], time_s=ko.info["time_s"])]
    start = time.perf_counter()
    stab = stability_selection(
        A[rows], y[rows], threshold=stability_threshold, ev=ev, n_subsamples=n_subsamples, random_state=seed
    )
    stab.info["time_s"] = time.perf_counter() - start
    start = time.perf_counter()
    cvs = cv_one_se(A[rows], y[rows], random_state=seed)
    cvs.info["time_s"] = time.perf_counter() - start
    return [*out, stab, cvs]


# ---------------------------------------------------------------------------------------------
# scoring against planted truth, and the planted study
# ---------------------------------------------------------------------------------------------


def selection_error(selected: np.ndarray, true_idx: np.ndarray, decoy_idx: np.ndarray | None = None) -> dict:
    r"""Fdr = |S \ true| / max(|S|, 1), power = |S & true| / |true|, k = |S|, decoys = |S & decoy|,
    fdr_null = |S \ (true | decoy)| / max(|S|, 1) (false discoveries among neurons with no class signal)."""
    selected = np.unique(np.asarray(selected, dtype=np.int64))
    true_idx = np.asarray(true_idx, dtype=np.int64)
    if true_idx.size == 0:
        raise ValueError("true_idx is empty; power needs at least one true neuron")
    decoy_idx = np.asarray([] if decoy_idx is None else decoy_idx, dtype=np.int64)
    is_true, is_decoy = np.isin(selected, true_idx), np.isin(selected, decoy_idx)
    denom = max(selected.size, 1)
    return {
        "fdr": float((~is_true).sum() / denom),
        "power": float(is_true.sum() / np.unique(true_idx).size),
        "k": int(selected.size),
        "decoys": int(is_decoy.sum()),
        "fdr_null": float((~is_true & ~is_decoy).sum() / denom),
    }


STUDY_METHODS = ("noise_rule", "noise_rule_bh", "knockoff+", "knockoff", "stability", "cv_1se", "cv_best")
PLANTED = {"d_mlp": 512, "d_model": 64, "k_true": 32}


def planted_unit(
    case: str,
    n: int,
    seed: int,
    *,
    fdr: float = 0.1,
    n_subsamples: int = 30,
    stability_threshold: float = 0.75,
    ev: float = 1.0,
    d_mlp: int = PLANTED["d_mlp"],
    d_model: int = PLANTED["d_model"],
    k_true: int = PLANTED["k_true"],
) -> list[dict]:
    """One planted layer (case "easy"/"hard", n rows, seed): one row per method of STUDY_METHODS.

    Every method gets the same n rows. The noise rule fits the output probe on a stratified half
    (``concepts.make_split``, as notebook 01) and selects on the other half (``n_select``); the
    comparators use all n rows of activations. Knockoff and knockoff+ share one knockoff draw;
    cv_best is the refit at CV's best C that cv_1se computes anyway. Columns: case, n, seed,
    method, n_select, k, fdr, power, decoys, fdr_null, time_s, and for the noise rules tau and the
    number of true neurons passing each clause on its own (true_pass_t, true_pass_dJ).
    """
    if case not in ("easy", "hard"):
        raise ValueError(f"case={case!r}; pass 'easy' or 'hard'")
    P = theory.planted_mlp(n=n, d_mlp=d_mlp, d_model=d_model, k_true=k_true, seed=seed, hard=case == "hard")
    base = {"case": case, "n": n, "seed": seed}
    rows = []

    def add(sel: Selection, n_select: int, elapsed: float, **extra) -> None:
        rows.append(
            dict(
                base,
                method=sel.method,
                n_select=n_select,
                **selection_error(sel.selected, P.true_idx, P.decoy_idx),
                time_s=elapsed,
                **extra,
            )
        )

    start = time.perf_counter()
    half = concepts.make_split(P.y, seed=seed, test_size=0.5)
    w, _ = theory.fit_output_probe(P.M[half.train], P.y[half.train], seed=seed)
    C_val = theory.neuron_contributions(P.A[half.test], theory.effective_neuron_weights(P.W_out, w))
    probe_s = time.perf_counter() - start
    for threshold in ("universal", "bh"):
        start = time.perf_counter()
        sel = noise_rule(C_val, P.y[half.test], threshold=threshold, fdr=fdr)
        res = sel.info["result"]
        in_true = np.isin(np.arange(d_mlp), P.true_idx)
        add(
            sel,
            half.test.size,
            probe_s + time.perf_counter() - start,
            tau=res.tau,
            true_pass_t=int((in_true & (res.t >= res.tau)).sum()),
            true_pass_dJ=int((in_true & (res.scores < 0)).sum()),
        )

    start = time.perf_counter()
    ko = knockoff_filter(P.A, P.y, fdr=fdr, offset=1, random_state=seed)
    elapsed = time.perf_counter() - start
    add(ko, n, elapsed)
    add(_selection("knockoff", ko.info["selected_other_offset"]), n, elapsed)

    start = time.perf_counter()
    stab = stability_selection(
        P.A, P.y, threshold=stability_threshold, ev=ev, n_subsamples=n_subsamples, random_state=seed
    )
    add(stab, n, time.perf_counter() - start)

    start = time.perf_counter()
    cvs = cv_one_se(P.A, P.y, random_state=seed)
    elapsed = time.perf_counter() - start
    add(cvs, n, elapsed)
    add(_selection("cv_best", cvs.info["selected_best"]), n, elapsed)
    return rows


def planted_study(
    *,
    ns: Sequence[int] = (200, 400, 1000, 2000, 4000),
    seeds: Sequence[int] = (0, 1, 2),
    cases: Sequence[str] = ("easy", "hard"),
    fdr: float = 0.1,
    n_subsamples: int = 30,
    stability_threshold: float = 0.75,
    ev: float = 1.0,
    desc: str = "",
) -> pd.DataFrame:
    """``planted_unit`` for every (case, n, seed), on ``parallel.n_workers()`` processes; one row per method.

    Rows come in (case, n, seed) order; the units are dealt largest n first, so that the slowest
    ones do not start last."""
    units = [(case, int(n), int(seed)) for case in cases for n in ns for seed in seeds]
    if not units:
        raise ValueError("the study is empty; pass at least one case, one n and one seed")
    fn = functools.partial(
        planted_unit, fdr=fdr, n_subsamples=n_subsamples, stability_threshold=stability_threshold, ev=ev
    )
    dealt = sorted(range(len(units)), key=lambda i: -units[i][1])  # stable: ties keep their order
    results = dict(zip(dealt, parallel.map_units(fn, [units[i] for i in dealt], desc=desc)))
    return pd.DataFrame([row for i in range(len(units)) for row in results[i]])
