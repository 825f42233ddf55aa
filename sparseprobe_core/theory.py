r"""Reduction theory and the noise-neuron criterion (paper claims 1 and 2).

Notation (one layer, one token position): hidden activations ``A`` (n, d_mlp), writing vectors
``W_out`` (d_mlp, d_model) with row i = neuron i's writing vector, MLP output
``M = A @ W_out + b_out`` (n, d_model), labels ``y`` in {0, 1}.

Reduction (claim 1)
-------------------
An output-space probe ``s = M w + c`` is a neuron-space probe with effective weights
``beta = W_out w``::

    s = sum_i a_i beta_i + (w . b_out + c),   beta_i = W_out[i] . w = |W_out[i]| |w| cos(theta_i).

Each neuron contributes ``c_i(x) = a_i(x) beta_i``: the sign/size of its activation times the
alignment of what it writes with the probe direction. The converse holds only inside the column
space of ``W_out`` (rank <= d_model < d_mlp): a neuron-space probe ``v`` is an output probe iff
``v = W_out w`` for some ``w``; ``writable_projection`` splits any ``v`` into that part and the rest.

Post-norm blocks (Gemma 2/3)
----------------------------
A Gemma 3 block does not add the MLP output m = a W_out to the residual stream: it adds its RMS
norm, ``p = (1 + g) * m * r(x)`` with the per-example gain ``r(x) = 1 / sqrt(mean_j m_j(x)^2 + eps)``
(``post_norm``). A probe ``s = p . w + c`` on what the block writes is therefore::

    s = r(x) (sum_i a_i beta^g_i) + c,   beta^g = W_out ((1 + g) * w)   (``post_norm_neuron_weights``),

the reduction with the probe direction reweighted by the norm's scale and every contribution
``a_i beta^g_i`` of one example multiplied by the same positive number r(x). What this means for
claim 1: the reduction holds exactly for the MLP's own output m (TransformerLens'
``blocks.L.mlp.hook_out``, the hook this project reads on every model); for what a post-norm block
writes it holds up to that positive per-example factor. Within one example the neurons' contributions
keep their signs and their order, but the score is not a linear function of a: r(x) depends on every
neuron (ablating neurons changes it), and it rescales examples relative to the threshold c, so the
post-norm probe is not any fixed linear neuron probe. The fixed scale (1 + g) on its own is harmless
(a probe w on (1 + g) * m is the probe (1 + g) * w on m), but it changes which probe a regularised fit
finds. ``compare_post_norm_probe`` separates the two effects on held-out rows. Measured on Gemma 3
270M (5 shipped concepts x layers 2, 5, 9, 13, 17, 200 texts per class, 3 splits): both rewrites hold
to float32 precision (max relative difference 5e-7 before the norm, 7e-7 after it, with r(x)); r(x)
ranges 0.6-29 over texts (4.8-17 at layer 9). The gain itself changes little: for one probe, the
neurons' class differences with and without it have Spearman 0.93-1.00, and dropping it changes the
AUROC by -0.006..+0.017. But probes fitted on m and on what the block writes rank the neurons
differently (Spearman 0.36-0.78; AUROC on p lower by up to 0.14, by 0.02 on average), and almost all of
that comes from the fixed scale (1 + g), which spans -0.17 to 1650 and so reweights the probe's L2
penalty per output dimension: a probe on (1 + g) * m, which is linear in a, agrees with the probe on p
to Spearman 0.91-0.99 and AUROC within 0.015.

Noise-neuron criterion (claim 2)
--------------------------------
The probe score restricted to a neuron set S is ``s_S = sum_{i in S} c_i``. Its separability is the
class-conditional Fisher ratio::

    J(S) = D(S) |D(S)| / V(S),   D(S) = mu_1(S) - mu_0(S),   V(S) = var_1(S) + var_0(S).

(``D |D|`` rather than ``D^2``: for a probe oriented so that class 1 scores higher, D > 0 and this is
the usual Fisher ratio; the sign stops the selection from preferring a set that separates the
classes the wrong way round.) With ``delta_i = E[c_i | y=1] - E[c_i | y=0]`` and
``Sigma = Cov(c | y=0) + Cov(c | y=1)`` (d_mlp x d_mlp), and ``u_S`` the indicator vector of S::

    D(S) = delta . u_S,        V(S) = u_S^T Sigma u_S.

Removing neuron i from S changes both in closed form, with ``g_i(S) = (Sigma u_S)_i =
Cov_0(c_i, s_S) + Cov_1(c_i, s_S)`` (the neuron's within-class covariance with the score)::

    D(S \ i) = D - delta_i,    V(S \ i) = V - 2 g_i + Sigma_ii,
    Delta J_i(S) = J(S \ i) - J(S).

**Per-neuron score**: ``Delta J_i`` (``noise_scores``), a number for every neuron in closed form
from the class means and covariances of the contributions (O(n d_mlp): only ``g = Sigma 1`` is
needed, never the d_mlp x d_mlp matrix). To first order in one neuron's contribution::

    Delta J_i / J ~= 2 (g_i / V - delta_i / D),

so removing i raises J iff its share of the score's within-class variance exceeds its share of the
class difference, ``g_i / V > delta_i / D``. A neuron with no class difference (delta_i = 0) whose
variance is not cancelled by the others (g_i > 0) always raises J when removed, whatever its mean
activation: a large activation does not make a concept neuron. In a wide layer every g_i / V is small, so the
ranking by ``Delta J_i`` is close to the ranking by ``delta_i = beta_i (E[a_i|1] - E[a_i|0])``, the
class difference of what the neuron writes along the probe direction.

**Noise rule** (``select_by_noise_removal``): neuron i is noise iff

    Delta J_i > 0  (removing it raises J)   or   t_i < tau  (its class means are "near equal"),

with ``t_i = delta_i / se(delta_i)``, ``se^2 = Var_1(c_i)/n_1 + Var_0(c_i)/n_0`` (Welch), and
``tau = sqrt(2 ln d_mlp)`` by default (the universal threshold: under the null of equal class means
for all d_mlp neurons, max_i t_i exceeds it with small probability). The second clause is needed
because ``Delta J_i < 0`` alone holds for every neuron whose sample delta_i happens to be positive:
measured on ``planted_mlp`` it keeps about half of the pure-noise neurons. **Rule for k**: k = number
of non-noise neurons.

**Named variant** ``threshold="bh"``: tau is the Benjamini-Hochberg threshold at level ``fdr`` (default
0.1) on the one-sided p-values ``P(T_{n-2} > t_i)`` (``bh_t_threshold``) instead of sqrt(2 ln d_mlp). The
universal threshold bounds the chance that ANY null neuron passes (family-wise, ~0.1 at d_mlp = 512),
and a concept neuron of effect size d' reaches it only when d' sqrt(n_val) / 2 >= sqrt(2 ln d_mlp):
with n_val = 100 validation rows that needs d' >= 0.71, so on the planted layer (d' in [0.4, 0.8])
only ~9 of 32 pass at n = 200 while Delta J_i < 0 holds for ~30 (``selection.planted_study``). BH
bounds the expected share of null neurons among those kept instead, and its threshold falls to
~2.5 when many neurons are significant. The default stays "universal".

**Ranking**: non-noise neurons first, each block by ``Delta J_i`` ascending (the larger the drop in J
on removal, the better).

Why not greedy backward elimination (repeatedly drop argmax Delta J_i(S) while it is > 0): with the
probe's weights beta fixed, the J-maximising subset drops concept neurons whose beta_i is large for
their class signal (removing an over-weighted neuron raises J once the noise is gone), and in-sample
J never stops while a neuron has a lucky positive delta_i. On ``planted_mlp`` (d_mlp=512, k*=32,
easy case, 5 seeds) its order had precision@k* 0.81-0.94 against 0.97-1.00 for the rule above, and
it stopped at k ~ 220; so the one-shot rule is used.

**Data split**: compute C on rows the probe w was not fitted on. On the fitting rows, w has absorbed
chance correlations, which biases every noise neuron's delta_i upwards.

**Ridge**: ``Sigma_ii`` and ``g_i`` get ``+ lambda``, ``lambda = ridge * mean_i Sigma_ii`` (default
ridge = 1e-6), so V > 0 even when all contributions are constant (dead neurons, beta_i = 0), and a
neuron that carries exactly nothing has Delta J_i > 0 (noise) rather than a tie at 0.

Planted ground truth
--------------------
``planted_mlp`` plants k* concept neurons whose activation shifts with the class AND whose writing
vector points along a concept direction u, so that their class-conditional output moves along u.
``true_idx`` is exactly that set (causal reading: it contains the weak writers, whose writing norm
is small but whose class shift is real). Hard cases: loud noise (large mean activation, no class
shift), weak writers, correlated noise (one shared latent factor), and decoys (class shift but
writing orthogonal to u). Decoys are *not* in ``true_idx``: they do not move the output along u.
Their class signal is still visible in M along their own writing directions, so an output probe
trained on labels uses them and every label-based ranking counts them as positives; the notebook
reports them separately (``decoy_idx``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats
from scipy.special import ndtr, stdtr
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

__all__ = [
    "DIRECTION_ESTIMATORS",
    "NOISE_THRESHOLDS",
    "ContributionDecomposition",
    "NoiseRemovalResult",
    "PlantedMLP",
    "PostNormComparison",
    "WritableProjection",
    "bh_t_threshold",
    "compare_post_norm_probe",
    "concept_direction",
    "contribution_decomposition",
    "effective_neuron_weights",
    "fisher_curve",
    "fisher_ratio",
    "fit_output_probe",
    "max_relative_difference",
    "neuron_contributions",
    "noise_scores",
    "output_to_neuron_score",
    "planted_mlp",
    "post_norm",
    "post_norm_gain",
    "post_norm_neuron_weights",
    "precision_at_k",
    "recall_at_k",
    "select_by_noise_removal",
    "writable_projection",
]


# ---------------------------------------------------------------------------------------------
# input checks (one-line errors that say how to fix the call)
# ---------------------------------------------------------------------------------------------


def as_2d(X: np.ndarray, name: str) -> np.ndarray:
    """`X` as an array, which must be 2-D (rows x features); `name` is how the error calls it."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D but has shape {X.shape}; pass an (n, features) array")
    return X


def _check_W_out(W_out: np.ndarray) -> np.ndarray:
    W_out = np.asarray(W_out)
    if W_out.ndim != 2:
        raise ValueError(
            f"W_out must be 2-D (d_mlp, d_model) but has shape {W_out.shape}; "
            "pass the layer's output weight with one row per neuron"
        )
    return W_out


def _check_A_W(A: np.ndarray, W_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    A = as_2d(A, "A")
    W_out = _check_W_out(W_out)
    if A.shape[1] != W_out.shape[0]:
        hint = " (W_out looks transposed; pass W_out.T)" if A.shape[1] == W_out.shape[1] else ""
        raise ValueError(
            f"A has {A.shape[1]} columns but W_out has {W_out.shape[0]} rows; pass the "
            f"W_out (d_mlp, d_model) of the same layer as A{hint}"
        )
    return A, W_out


def _check_w(W_out: np.ndarray, w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 1 or w.shape[0] != W_out.shape[1]:
        raise ValueError(
            f"w has shape {w.shape} but W_out has {W_out.shape[1]} columns (d_model); "
            "pass the output-space probe direction as a 1-D array of length d_model"
        )
    return w


def check_y(y: np.ndarray, n: int) -> np.ndarray:
    """`y` as integer labels: one per row of the data (`n` rows), only 0 and 1, at least 2 rows of each class."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y has shape {y.shape} but the data has {n} rows; pass one label per row")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("y must contain only 0 and 1; map the two classes to {0, 1}")
    counts = np.bincount(y.astype(int), minlength=2)
    if counts.min() < 2:
        raise ValueError(
            f"y has {counts[0]} rows of class 0 and {counts[1]} of class 1; each class needs at least 2 rows"
        )
    return y.astype(int)


# ---------------------------------------------------------------------------------------------
# reduction: output probe == neuron probe
# ---------------------------------------------------------------------------------------------


def effective_neuron_weights(W_out: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Effective neuron weights of an output-space probe: beta = W_out w, beta_i = W_out[i] . w."""
    W_out = _check_W_out(W_out)
    return W_out @ _check_w(W_out, w)


def neuron_contributions(A: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Per-neuron contributions to the probe score: c_i(x) = a_i(x) beta_i, shape (n, d_mlp)."""
    A = as_2d(A, "A")
    beta = np.asarray(beta)
    if beta.ndim != 1 or beta.shape[0] != A.shape[1]:
        raise ValueError(
            f"beta has shape {beta.shape} but A has {A.shape[1]} columns; pass "
            "beta = effective_neuron_weights(W_out, w) for the same layer as A"
        )
    return A * beta


def output_to_neuron_score(
    A: np.ndarray, W_out: np.ndarray, b_out: np.ndarray, w: np.ndarray, c: float = 0.0
) -> np.ndarray:
    """Output probe score computed in neuron space: s = A beta + (w . b_out + c) = M w + c."""
    A, W_out = _check_A_W(A, W_out)
    w = _check_w(W_out, w)
    b_out = np.asarray(b_out)
    if b_out.shape != (W_out.shape[1],):
        raise ValueError(
            f"b_out has shape {b_out.shape} but W_out has {W_out.shape[1]} columns; "
            "pass the layer's output bias (zeros if the MLP has none)"
        )
    return A @ effective_neuron_weights(W_out, w) + (w @ b_out + c)


def max_relative_difference(s_ref: np.ndarray, s: np.ndarray) -> float:
    """Agreement of two score vectors: max_x |s(x) - s_ref(x)| / max_x |s_ref(x)|."""
    s_ref, s = np.asarray(s_ref, dtype=np.float64), np.asarray(s, dtype=np.float64)
    if s_ref.shape != s.shape:
        raise ValueError(f"scores have shapes {s_ref.shape} and {s.shape}; pass scores of the same rows")
    scale = np.max(np.abs(s_ref))
    return float(np.max(np.abs(s - s_ref)) / scale) if scale > 0 else float(np.max(np.abs(s)))


@dataclass(frozen=True)
class ContributionDecomposition:
    """Per-neuron factors of beta_i = |W_out[i]| |w| cos(theta_i) and of c_i = a_i beta_i."""

    mean_activation: np.ndarray  # (d_mlp,) E[a_i]
    mean_activation_by_class: np.ndarray | None  # (2, d_mlp) E[a_i | y=k], None without y
    writing_norm: np.ndarray  # (d_mlp,) |W_out[i]|
    cos_theta: np.ndarray  # (d_mlp,) cos angle(W_out[i], w); 0 for a zero row
    beta: np.ndarray  # (d_mlp,) |W_out[i]| |w| cos(theta_i)
    mean_contribution: np.ndarray  # (d_mlp,) E[a_i] beta_i


def contribution_decomposition(
    A: np.ndarray, W_out: np.ndarray, w: np.ndarray, y: np.ndarray | None = None
) -> ContributionDecomposition:
    """Split c_i = a_i beta_i into activation, writing norm |W_out[i]| and cos(theta_i) with w."""
    A, W_out = _check_A_W(A, W_out)
    w = _check_w(W_out, w)
    norm = np.linalg.norm(W_out, axis=1)
    w_norm = np.linalg.norm(w)
    denom = norm * w_norm
    cos = np.divide(W_out @ w, denom, out=np.zeros_like(norm, dtype=np.float64), where=denom > 0)
    beta = norm * w_norm * cos
    by_class = None
    if y is not None:
        y = check_y(y, A.shape[0])
        by_class = np.stack([A[y == 0].mean(axis=0), A[y == 1].mean(axis=0)])
    mean_a = A.mean(axis=0)
    return ContributionDecomposition(mean_a, by_class, norm, cos, beta, mean_a * beta)


class WritableProjection(NamedTuple):
    """v = v_par + v_perp with v_par = W_out w in col(W_out) and v_perp orthogonal to it."""

    v_par: np.ndarray  # (d_mlp,) part an output-space probe can express
    v_perp: np.ndarray  # (d_mlp,) part no output-space probe can express
    w: np.ndarray  # (d_model,) output probe with W_out w == v_par (minimum norm)

    @property
    def outside_fraction(self) -> float:
        """Share of the probe's squared norm outside col(W_out): |v_perp|^2 / |v|^2."""
        total = float(self.v_par @ self.v_par + self.v_perp @ self.v_perp)
        return float(self.v_perp @ self.v_perp) / total if total > 0 else 0.0


def writable_projection(W_out: np.ndarray, v: np.ndarray) -> WritableProjection:
    """Project a neuron-space probe onto col(W_out): w = argmin |W_out w - v|, v_par = W_out w."""
    W_out = _check_W_out(W_out)
    v = np.asarray(v)
    if v.ndim != 1 or v.shape[0] != W_out.shape[0]:
        raise ValueError(
            f"v has shape {v.shape} but W_out has {W_out.shape[0]} rows (d_mlp); pass a "
            "neuron-space probe with one weight per neuron"
        )
    w, *_ = np.linalg.lstsq(W_out, v, rcond=None)
    v_par = W_out @ w
    return WritableProjection(v_par, v - v_par, w)


def fit_output_probe(M: np.ndarray, y: np.ndarray, C: float = 1.0, seed: int = 0) -> tuple[np.ndarray, float]:
    """L2 logistic probe s = M w + c on MLP outputs; returns (w, c) in raw output units.

    The project's one L2 fitter for a concept *direction* (the reduction, the contribution weighting
    of the prober and its adaptive pilot, grad x act of a probe, the noise criterion all use it), so
    "the concept direction" does not depend on which module computed it. The classifiers that *judge*
    an ablation are a different role: ``ablation.dense_probe`` (per-feature standardised)."""
    M = as_2d(M, "M")
    y = check_y(y, M.shape[0])
    # One global scale (not per-feature) so that w stays a direction in raw output space.
    # liblinear: exact and fast at these sizes; intercept_scaling=10 keeps its penalty on c small.
    scale = float(np.std(M)) or 1.0
    clf = LogisticRegression(C=C, solver="liblinear", intercept_scaling=10.0, max_iter=1000, random_state=seed).fit(
        M / scale, y
    )
    return clf.coef_[0] / scale, float(clf.intercept_[0])


DIRECTION_ESTIMATORS = ("l2_probe", "l2_probe_cv", "mean_diff", "lda_shrinkage")
_CV_CS = np.logspace(-4, 2, 13)  # l2_probe_cv's grid of C (on M divided by one global scale)


def concept_direction(
    M: np.ndarray, y: np.ndarray, *, estimator: str = "l2_probe", C: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Unit concept direction d (d_model,) in MLP-output space, oriented so that class 1 scores higher
    (d . (mu_1 - mu_0) >= 0). The one place every ranker that needs d gets it from:

    - "l2_probe": the L2 logistic probe w of ``fit_output_probe`` (strength C);
    - "l2_probe_cv": the same probe with C chosen by 5-fold stratified cross-validation (log-loss) over
      ``_CV_CS``, ``LogisticRegressionCV``;
    - "mean_diff": the class-mean difference mu_1 - mu_0 of M (no covariance: stable, but it counts
      directions that vary a lot within each class as much as quiet ones);
    - "lda_shrinkage": Fisher's discriminant Sigma^-1 (mu_1 - mu_0) with the Ledoit-Wolf shrunk
      within-class covariance, ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")``.

    C and seed matter to the probes only."""
    if estimator not in DIRECTION_ESTIMATORS:
        raise ValueError(f"unknown direction estimator {estimator!r}; use one of {', '.join(DIRECTION_ESTIMATORS)}")
    M = as_2d(M, "M").astype(np.float64, copy=False)
    y = check_y(y, M.shape[0])
    shift = M[y == 1].mean(axis=0) - M[y == 0].mean(axis=0)
    if estimator == "l2_probe":
        d = fit_output_probe(M, y, C=C, seed=seed)[0]
    elif estimator == "l2_probe_cv":
        scale = float(np.std(M)) or 1.0  # one global scale, as fit_output_probe: d stays in raw units
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        cv = LogisticRegressionCV(
            Cs=_CV_CS,
            l1_ratios=(0.0,),
            cv=folds,
            scoring="neg_log_loss",
            solver="liblinear",  # as fit_output_probe; lbfgs took 5x longer here (400 x 576, measured)
            intercept_scaling=10.0,
            max_iter=1000,
            random_state=seed,
            use_legacy_attributes=False,
        )
        d = cv.fit(M / scale, y).coef_[0] / scale
    elif estimator == "mean_diff":
        d = shift
    else:
        d = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(M, y).coef_[0]
    norm = float(np.linalg.norm(d))
    if norm == 0 or not np.isfinite(norm):
        raise ValueError(f"the {estimator} direction is zero or not finite; check that the classes differ in M")
    return (d if d @ shift >= 0 else -d) / norm


# ---------------------------------------------------------------------------------------------
# post-norm blocks (Gemma 2/3): what the block writes is the RMS-normalised MLP output
# ---------------------------------------------------------------------------------------------


def _check_scale(scale: np.ndarray, d_model: int) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float64)
    if scale.shape != (d_model,):
        raise ValueError(
            f"scale has shape {scale.shape} but the outputs have {d_model} columns; pass the "
            "post-MLP norm's (1 + g) of the same layer (models.mlp_post_norm)"
        )
    return scale


def post_norm_gain(M: np.ndarray, eps: float) -> np.ndarray:
    """Per-example gain of an RMS norm: r(x) = 1 / sqrt(mean_j m_j(x)^2 + eps), shape (n,), always > 0."""
    M = as_2d(M, "M").astype(np.float64, copy=False)
    return 1.0 / np.sqrt((M**2).mean(axis=1) + eps)


def post_norm(M: np.ndarray, scale: np.ndarray, eps: float) -> np.ndarray:
    """What a post-norm block adds to the residual stream for MLP outputs M: p = scale * m * r(x)."""
    M = as_2d(M, "M")
    return _check_scale(scale, M.shape[1]) * M * post_norm_gain(M, eps)[:, None]


def post_norm_neuron_weights(W_out: np.ndarray, scale: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Neuron weights of a probe w on the post-norm output: beta^g = W_out (scale * w), so that
    p . w = r(x) (a . beta^g + b_out . (scale * w))."""
    W_out = _check_W_out(W_out)
    return W_out @ (_check_scale(scale, W_out.shape[1]) * _check_w(W_out, w))


@dataclass(frozen=True)
class PostNormComparison:
    """Probes on what a post-norm block writes (P) and on the MLP's own output (M), on held-out rows.

    Three probes, each fitted with `fit_output_probe`: on M; on S = scale * M (the norm's fixed
    per-dimension scale without the per-example gain: still exactly a linear neuron probe, with
    beta = W_out (scale * w)); on P = r(x) S. Contributions are compared by the rank correlation over
    neurons of their class differences delta_i = E[c_i | y=1] - E[c_i | y=0]."""

    auroc_pre: float  # probe on M
    auroc_scaled: float  # probe on S
    auroc_post: float  # probe on P
    auroc_post_linear: float  # the P probe's neuron score without the gain, a . beta^g (a linear neuron probe)
    spearman_pre_post: float  # delta_i: a_i beta_i (M probe) vs r(x) a_i beta^g_i (P probe)
    spearman_scaled_post: float  # delta_i: S probe vs P probe (what the gain changes in the fit)
    spearman_gain: float  # delta_i of the P probe without vs with r(x) (what the gain does to contributions)
    identity_pre: float  # max relative difference of M w + c and a . beta + b_out . w + c
    identity_post: float  # the same for P w + c and r(x) (a . beta^g + b_out . (scale w)) + c
    gain: np.ndarray  # r(x) on the held-out rows


def _class_difference(C: np.ndarray, y: np.ndarray) -> np.ndarray:
    return C[y == 1].mean(axis=0) - C[y == 0].mean(axis=0)


def _spearman(u: np.ndarray, v: np.ndarray) -> float:
    return float(stats.spearmanr(u, v).statistic)


def compare_post_norm_probe(
    A: np.ndarray,
    M: np.ndarray,
    P: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    W_out: np.ndarray,
    b_out: np.ndarray,
    scale: np.ndarray,
    eps: float,
    seed: int = 0,
) -> PostNormComparison:
    """Fit probes on M, scale * M and P (train rows); on the test rows check both reductions (exact
    before the norm, up to the gain r(x) after it) and compare AUROCs and neuron contributions."""
    A, W_out = _check_A_W(A, W_out)
    M, P = as_2d(M, "M"), as_2d(P, "P")
    if not (M.shape == P.shape == (A.shape[0], W_out.shape[1])):
        raise ValueError(
            f"M {M.shape} and P {P.shape} must both be (n, d_model) = {(A.shape[0], W_out.shape[1])}; "
            "pass the MLP outputs before and after the norm for the same rows as A"
        )
    b_out = np.asarray(b_out, dtype=np.float64)
    scale = _check_scale(scale, W_out.shape[1])
    y = np.asarray(y)
    y_test = check_y(y[test], len(test))
    S = M * scale
    (w_pre, c_pre), (w_s, _), (w_post, c_post) = (fit_output_probe(X[train], y[train], seed=seed) for X in (M, S, P))
    A_t = np.asarray(A[test], dtype=np.float64)
    beta_pre = W_out @ w_pre
    beta_s, beta_post = (post_norm_neuron_weights(W_out, scale, w) for w in (w_s, w_post))
    gain = post_norm_gain(M[test], eps)
    linear_post = A_t @ beta_post + b_out @ (scale * w_post)
    delta_pre, delta_s, delta_lin = (_class_difference(A_t * beta, y_test) for beta in (beta_pre, beta_s, beta_post))
    delta_post = _class_difference(gain[:, None] * A_t * beta_post, y_test)
    return PostNormComparison(
        auroc_pre=float(roc_auc_score(y_test, M[test] @ w_pre)),
        auroc_scaled=float(roc_auc_score(y_test, S[test] @ w_s)),
        auroc_post=float(roc_auc_score(y_test, P[test] @ w_post)),
        auroc_post_linear=float(roc_auc_score(y_test, linear_post)),
        spearman_pre_post=_spearman(delta_pre, delta_post),
        spearman_scaled_post=_spearman(delta_s, delta_post),
        spearman_gain=_spearman(delta_lin, delta_post),
        identity_pre=max_relative_difference(M[test] @ w_pre + c_pre, A_t @ beta_pre + b_out @ w_pre + c_pre),
        identity_post=max_relative_difference(P[test] @ w_post + c_post, gain * linear_post + c_post),
        gain=gain,
    )


# ---------------------------------------------------------------------------------------------
# noise-neuron criterion
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Moments:
    delta: np.ndarray  # (d,) delta_i = E[c_i|y=1] - E[c_i|y=0]
    g: np.ndarray  # (d,) g_i = Cov_0(c_i, s) + Cov_1(c_i, s), s = sum_j c_j
    var: np.ndarray  # (d,) Sigma_ii = Var_0(c_i) + Var_1(c_i) + lambda
    se: np.ndarray  # (d,) standard error of delta_i: sqrt(Var_1(c_i)/n1 + Var_0(c_i)/n0)


def _contribution_moments(C: np.ndarray, y: np.ndarray, ridge: float) -> _Moments:
    """Class moments of the contributions; O(n d_mlp), no d_mlp x d_mlp matrix is formed."""
    C = as_2d(C, "C").astype(np.float64, copy=False)
    y = check_y(y, C.shape[0])
    if ridge < 0:
        raise ValueError(f"ridge is {ridge}; pass a non-negative ridge (default 1e-6)")
    delta = C[y == 1].mean(axis=0) - C[y == 0].mean(axis=0)
    g = np.zeros(C.shape[1])
    var = np.zeros(C.shape[1])
    se2 = np.zeros(C.shape[1])
    for k in (0, 1):
        Ck = C[y == k] - C[y == k].mean(axis=0)
        g += Ck.T @ Ck.sum(axis=1) / (Ck.shape[0] - 1)
        var_k = (Ck**2).sum(axis=0) / (Ck.shape[0] - 1)
        var += var_k
        se2 += var_k / Ck.shape[0]
    lam = ridge * max(float(var.mean()), 1e-300)
    return _Moments(delta, g + lam, var + lam, np.sqrt(se2))


def _signed_fisher(D: np.ndarray | float, V: np.ndarray | float) -> np.ndarray:
    """J = D |D| / V, with V floored at the smallest positive float."""
    return np.asarray(D) * np.abs(D) / np.maximum(V, np.finfo(np.float64).tiny)


def fisher_ratio(s: np.ndarray, y: np.ndarray) -> float:
    """Signed class-conditional Fisher ratio of a score: J = (mu1 - mu0)|mu1 - mu0| / (var1 + var0)."""
    s = np.asarray(s, dtype=np.float64)
    y = check_y(y, s.shape[0])
    D = s[y == 1].mean() - s[y == 0].mean()
    return float(_signed_fisher(D, s[y == 1].var(ddof=1) + s[y == 0].var(ddof=1)))


def _delta_J(m: _Moments) -> np.ndarray:
    D, V = m.delta.sum(), m.g.sum()
    return _signed_fisher(D - m.delta, V - 2 * m.g + m.var) - _signed_fisher(D, V)


def noise_scores(C: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    r"""Delta J_i = J(all \ i) - J(all) = (D-delta_i)|D-delta_i| / (V-2g_i+Sigma_ii) - D|D|/V; > 0 = noise."""
    return _delta_J(_contribution_moments(C, y, ridge))


def fisher_curve(C: np.ndarray, y: np.ndarray, order: np.ndarray) -> np.ndarray:
    """J of the top-k neurons of an order, k = 1..d_mlp: entry k-1 is J of s_k = sum_{i in order[:k]} c_i."""
    C = as_2d(C, "C").astype(np.float64, copy=False)
    y = check_y(y, C.shape[0])
    order = _check_order(order, C.shape[1])
    S = np.cumsum(C[:, order], axis=1)  # column k-1 = score of the top-k set
    D = S[y == 1].mean(axis=0) - S[y == 0].mean(axis=0)
    return _signed_fisher(D, S[y == 1].var(axis=0, ddof=1) + S[y == 0].var(axis=0, ddof=1))


@dataclass(frozen=True)
class NoiseRemovalResult:
    """Outcome of the noise-neuron rule on one probe."""

    kept: np.ndarray  # sorted indices of the k concept (non-noise) neurons
    order: np.ndarray  # permutation of range(d_mlp), best first; set(order[:k]) == set(kept)
    k: int  # number of concept neurons
    scores: np.ndarray  # Delta J_i (noise_scores); > 0 = removing i raises J
    t: np.ndarray  # Welch t of c_i's class difference, delta_i / se(delta_i)
    tau: float  # significance threshold used on t


def bh_t_threshold(t: np.ndarray, fdr: float = 0.1, df: float | None = None) -> float:
    """Benjamini-Hochberg on one-sided p_i = P(T > t_i): the smallest rejected t, inf if none.

    T is Student t with ``df`` degrees of freedom, or standard normal when df is None. Sort p
    ascending, k_max = max{k : p_(k) <= fdr k / d}; reject p_i <= p_(k_max), i.e. t_i >= the
    returned threshold (one df for all neurons keeps p decreasing in t, so BH is a threshold on t).
    """
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"t has shape {t.shape}; pass one Welch t per neuron (1-D, non-empty)")
    if not 0 < fdr < 1:
        raise ValueError(f"fdr={fdr}; pass 0 < fdr < 1 (the target false discovery rate)")
    if df is not None and not df > 0:
        raise ValueError(f"df={df}; pass positive degrees of freedom (rows - 2) or None for the normal")
    t_desc = np.sort(t)[::-1]
    p_sorted = ndtr(-t_desc) if df is None else stdtr(df, -t_desc)  # ascending p-values
    passed = np.flatnonzero(p_sorted <= fdr * np.arange(1, t.size + 1) / t.size)
    return float(t_desc[passed[-1]]) if passed.size else float("inf")


NOISE_THRESHOLDS = ("universal", "bh")


def select_by_noise_removal(
    C: np.ndarray,
    y: np.ndarray,
    tau: float | None = None,
    ridge: float = 1e-6,
    *,
    threshold: str = "universal",
    fdr: float = 0.1,
) -> NoiseRemovalResult:
    """Noise iff Delta J_i > 0 or t_i < tau (tau = sqrt(2 ln d_mlp)); k = #non-noise; rank by Delta J_i.

    ``threshold="bh"`` (named variant): tau = ``bh_t_threshold(t, fdr, df=n - 2)``, the Benjamini-
    Hochberg step at level ``fdr`` on the one-sided Student-t p-values of t, instead of the
    universal threshold.
    The universal threshold controls the chance of ANY null neuron passing (family-wise, about 0.1
    at d = 512), so with k* real but individually modest neurons it keeps few of them; BH controls
    the expected share of null neurons among those kept and lowers tau as more neurons are clearly
    significant. Its guarantee assumes independent or positively dependent t_i (PRDS).
    """
    if threshold not in NOISE_THRESHOLDS:
        raise ValueError(f"threshold={threshold!r}; pass one of {', '.join(NOISE_THRESHOLDS)}")
    if threshold == "bh" and tau is not None:
        raise ValueError("tau is set by the Benjamini-Hochberg step when threshold='bh'; pass tau=None")
    m = _contribution_moments(C, y, ridge)
    d = m.delta.shape[0]
    scores = _delta_J(m)
    t = m.delta / np.maximum(m.se, np.finfo(np.float64).tiny)
    if threshold == "bh":
        # Student t with n - 2 df: the normal tail is ~30 % too thin at t ~ 3 with 100 rows (measured
        # null FDR 0.17 at q = 0.1 on 1536-neuron planted layers), and n - 2 is Welch's df for
        # balanced classes of equal variance
        tau = bh_t_threshold(t, fdr, df=np.asarray(C).shape[0] - 2)
    tau = float(np.sqrt(2 * np.log(d))) if tau is None else float(tau)
    concept = (scores < 0) & (t >= tau)
    # concept neurons first; within each block, the larger the drop in J on removal, the better
    order = np.lexsort((scores, ~concept))
    k = int(concept.sum())
    return NoiseRemovalResult(np.sort(order[:k]), order, k, scores, t, tau)


# ---------------------------------------------------------------------------------------------
# planted ground truth
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlantedMLP:
    """Synthetic layer with known concept neurons; M = A @ W_out (b_out = 0)."""

    A: np.ndarray  # (n, d_mlp) activations
    y: np.ndarray  # (n,) balanced labels in {0, 1}
    W_out: np.ndarray  # (d_mlp, d_model) writing vectors
    true_idx: np.ndarray  # concept neurons: class-shifted AND writing along concept_dir
    concept_dir: np.ndarray  # (d_model,) unit vector u the concept is written along
    loud_idx: np.ndarray  # hard case: high-activation noise (large mean |a|, no class shift)
    weak_writer_idx: np.ndarray  # hard case: concept neurons with small writing norm (in true_idx)
    correlated_idx: np.ndarray  # hard case: noise neurons sharing one latent factor
    decoy_idx: np.ndarray  # hard case: class-shifted but writing orthogonal to u (not in true_idx)

    @property
    def M(self) -> np.ndarray:
        """MLP output M = A W_out."""
        return self.A @ self.W_out


def _unit_orthogonal(rng: np.random.Generator, u: np.ndarray, m: int) -> np.ndarray:
    """M random unit vectors orthogonal to the unit vector u, shape (m, len(u))."""
    R = rng.standard_normal((m, u.shape[0]))
    R -= np.outer(R @ u, u)
    return R / np.linalg.norm(R, axis=1, keepdims=True)


def planted_mlp(
    n: int = 1000, d_mlp: int = 256, d_model: int = 64, k_true: int = 16, seed: int = 0, hard: bool = True
) -> PlantedMLP:
    """Planted layer: a_i = mu_i + y Delta_i + sigma_i eps_i (+ lam_i z); concept W_out[i] ~ u."""
    # Concept neurons: W_out[i] = sign(Delta_i) alpha_i (cos phi_i u + sin phi_i r_i), r_i orthogonal to u.
    if not (0 < k_true and 4 * k_true <= d_mlp):
        raise ValueError(
            f"k_true={k_true} with d_mlp={d_mlp}; need 0 < k_true <= d_mlp / 4 so the hard "
            "cases fit among the noise neurons"
        )
    if d_model < 2:
        raise ValueError(f"d_model={d_model}; need d_model >= 2 for a concept direction and its complement")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    u = rng.standard_normal(d_model)
    u /= np.linalg.norm(u)
    perm = rng.permutation(d_mlp)
    true_idx = np.sort(perm[:k_true])
    n_hard = k_true if hard else 0
    loud_idx = np.sort(perm[k_true : k_true + n_hard])
    decoy_idx = np.sort(perm[k_true + n_hard : k_true + n_hard + n_hard // 2])
    rest = perm[k_true + n_hard + n_hard // 2 :]
    correlated_idx = np.sort(rest[: rest.shape[0] // 4]) if hard else np.array([], dtype=np.int64)
    weak_writer_idx = np.sort(true_idx[: k_true // 3]) if hard else np.array([], dtype=np.int64)

    # Noise neurons: class-independent activations, random writing vectors of norm ~1.
    mu = np.abs(rng.normal(0.0, 0.5, d_mlp))
    sigma = rng.uniform(0.5, 1.5, d_mlp)
    shift = np.zeros(d_mlp)
    W_out = rng.standard_normal((d_mlp, d_model)) / np.sqrt(d_model)

    # Concept neurons: activation shifts by Delta_i (signed) with class and the writing vector points
    # along sign(Delta_i) u, so every concept neuron pushes class 1 towards +u. Per-neuron d' in
    # [0.4, 0.8]: detectable in aggregate, not trivially one by one.
    sign = rng.choice([-1.0, 1.0], k_true)
    shift[true_idx] = sign * rng.uniform(0.4, 0.8, k_true) * sigma[true_idx]
    cos_phi = rng.uniform(0.5, 0.9, k_true)[:, None]
    alpha = np.ones(k_true)
    alpha[np.isin(true_idx, weak_writer_idx)] = 0.2
    W_out[true_idx] = (sign * alpha)[:, None] * (
        cos_phi * u + np.sqrt(1 - cos_phi**2) * _unit_orthogonal(rng, u, k_true)
    )

    if hard:
        # Loud noise: mean activation 5-10x the typical one, no class shift, ordinary writing vectors.
        mu[loud_idx] = rng.uniform(4.0, 8.0, loud_idx.shape[0])
        sigma[loud_idx] = rng.uniform(1.5, 3.0, loud_idx.shape[0])
        # Decoys: same class shift as concept neurons but writing orthogonal to u: active, class
        # informative, yet they do not move the output along the concept direction -> not true.
        shift[decoy_idx] = (
            rng.choice([-1.0, 1.0], decoy_idx.shape[0]) * rng.uniform(0.4, 0.8, decoy_idx.shape[0]) * sigma[decoy_idx]
        )
        W_out[decoy_idx] = _unit_orthogonal(rng, u, decoy_idx.shape[0])

    A = mu + np.outer(y, shift) + sigma * rng.standard_normal((n, d_mlp))
    if hard:
        # Correlated noise: one shared latent factor z, loading comparable to the private noise.
        z = rng.standard_normal(n)
        lam = rng.uniform(0.5, 1.0, correlated_idx.shape[0]) * sigma[correlated_idx]
        A[:, correlated_idx] += np.outer(z, lam)
    return PlantedMLP(A, y, W_out, true_idx, u, loud_idx, weak_writer_idx, correlated_idx, decoy_idx)


def _check_order(order: np.ndarray, d: int | None = None) -> np.ndarray:
    order = np.asarray(order)
    if order.ndim != 1 or (d is not None and order.shape[0] != d):
        raise ValueError(
            f"order has shape {order.shape}; pass a 1-D ranking of neuron indices, best first"
            + (f", of length {d}" if d is not None else "")
        )
    return order


def precision_at_k(order: np.ndarray, true_idx: np.ndarray, k: int) -> float:
    """Precision@k = |order[:k] & true| / k."""
    order = _check_order(order)
    if not 0 < k <= order.shape[0]:
        raise ValueError(f"k={k} but the order has {order.shape[0]} neurons; pass 1 <= k <= len(order)")
    return float(np.isin(order[:k], true_idx).sum()) / k


def recall_at_k(order: np.ndarray, true_idx: np.ndarray, k: int) -> float:
    """Recall@k = |order[:k] & true| / |true|."""
    order = _check_order(order)
    true_idx = np.asarray(true_idx)
    if true_idx.size == 0:
        raise ValueError("true_idx is empty; recall needs at least one true neuron")
    if not 0 < k <= order.shape[0]:
        raise ValueError(f"k={k} but the order has {order.shape[0]} neurons; pass 1 <= k <= len(order)")
    return float(np.isin(true_idx, order[:k]).sum()) / true_idx.size
