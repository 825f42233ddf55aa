"""The causality-weighted sparse prober (paper claim 3) and its regularisation path.

An L1-regularised logistic probe on hidden activations ``A`` (n, d_mlp) in which neuron i's feature
is scaled by a weight ``w_i`` saying how much of what it writes matters::

    none          x_i = a_i                              (plain L1 probe)
    norm          x_i = a_i |W_out[i]|                   (size of the writing vector)
    contribution  x_i = a_i (W_out[i] . d),  |d| = 1     (its contribution to the output-space
                                                          concept score; beta = W_out d)
    adaptive      x_i = a_i |b_i|^gamma                  (adaptive lasso, Zou 2006; b from a dense
                                                          L2 probe on A; non-causal comparison)

Scaling feature i by w_i is the same as dividing its L1 penalty by |w_i|: sum_i |theta_i| with
``theta_i = coef_i s / w_i``. A neuron that writes nothing (w_i = 0) can never be selected.

Standardisation. Per-feature standardisation *after* weighting would cancel the weight
(``(a_i w_i) / sd(a_i w_i) == a_i / sd(a_i)``). So the design is centred per feature and divided by
ONE global scalar ``s`` (the RMS of the centred, weighted design), which keeps the relative weights
and makes C comparable across weightings and layers::

    standardize="global"   X_i = (a_i - mean_i) w_i / s
    standardize="feature"  X_i = (a_i - mean_i) / sd_i * w_i / s   (raw activations z-scored
                                                                    BEFORE weighting)

With weighting="none", "global" is plain L1 on raw-scale activations and "feature" is the classic
per-feature-standardised L1 probe (Dalvi et al. 2019) baseline.

Solver: scikit-learn's ``LogisticRegression(l1_ratio=1, solver="liblinear")`` (``penalty`` is
deprecated in 1.8+). liblinear penalises the intercept, so it gets ``intercept_scaling=100``, which
cuts that penalty 100-fold; on centred features the fitted intercept then agrees with saga's
unpenalised one to ~1e-3. liblinear has no warm start, yet a 20-strength path on 2000 x 1536
activations takes ~2 s against ~75 s for saga with warm starts (measured), so it is used for both
the single fit and the path.

Choosing k: ``choose_k(path, A_val, y_val)`` applies the noise-neuron rule of the theory module
(``theory.select_by_noise_removal``) to the held-out contributions a_i coef_i of the path's densest
fit; k = the number of non-noise neurons. ``PathResult.auroc_at(ks)`` reads a path's held-out AUROC
at given neuron counts, so curves from different splits share one k grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.svm import l1_min_c
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from .theory import NoiseRemovalResult, effective_neuron_weights, fit_output_probe, select_by_noise_removal

WEIGHTINGS = ("none", "norm", "contribution", "adaptive")
STANDARDIZATIONS = ("global", "feature")
_INTERCEPT_SCALING = 100.0
_C_RTOL = 1e-3  # bisection stops when C is pinned to 0.1 %: a tie of neurons entering together


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _check_finite(A: np.ndarray, name: str = "A") -> None:
    bad = int(np.size(A) - np.count_nonzero(np.isfinite(A)))
    if bad:
        raise ValueError(f"{name} contains NaN or inf in {bad} entries; drop or impute those rows before probing")


def _check_config(
    weighting: str, W_out, direction, standardize: str, d_mlp: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate the weighting options against d_mlp; return W_out and direction as float arrays."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; use one of {WEIGHTINGS}")
    if standardize not in STANDARDIZATIONS:
        raise ValueError(f"unknown standardize {standardize!r}; use one of {STANDARDIZATIONS}")
    if W_out is None:
        if weighting in ("norm", "contribution"):
            raise ValueError(
                f"weighting={weighting!r} needs W_out (d_mlp, d_model); pass the "
                "layer's writing vectors or use weighting='none'"
            )
    else:
        W_out = np.asarray(W_out, dtype=np.float64)
        if W_out.ndim != 2 or W_out.shape[0] != d_mlp:
            hint = " (W_out looks transposed; pass W_out.T)" if (W_out.ndim == 2 and W_out.shape[1] == d_mlp) else ""
            raise ValueError(
                f"A has {d_mlp} columns but W_out has shape {W_out.shape}; pass the "
                f"W_out (d_mlp, d_model) of the same layer as A{hint}"
            )
        _check_finite(W_out, "W_out")
    if weighting != "contribution":
        direction = None  # only contribution weighting uses it; ignored so callers can pass it
    if direction is not None:
        direction = np.asarray(direction, dtype=np.float64)
        if direction.ndim != 1 or direction.shape[0] != W_out.shape[1]:
            raise ValueError(
                f"direction has shape {direction.shape} but W_out has "
                f"{W_out.shape[1]} columns (d_model); pass a 1-D output-space "
                "direction of length d_model"
            )
        if not np.all(np.isfinite(direction)) or not np.any(direction):
            raise ValueError(
                "direction is zero or not finite; pass a non-zero finite concept "
                "direction, or direction=None to learn it"
            )
    return W_out, direction


def _binary_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (classes, y01) for a binary target; one-line errors for 1 or > 2 classes."""
    check_classification_targets(y)
    y_type = type_of_target(y, input_name="y", raise_unknown=True)
    if y_type != "binary":
        raise ValueError(
            f"Only binary classification is supported. The type of the target is "
            f"{y_type}; binarise y as concept vs rest"
        )
    classes, y01 = np.unique(y, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError(f"y contains one class only ({classes[0]!r}); a probe needs examples of both classes")
    return classes, y01.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# the weighted design (shared by SparseProber and prober_path)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Design:
    """Centred, weighted, globally scaled design X = (A - center) * unit, unit_i = w_i / (sd_i s)."""

    X: np.ndarray
    weights: np.ndarray  # w_i, the per-neuron feature weight (feature_weights_)
    center: np.ndarray  # training mean of each neuron
    unit: np.ndarray  # per-neuron map from raw activation to design column
    scale: float  # the global scalar s
    direction: np.ndarray | None  # unit concept direction d (contribution weighting)

    def to_neuron(self, theta: np.ndarray, b0: float) -> tuple[np.ndarray, float]:
        """Map design-space (theta, b0) to raw activation units: score = A @ coef + intercept."""
        coef = theta * self.unit
        return coef, float(b0 - self.center @ coef)


def _rms(X: np.ndarray) -> float:
    return float(np.sqrt(np.mean(X * X))) or 1.0


def _dense_l2_coef(X: np.ndarray, y01: np.ndarray, C: float, seed: int) -> np.ndarray:
    """Coefficients of the project's one L2 probe (``theory.fit_output_probe``: one global scale, so the
    result stays in X's units), used for the learned concept direction and the adaptive pilot."""
    return fit_output_probe(X, y01, C=C, seed=seed)[0]


def _build_design(
    A: np.ndarray,
    y01: np.ndarray,
    weighting: str,
    W_out: np.ndarray | None,
    direction: np.ndarray | None,
    standardize: str,
    gamma: float,
    dense_C: float,
    seed: int,
) -> _Design:
    """Build X_i = (a_i - mean_i) / sd_i * w_i / s for the chosen weighting (module docstring)."""
    center = A.mean(axis=0)
    Ac = A - center
    if standardize == "feature":
        sd = Ac.std(axis=0)
        sd[sd == 0] = 1.0
    else:
        sd = np.ones(A.shape[1])
    Z = Ac / sd
    d = None
    if weighting == "none":
        w = np.ones(A.shape[1])
    elif weighting == "norm":
        w = np.linalg.norm(W_out, axis=1)
    elif weighting == "contribution":
        if direction is None:
            # Circular if reused: d is fitted on the same (A, y) as the sparse probe; score held-out
            # data only, never the same fitted output probe on its own training rows.
            M = A @ W_out
            direction = _dense_l2_coef(M, y01, dense_C, seed)
            if not np.any(direction):
                raise ValueError(
                    "the output-space L2 probe learned a zero direction; pass direction= explicitly or raise dense_C"
                )
        d = direction / np.linalg.norm(direction)
        w = effective_neuron_weights(W_out, d)
    else:
        w = np.abs(_dense_l2_coef(Z, y01, dense_C, seed)) ** gamma
    s = _rms(Z * w)
    unit = w / (sd * s)
    return _Design(Ac * unit, w, center, unit, s, d)


# ---------------------------------------------------------------------------------------------
# fitting helpers
# ---------------------------------------------------------------------------------------------


def _l1_fit(
    X: np.ndarray, y01: np.ndarray, C: float, seed: int, tol: float, max_iter: int
) -> tuple[np.ndarray, float, int]:
    """One L1 logistic fit (liblinear); returns (theta, b0) in design units and n_iter."""
    clf = LogisticRegression(
        C=C,
        l1_ratio=1.0,
        solver="liblinear",
        intercept_scaling=_INTERCEPT_SCALING,
        tol=tol,
        max_iter=max_iter,
        random_state=seed,
    ).fit(X, y01)
    return clf.coef_[0].copy(), float(clf.intercept_[0]), int(clf.n_iter_[0])


def _min_C(X: np.ndarray, y01: np.ndarray) -> float:
    """Smallest C with a non-empty model: 1 / max_i |X_i . (y - ybar)| for centred X."""
    if not np.any(X.T @ (y01 - y01.mean())):
        raise ValueError(
            "no neuron's weighted activation correlates with y, so every L1 model "
            "is empty; check the weighting (e.g. all writing vectors zero) and labels"
        )
    # fit_intercept=False is exact here: X is centred and the intercept is (nearly) unpenalised.
    return float(l1_min_c(X, y01, loss="log", fit_intercept=False))


def _kkt_scores(X: np.ndarray, y01: np.ndarray, theta: np.ndarray, b0: float) -> np.ndarray:
    """|X_i . (y - p)| at a fit: how close an unselected neuron is to entering (enters at 1/C)."""
    return np.abs(X.T @ (y01 - expit(X @ theta + b0)))


def _ranking(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Permutation sorting by primary ascending, then secondary descending, then index."""
    idx = np.arange(primary.shape[0])
    return np.lexsort((idx, -secondary, primary))


def _fit_for_k(
    X: np.ndarray, y01: np.ndarray, k: int, seed: int, tol: float, max_iter: int
) -> tuple[tuple[np.ndarray, float, int], float]:
    """Bisection in log C from l1_min_c for n_selected == k, else the closest count above k.

    The starting point l1_min_c itself is never fitted: the model is empty there and liblinear
    fails to converge exactly at that kink.
    """
    c_lo = _min_C(X, y01)
    fits: dict[float, tuple[np.ndarray, float, int]] = {}

    def n_sel(C: float) -> int:
        fits[C] = _l1_fit(X, y01, C, seed, tol, max_iter)
        return int(np.count_nonzero(fits[C][0]))

    c_hi, c_cap = c_lo * 2.0, c_lo * 1e8
    while n_sel(c_hi) < k:
        if c_hi > c_cap:
            raise ValueError(
                f"k={k} neurons cannot be selected: at most "
                f"{int(np.count_nonzero(fits[c_hi][0]))} ever enter (zero-weight or "
                "constant neurons never do); pass a smaller k"
            )
        c_lo, c_hi = c_hi, c_hi * 4.0
    while np.count_nonzero(fits[c_hi][0]) != k and c_hi > c_lo * (1 + _C_RTOL):
        mid = float(np.sqrt(c_lo * c_hi))
        if n_sel(mid) < k:
            c_lo = mid
        else:
            c_hi = mid
    return fits[c_hi], c_hi


# ---------------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------------


class SparseProber(ClassifierMixin, BaseEstimator):
    """Causality-weighted sparse (L1) logistic probe on hidden neuron activations.

    Parameters
    ----------
    weighting : {"none", "norm", "contribution", "adaptive"}
        Per-neuron feature weight w_i (module docstring): 1, |W_out[i]|, W_out[i] . d, |b_i|^gamma.
    W_out : array (d_mlp, d_model) or None
        Writing vectors (row i = neuron i); required for "norm" and "contribution".
    C : float
        Inverse L1 strength on the centred, globally scaled design; ignored when k is given.
    k : int or None
        Target number of neurons. C is then chosen by bisection in log C upwards from
        ``l1_min_c`` so that ``n_selected_ == k``; when the path jumps over k (neurons entering
        at the same C to within 0.1 %) the smallest count found above k is kept, so
        ``n_selected_ >= k`` always and ``== k`` in all but such ties. ``C_`` records the C used.
    direction : array (d_model,) or None
        Fixed concept direction d for "contribution" (normalised to unit norm). If None, d is
        learned by an L2 logistic probe (strength ``dense_C``) on ``M = A @ W_out`` of the data
        passed to ``fit``. Caveat (circularity): that output probe is fitted on the training rows;
        evaluate on held-out rows and never score the same fitted output probe on its own data.
        Ignored by the other weightings.
    standardize : {"global", "feature"}
        "global": centre each neuron, divide the weighted design by ONE scalar (its RMS), so the
        relative weights survive. "feature": z-score the raw activations first, then weight and
        divide by one scalar (with weighting="none": the classic standardised L1 probe).
    gamma : float
        Adaptive-lasso exponent (weighting="adaptive").
    dense_C : float
        C of the auxiliary L2 probes (learned direction; adaptive-lasso pilot estimate).
    seed : int
        random_state of the solvers (liblinear shuffles its coordinates).
    tol, max_iter : solver tolerance and iteration cap.

    Attributes
    ----------
    coef_ : (d_mlp,) neuron-space coefficients in raw activation units, so that
        ``decision_function(A) == A @ coef_ + intercept_``.
    intercept_ : float.
    coef_weighted_ : (d_mlp,) coefficients theta of the weighted, scaled design (what L1 penalises);
        ``coef_ = theta * w / (sd * scale_)``.
    feature_weights_ : (d_mlp,) the weights w_i used (signed beta_i for "contribution").
    direction_ : (d_model,) unit concept direction for "contribution", else None.
    scale_ : the global scalar s.  C_ : the C actually used.  classes_ : the two labels.
    n_iter_ : liblinear iterations of the final fit.
    n_selected_ : number of neurons with non-zero coefficient.
    ranking_ : permutation of range(d_mlp), best first: the selected neurons by
        |coefficient x weight| = |coef_weighted_ * feature_weights_| descending (the paper's
        second named ranking; with k given, "|coefficient x weight| at a k-targeted fit"), then the
        unselected ones by their KKT score |X_i . (y - p)| at the fit descending (the neuron that
        would enter next as C grows comes first; zero-weight neurons score 0 and come last); ties
        by neuron index. ``prober_path`` gives the paper's other ranking, the order of entry.
    """

    def __init__(
        self,
        weighting: str = "contribution",
        W_out=None,
        C: float = 1.0,
        k: int | None = None,
        direction=None,
        standardize: str = "global",
        gamma: float = 1.0,
        dense_C: float = 1.0,
        seed: int = 0,
        tol: float = 1e-4,
        max_iter: int = 1000,
    ):
        self.weighting = weighting
        self.W_out = W_out
        self.C = C
        self.k = k
        self.direction = direction
        self.standardize = standardize
        self.gamma = gamma
        self.dense_C = dense_C
        self.seed = seed
        self.tol = tol
        self.max_iter = max_iter

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, A, y):
        """Fit the weighted L1 probe on activations A (n, d_mlp) and binary labels y."""
        A, y = validate_data(self, A, y, dtype=np.float64, ensure_all_finite=False)
        _check_finite(A)
        self.classes_, y01 = _binary_labels(y)
        d_mlp = A.shape[1]
        W_out, direction = _check_config(self.weighting, self.W_out, self.direction, self.standardize, d_mlp)
        if self.k is not None and not (isinstance(self.k, (int, np.integer)) and 1 <= self.k <= d_mlp):
            raise ValueError(
                f"k={self.k!r} but A has d_mlp={d_mlp} neurons; pass an integer 1 <= k <= {d_mlp}, or k=None and C"
            )
        if self.k is None and not (np.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C={self.C!r}; pass a finite C > 0 (larger C = more neurons)")
        if self.gamma <= 0:
            raise ValueError(f"gamma={self.gamma!r}; pass gamma > 0 (1 is the usual choice)")
        design = _build_design(
            A, y01, self.weighting, W_out, direction, self.standardize, self.gamma, self.dense_C, self.seed
        )
        if self.k is None:
            fit = _l1_fit(design.X, y01, self.C, self.seed, self.tol, self.max_iter)
            self.C_ = float(self.C)
        else:
            fit, self.C_ = _fit_for_k(design.X, y01, int(self.k), self.seed, self.tol, self.max_iter)
        theta, b0, self.n_iter_ = fit
        self.coef_, self.intercept_ = design.to_neuron(theta, b0)
        self.coef_weighted_ = theta
        self.feature_weights_ = design.weights
        self.direction_ = design.direction
        self.scale_ = design.scale
        self.n_selected_ = int(np.count_nonzero(theta))
        selected = theta != 0
        secondary = np.where(selected, np.abs(theta * design.weights), _kkt_scores(design.X, y01, theta, b0))
        self.ranking_ = _ranking((~selected).astype(np.int64), secondary)
        return self

    def decision_function(self, A) -> np.ndarray:
        """Probe score s = A @ coef_ + intercept_ (> 0 predicts classes_[1])."""
        check_is_fitted(self)
        A = validate_data(self, A, dtype=np.float64, ensure_all_finite=False, reset=False)
        _check_finite(A)
        return A @ self.coef_ + self.intercept_

    def predict_proba(self, A) -> np.ndarray:
        """Class probabilities [1 - sigmoid(s), sigmoid(s)], columns ordered as classes_."""
        p = expit(self.decision_function(A))
        return np.column_stack([1.0 - p, p])

    def predict(self, A) -> np.ndarray:
        """Predicted label: classes_[1] where s > 0, else classes_[0]."""
        positive = self.decision_function(A) > 0  # first, so an unfitted probe raises NotFittedError
        return self.classes_[positive.astype(np.int64)]


# ---------------------------------------------------------------------------------------------
# the regularisation path
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathResult:
    """One weighted L1 path: per strength C, the selected neurons and the held-out AUROC."""

    weighting: str
    Cs: np.ndarray  # (n_strengths,) increasing; Cs[0] = l1_min_c (empty model)
    n_selected: np.ndarray  # (n_strengths,) number of non-zero coefficients
    selected: list[np.ndarray]  # sorted neuron indices selected at each C
    auroc: np.ndarray  # (n_strengths,) roc_auc_score on (A_val, y_val); NaN without held-out rows
    coefs: np.ndarray  # (n_strengths, d_mlp) neuron-space coefficients (raw units)
    intercepts: np.ndarray  # (n_strengths,) so score = A @ coefs[j] + intercepts[j]
    entry_step: np.ndarray  # (d_mlp,) first path index where the neuron is non-zero; -1 never
    ranking: np.ndarray  # permutation of range(d_mlp), best first (order of entry)
    feature_weights: np.ndarray  # (d_mlp,) w_i used
    direction: np.ndarray | None  # unit concept direction (contribution weighting)

    @property
    def n_entered(self) -> int:
        """How many neurons ever enter the path: the first that many of ``ranking`` are ordered by entry,
        the rest by how close they are to entering at the least regularised fit."""
        return int((self.entry_step >= 0).sum())

    def top(self, k: int) -> np.ndarray:
        """The k best-ranked neurons (order of entry along the path)."""
        if not 1 <= k <= self.ranking.shape[0]:
            raise ValueError(f"k={k} but the path has {self.ranking.shape[0]} neurons; pass 1 <= k <= d_mlp")
        return self.ranking[:k]

    def auroc_at(self, ks) -> np.ndarray:
        """Held-out AUROC at k selected neurons, for each k: linear in log k between the two path
        points that bracket k (the last with fewer than k neurons, the first with at least k);
        the first such point's AUROC when the one before it is empty or k is hit exactly; NaN when
        the path never selects k neurons. Lets curves from different splits share one k grid."""
        ks = np.atleast_1d(np.asarray(ks, dtype=np.float64))
        if np.any(ks < 1):
            raise ValueError(f"ks={ks.tolist()}; pass neuron counts >= 1")
        out = np.full(ks.shape, np.nan)
        for j, k in enumerate(ks):
            hit = np.flatnonzero(self.n_selected >= k)
            if hit.size == 0:
                continue
            hi = int(hit[0])
            n_hi, n_lo = self.n_selected[hi], self.n_selected[hi - 1] if hi > 0 else 0
            if n_lo < 1 or n_hi == k:
                out[j] = self.auroc[hi]
            else:
                frac = (np.log(k) - np.log(n_lo)) / (np.log(n_hi) - np.log(n_lo))
                out[j] = self.auroc[hi - 1] + frac * (self.auroc[hi] - self.auroc[hi - 1])
        return out


def _path_inputs(
    A, y, weighting: str, W_out, direction, n_strengths: int, c_max_ratio: float, standardize: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate the training rows and settings of a path (``prober_path``): returns
    (A as float64, the two classes, y as 0/1, W_out, direction)."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2:
        raise ValueError(f"A has shape {A.shape}; pass 2-D activations (n, d_mlp)")
    _check_finite(A)
    y = np.asarray(y)
    if y.shape != (A.shape[0],):
        raise ValueError(f"y has shape {y.shape} for {A.shape[0]} rows; pass one label per row")
    classes, y01 = _binary_labels(y)
    if n_strengths < 2 or not c_max_ratio > 1:
        raise ValueError(
            f"n_strengths={n_strengths}, c_max_ratio={c_max_ratio}; pass n_strengths >= 2 and c_max_ratio > 1"
        )
    W_out, direction = _check_config(weighting, W_out, direction, standardize, A.shape[1])
    return A, classes, y01, W_out, direction


def _held_out(A: np.ndarray, classes: np.ndarray, A_val, y_val) -> tuple[np.ndarray, np.ndarray]:
    """Validate a path's held-out rows against its training rows: (A_val as float64, y_val as 0/1)."""
    if A_val is None or y_val is None:
        raise ValueError("pass both A_val and y_val (held-out rows for the AUROCs), or neither")
    A_val = np.asarray(A_val, dtype=np.float64)
    if A_val.ndim != 2 or A_val.shape[1] != A.shape[1]:
        raise ValueError(
            f"A has shape {A.shape} and A_val {A_val.shape}; pass 2-D activations of "
            "the same neurons (same d_mlp columns)"
        )
    _check_finite(A_val, "A_val")
    y_val = np.asarray(y_val)
    if y_val.shape != (A_val.shape[0],):
        raise ValueError(f"y_val has shape {y_val.shape} for {A_val.shape[0]} rows; pass one label per row")
    if not np.all(np.isin(y_val, classes)) or np.unique(y_val).shape[0] < 2:
        raise ValueError(
            f"y_val must contain both training classes {classes.tolist()} for AUROC; use a stratified split"
        )
    return A_val, (y_val == classes[1]).astype(np.int64)


def prober_path(
    A,
    y,
    A_val=None,
    y_val=None,
    *,
    weighting: str = "contribution",
    W_out=None,
    direction=None,
    n_strengths: int = 20,
    c_max_ratio: float = 100.0,
    standardize: str = "global",
    gamma: float = 1.0,
    dense_C: float = 1.0,
    seed: int = 0,
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> PathResult:
    """Weighted L1 path over Cs = l1_min_c * logspace(0, log10(c_max_ratio), n_strengths).

    The design (weights, centring, global scale, learned direction) is built once on (A, y), as in
    ``SparseProber``; each strength is one liblinear fit (faster here than warm-started saga, see the
    module docstring). ranking = order of entry along the path: neurons entering at an earlier C
    rank higher, ties broken by |coef_weighted| (|theta|, the coefficient of the weighted feature)
    at entry; neurons that never enter follow, ordered by their KKT score |X_i . (y - p)| at the
    largest C (the next to enter first); remaining ties by neuron index.

    Without held-out rows (A_val, y_val None) the AUROCs are NaN: the paper's ranking as a ranker needs
    only its training rows (``rankers.paper_path``).
    """
    A, classes, y01, W_out, direction = _path_inputs(
        A, y, weighting, W_out, direction, n_strengths, c_max_ratio, standardize
    )
    held = None if A_val is None and y_val is None else _held_out(A, classes, A_val, y_val)
    design = _build_design(A, y01, weighting, W_out, direction, standardize, gamma, dense_C, seed)
    Cs = _min_C(design.X, y01) * np.logspace(0.0, np.log10(c_max_ratio), n_strengths)
    d_mlp = A.shape[1]
    coefs = np.zeros((n_strengths, d_mlp))
    intercepts = np.zeros(n_strengths)
    entry_step = np.full(d_mlp, -1, dtype=np.int64)
    entry_size = np.zeros(d_mlp)
    for j, C in enumerate(Cs):
        if j == 0:
            # At l1_min_c the model is empty by the KKT conditions; liblinear stalls on this kink.
            theta, b0 = np.zeros(d_mlp), float(np.log(y01.mean() / (1 - y01.mean())))
        else:
            theta, b0, _ = _l1_fit(design.X, y01, C, seed, tol, max_iter)
        coefs[j], intercepts[j] = design.to_neuron(theta, b0)
        new = (theta != 0) & (entry_step < 0)
        entry_step[new] = j
        entry_size[new] = np.abs(theta[new])
    never = entry_step < 0
    entry_size[never] = _kkt_scores(design.X, y01, theta, b0)[never]
    ranking = _ranking(np.where(never, n_strengths, entry_step), entry_size)
    if held is None:
        auroc = np.full(n_strengths, np.nan)
    else:
        A_val, yv01 = held
        auroc = np.array([roc_auc_score(yv01, A_val @ c + b) for c, b in zip(coefs, intercepts)])
    selected = [np.flatnonzero(c) for c in coefs]
    return PathResult(
        weighting,
        Cs,
        np.array([s.shape[0] for s in selected]),
        selected,
        auroc,
        coefs,
        intercepts,
        entry_step,
        ranking,
        design.weights,
        design.direction,
    )


# ---------------------------------------------------------------------------------------------
# choosing k: the noise-neuron rule of the theory module
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KChoice:
    """k chosen on a path by the noise-neuron rule (``theory.select_by_noise_removal``)."""

    k: int  # number of non-noise neurons among the reference fit's neurons
    step: int  # first path index with n_selected >= k
    kept: np.ndarray  # sorted indices of the non-noise neurons
    reference_step: int  # path index whose coefficients define the contributions
    noise: NoiseRemovalResult


def choose_k(
    path: PathResult,
    A_val,
    y_val,
    *,
    reference_step: int = -1,
    tau: float | None = None,
    ridge: float = 1e-6,
    threshold: str = "universal",
    fdr: float = 0.1,
) -> KChoice:
    """K = number of non-noise neurons of a path's fit, by the noise-neuron rule on held-out rows.

    The contributions are ``c_i(x) = a_i(x) coef_i`` of the path's fit at ``reference_step``
    (default: the last, least regularised one, i.e. start from the largest probe and remove its
    noise neurons), evaluated on (A_val, y_val) — rows the probe was NOT fitted on, as the theory
    module requires (on the fitting rows every coefficient has absorbed chance correlations).
    Neuron i is noise iff removing it raises the Fisher ratio of the score or its Welch t is below
    tau (default sqrt(2 ln d_mlp); ``threshold="bh"``: the named variant, Benjamini-Hochberg at level
    ``fdr`` on the t's p-values); unselected neurons contribute exactly 0 and are always noise,
    so ``k <= n_selected[reference_step]``. ``step`` is the first path point with at least k
    neurons, the sparse probe the rule picks (0, the empty model, when k = 0). y_val must use the
    labels the path was fitted with (its larger label is the positive class).
    """
    A_val = np.asarray(A_val, dtype=np.float64)
    if A_val.ndim != 2 or A_val.shape[1] != path.coefs.shape[1]:
        raise ValueError(
            f"A_val has shape {A_val.shape} but the path has {path.coefs.shape[1]} "
            "neurons; pass held-out activations of the same layer"
        )
    _check_finite(A_val, "A_val")
    y_val = np.asarray(y_val)
    _, y01 = _binary_labels(y_val)
    if y_val.shape != (A_val.shape[0],):
        raise ValueError(f"y_val has shape {y_val.shape} for {A_val.shape[0]} rows; pass one label per row")
    n = path.coefs.shape[0]
    if not -n <= reference_step < n:
        raise ValueError(f"reference_step={reference_step} but the path has {n} strengths")
    ref = reference_step % n
    result = select_by_noise_removal(A_val * path.coefs[ref], y01, tau=tau, ridge=ridge, threshold=threshold, fdr=fdr)
    reached = np.flatnonzero(path.n_selected >= result.k)
    step = int(reached[0]) if reached.size else -1
    return KChoice(result.k, step, result.kept, ref, result)
