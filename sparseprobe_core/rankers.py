"""Neuron-ranking methods behind one signature: ``rank(method, RankContext) -> order``, best first.

Every method scores the d_mlp hidden neurons of one layer from training data only; the shared
helper ``_order`` turns scores into a permutation (stable argsort on -score, so ties go to the lower
neuron index and the result is deterministic for a given seed).

Probe-based baselines (dense_l2, l1_probe, elastic_net) standardise each column first, so |weight|
reads as "weight per standard deviation" and loud neurons get no edge. NeuroX itself trains on raw
activations; ``peers.py`` runs that variant by NeuroX's own code. Regularisation strengths come from
``RankContext.settings`` (``config.RankerSettings``), never from module state, so worker processes
rank with the notebook's settings.

Gradient x activation (gradient x input, Shrikumar et al. 2016) comes in two flavours: of an
output-space probe score, whose gradient is analytic (ds/da = beta = W_out w, the reduction of
claim 1, ``theory.effective_neuron_weights``), and of the model's own concept output, from
``RankContext.grad`` collected by the caller.

Gurnee et al. 2023 ("Finding Neurons in a Haystack") select k-sparse probe supports with cheap
heuristics — mean_diff (their default) and f_stat here — or with "optimal sparse probing", a
mixed-integer program per k. That exact selector is not included: it needs a MIP solver and takes
far longer than the whole sweep budget for d_mlp = 1536.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from . import theory
from .config import RankerSettings
from .prober import PathResult, SparseProber, prober_path
from .theory import effective_neuron_weights


@dataclass(frozen=True, eq=False)  # arrays: compare/hash by identity
class RankContext:
    """Everything a ranker may use: train activations, labels, the layer's writing vectors."""

    A: np.ndarray  # (n, d_mlp) hidden activations at the probed token (train split)
    y: np.ndarray  # (n,) labels in {0, 1}
    W_out: np.ndarray  # (d_mlp, d_model); row i is neuron i's writing vector
    b_out: np.ndarray  # (d_model,)
    seed: int = 0
    M: np.ndarray | None = None  # (n, d_model) MLP output; A @ W_out + b_out when None
    # (n, d_mlp) gradient of the model's own concept output (or a probe score) wrt the activations
    grad: np.ndarray | None = None
    # (d_model,) output-space concept direction; given, it replaces the one that grad_x_act_probe and
    # the contribution-weighted probers would otherwise estimate from (M, y) (``concept_direction``)
    direction: np.ndarray | None = None
    settings: RankerSettings = field(default_factory=RankerSettings)

    def __post_init__(self) -> None:
        for name in ("A", "y", "W_out", "b_out", "M", "grad", "direction"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, np.asarray(value))


def _order(scores: np.ndarray) -> np.ndarray:
    """Neuron order from scores, highest first; ties (and NaN, sent last) keep index order."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    return np.argsort(-scores, kind="stable")


def _scores_from_order(order: np.ndarray) -> np.ndarray:
    """Scores d, d-1, ..., 1 along an order, so ``_order`` returns that order unchanged."""
    scores = np.empty(len(order))
    scores[np.asarray(order)] = np.arange(len(order), 0, -1)
    return scores


def _mlp_out(ctx: RankContext) -> np.ndarray:
    """MLP output m = W_out^T a + b_out for every example (ctx.M when supplied)."""
    return ctx.M if ctx.M is not None else ctx.A @ ctx.W_out + ctx.b_out


def _standardised_probe_coef(X: np.ndarray, y: np.ndarray, **kwargs) -> np.ndarray:
    """Coefficients of a LogisticRegression(**kwargs) on per-column standardised X."""
    Xs = StandardScaler().fit_transform(X)
    return LogisticRegression(**kwargs).fit(Xs, y).coef_


def _mass_entry_fraction(coef: np.ndarray) -> np.ndarray:
    """Weight mass (fraction) that must be covered before each neuron enters, min over classes.

    NeuroX ``linear_probe.get_neuron_ordering`` (Dalvi et al. 2019) sorts |w| per class row,
    selects the neurons covering a growing fraction p of the row's weight mass and concatenates
    the newly selected neurons as p grows; this is its exact (infinitely fine stride) version.
    """
    W = np.abs(np.atleast_2d(coef))
    fractions = np.empty_like(W)
    for row, w in enumerate(W):
        order = np.argsort(-w, kind="stable")
        before = np.cumsum(w[order]) - w[order]
        fractions[row, order] = before / max(w.sum(), np.finfo(float).tiny)
    return fractions.min(axis=0)


def random_scores(ctx: RankContext) -> np.ndarray:
    """Random order (chance baseline), drawn from numpy's default_rng(seed)."""
    return np.random.default_rng(ctx.seed).permutation(ctx.A.shape[1]).astype(np.float64)


def act_magnitude_scores(ctx: RankContext) -> np.ndarray:
    """Mean |a_i| ("keep the most active neurons", the heuristic the paper argues against)."""
    return np.abs(ctx.A).mean(axis=0)


def mean_diff_scores(ctx: RankContext) -> np.ndarray:
    """|mu+_i - mu-_i|, class-mean difference (Gurnee et al. 2023 default k-sparse selector)."""
    return np.abs(ctx.A[ctx.y == 1].mean(axis=0) - ctx.A[ctx.y == 0].mean(axis=0))


def f_stat_scores(ctx: RankContext) -> np.ndarray:
    """ANOVA F statistic per neuron, sklearn f_classif (Gurnee et al. 2023 selector)."""
    return f_classif(ctx.A, ctx.y)[0]  # constant neurons give NaN, which _order puts last


def probeless_scores(ctx: RankContext) -> np.ndarray:
    """Sum over class pairs (c, c') of |mean_c(a_i) - mean_c'(a_i)| (Antverg & Belinkov 2022)."""
    means = np.stack([ctx.A[ctx.y == c].mean(axis=0) for c in np.unique(ctx.y)])
    return sum(np.abs(means[i] - means[j]) for i in range(len(means)) for j in range(i))


def dense_l2_scores(ctx: RankContext) -> np.ndarray:
    """|w_i| of a dense L2 logistic probe on standardised A (Dalvi et al. 2019 linear probe)."""
    coef = _standardised_probe_coef(ctx.A, ctx.y, C=ctx.settings.dense_l2_C, l1_ratio=0.0, max_iter=2000)
    return np.abs(coef[0])


def l1_probe_scores(ctx: RankContext) -> np.ndarray:
    """|w_i| of an L1 logistic probe on standardised A (lasso probe; zero weights tie, by index)."""
    coef = _standardised_probe_coef(
        ctx.A, ctx.y, C=ctx.settings.l1_probe_C, l1_ratio=1.0, solver="liblinear", random_state=ctx.seed
    )
    return np.abs(coef[0])


def elastic_net_scores(ctx: RankContext) -> np.ndarray:
    """Elastic-net probe ranked by NeuroX's cumulative weight mass (Dalvi et al. 2019)."""
    coef = _standardised_probe_coef(
        ctx.A,
        ctx.y,
        C=ctx.settings.elastic_net_C,
        l1_ratio=ctx.settings.elastic_net_l1_ratio,
        solver="saga",
        max_iter=1000,
        tol=ctx.settings.elastic_net_tol,
        random_state=ctx.seed,
    )
    return -_mass_entry_fraction(coef)


def concept_direction(ctx: RankContext) -> np.ndarray:
    """Output-space concept direction d: ctx.direction, else ``theory.concept_direction`` of the MLP
    outputs with the estimator of ``settings.direction_estimator`` (the one place it is estimated)."""
    if ctx.direction is not None:
        return ctx.direction
    st = ctx.settings
    return theory.concept_direction(
        _mlp_out(ctx), ctx.y, estimator=st.direction_estimator, C=st.dense_l2_C, seed=ctx.seed
    )


def grad_x_act_probe_scores(ctx: RankContext) -> np.ndarray:
    """mean_n |a_i ds/da_i| for an output probe s = w.m: ds/da = beta = W_out w (grad x input)."""
    beta = effective_neuron_weights(ctx.W_out, concept_direction(ctx))
    return np.abs(ctx.A * beta).mean(axis=0)


def grad_x_act_model_scores(ctx: RankContext) -> np.ndarray:
    """mean_n |a_i g_i| with g = ctx.grad, the model's own output gradient (gradient x input)."""
    if ctx.grad is None:
        raise ValueError(
            "grad_x_act_model needs RankContext.grad (n, d_mlp), the gradient of the model's "
            "concept output wrt the hidden activations; collect it or use grad_x_act_probe"
        )
    return np.abs(ctx.A * ctx.grad).mean(axis=0)


def direct_effect_scores(ctx: RankContext) -> np.ndarray:
    """Mean |a_i| * |W_out[i]|, the size of what neuron i writes (direct-effect weighting)."""
    return np.abs(ctx.A).mean(axis=0) * np.linalg.norm(ctx.W_out, axis=1)


def _path_settings(ctx: RankContext, weighting: str) -> dict:
    """The keyword arguments of the sparse prober's L1 path for one weighting, from ctx.settings."""
    st = ctx.settings
    return dict(
        weighting=weighting,
        W_out=ctx.W_out,
        direction=concept_direction(ctx) if weighting == "contribution" else None,
        n_strengths=st.path_n_strengths,
        c_max_ratio=st.path_c_max_ratio,
        dense_C=st.dense_l2_C,
        seed=ctx.seed,
    )


def paper_path(ctx: RankContext, weighting: str = "contribution") -> PathResult:
    """The sparse prober's L1 path on the context's training rows only (``prober.prober_path`` without
    held-out rows): its ranking and, for diagnostics, how many neurons ever enter (``n_entered``; the rest
    are ordered by closeness to entering)."""
    return prober_path(ctx.A, ctx.y, **_path_settings(ctx, weighting))


def _sparse_prober_path_scores(weighting: str) -> Callable[[RankContext], np.ndarray]:
    """Ranker for the weighted sparse prober (prober.py) with one weighting: order of entry along its L1
    path (``paper_path``), the paper's ranking; only the weighting differs between them."""

    def scores(ctx: RankContext) -> np.ndarray:
        return _scores_from_order(paper_path(ctx, weighting).ranking)

    scores.__doc__ = f"Order of entry along the sparse prober's L1 path, weighting={weighting!r} (claim 3)."
    return scores


def sparse_prober_contribution_coefw_scores(ctx: RankContext) -> np.ndarray:
    """The paper's named variant: |coefficient x weight| |theta_i (W_out[i] . d)| of ONE contribution-
    weighted L1 fit with ``settings.coefw_k`` neurons (C by bisection), then the rest by how close
    they are to entering (``SparseProber.ranking_``)."""
    prober = SparseProber(
        weighting="contribution",
        W_out=ctx.W_out,
        direction=concept_direction(ctx),
        k=ctx.settings.coefw_k,
        dense_C=ctx.settings.dense_l2_C,
        seed=ctx.seed,
    )
    return _scores_from_order(prober.fit(ctx.A, ctx.y).ranking_)


RANKERS: dict[str, Callable[[RankContext], np.ndarray]] = {
    "random": random_scores,
    "act_magnitude": act_magnitude_scores,
    "mean_diff": mean_diff_scores,
    "f_stat": f_stat_scores,
    "probeless": probeless_scores,
    "dense_l2": dense_l2_scores,
    "l1_probe": l1_probe_scores,
    "elastic_net": elastic_net_scores,
    "grad_x_act_probe": grad_x_act_probe_scores,
    "grad_x_act_model": grad_x_act_model_scores,
    "direct_effect": direct_effect_scores,
    **{f"sparse_prober_{w}": _sparse_prober_path_scores(w) for w in ("none", "norm", "contribution", "adaptive")},
    "sparse_prober_contribution_coefw": sparse_prober_contribution_coefw_scores,
}


def _validate(method: str, ctx: RankContext) -> None:
    """Raise a one-line ValueError for an unknown method or context shapes that disagree."""
    if method not in RANKERS:
        raise ValueError(f"unknown ranking method {method!r}; valid: {', '.join(RANKERS)}")
    if ctx.A.ndim != 2:
        raise ValueError(f"A must be 2-D (n, d_mlp), got shape {ctx.A.shape}")
    n, d_mlp = ctx.A.shape
    if ctx.y.shape != (n,):
        raise ValueError(f"y has shape {ctx.y.shape} but A has {n} rows; pass one label per row")
    if set(np.unique(ctx.y).tolist()) != {0, 1}:
        raise ValueError(f"y must hold both labels 0 and 1 and no other, got {np.unique(ctx.y)}")
    if ctx.W_out.ndim != 2 or ctx.W_out.shape[0] != d_mlp:
        raise ValueError(
            f"A has {d_mlp} columns but W_out has shape {ctx.W_out.shape}; "
            "pass the (d_mlp, d_model) W_out of the same layer"
        )
    d_model = ctx.W_out.shape[1]
    expected = {"b_out": (d_model,), "M": (n, d_model), "grad": (n, d_mlp), "direction": (d_model,)}
    for name, shape in expected.items():
        value = getattr(ctx, name)
        if value is not None and value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}; expected {shape} from A and W_out")


def rank(method: str, ctx: RankContext) -> np.ndarray:
    """Order of the d_mlp neurons by ``method`` (a key of RANKERS), best first."""
    _validate(method, ctx)
    return _order(RANKERS[method](ctx))
