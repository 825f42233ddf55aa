"""The ranking comparison's statistics (claims 3 and 4): the paper's method against each baseline, with
the concept as the independent unit.

The split seeds re-split the same rows of a concept, so they are not independent samples: each concept
contributes ONE number per comparison, the mean over its seeds of

    d_c = sign * (area_method - area_baseline),    sign = +1 for keep-top-k, -1 for remove-top-k,

so d_c > 0 always means "the method is better on concept c". Across concepts:

- a two-sided Wilcoxon signed-rank test of d_c (``scipy.stats.wilcoxon``; exact when n <= 50 and no
  ties), whose smallest possible p-value with n concepts is 2 / 2^n;
- Holm's step-down correction over the whole family of comparisons reported together (baselines x
  evaluations x modes), ``statsmodels.stats.multitest.multipletests(method="holm")``;
- the effect size: the mean of d_c with a 95 % bootstrap interval over concepts (``scipy.stats.bootstrap``,
  percentile method, 10,000 resamples, seeded);
- the smallest effect this many concepts can detect: the true mean difference a paired t-test at the
  Holm-adjusted level of the family's first step (alpha / m) finds with 80 % power, given the observed
  spread of d_c (``statsmodels.stats.power.TTestPower``), divided by the square root of the Wilcoxon
  test's asymptotic relative efficiency (3 / pi) to stand for the rank test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

ALPHA = 0.05
POWER = 0.8
_WILCOXON_ARE = 3 / np.pi  # relative efficiency of the signed-rank test vs the t-test under normality


@dataclass(frozen=True)
class Comparison:
    """The paper's method against one baseline under one evaluation and mode, across concepts."""

    method: str
    baseline: str
    evaluation: str
    mode: str
    n: int  # concepts
    mean: float  # mean over concepts of d_c (> 0: the method is better)
    ci_low: float  # 95 % bootstrap interval of that mean, over concepts
    ci_high: float
    better_on: int  # concepts with d_c > 0
    p: float  # two-sided Wilcoxon signed-rank p-value across concepts
    p_holm: float  # Holm-adjusted over the family
    mde: float  # smallest true mean difference detectable with 80 % power at the family's first Holm level
    verdict: str  # "better", "worse" (p_holm < alpha, the side of the signed ranks) or "no detectable difference"


def concept_differences(areas: pd.DataFrame, method: str, baseline: str, mode: str) -> pd.Series:
    """d_c per concept: sign * (area of `method` - area of `baseline`), averaged over the concept's seeds.

    `areas` has one row per (concept, seed, method) with an "area" column (one evaluation and mode)."""
    piv = areas[areas["method"].isin([method, baseline])].pivot_table(
        index=["concept", "seed"], columns="method", values="area"
    )
    missing = {method, baseline} - set(piv.columns)
    if missing:
        raise ValueError(f"no areas for {sorted(missing)}; compare methods that were evaluated")
    sign = 1.0 if mode == "keep" else -1.0
    return (sign * (piv[method] - piv[baseline])).groupby(level="concept").mean()


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 when every difference is 0)."""
    from scipy.stats import wilcoxon

    d = np.asarray(d, dtype=float)
    if len(d) < 2 or not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d).pvalue)


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (R+ - R-) / (R+ + R-) of the signed-rank test on `d`: R+ and
    R- sum the ranks of |d| (zeros dropped, ties averaged) over positive and negative d; +1 when every
    nonzero d is positive, 0 when they balance (or all are zero)."""
    from scipy.stats import rankdata

    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    ranks = rankdata(np.abs(d))
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus)) if plus + minus else 0.0


def signed_rank_direction(d: np.ndarray) -> int:
    """+1 / -1 / 0: the side the signed-rank test leans to, the sign of ``rank_biserial(d)``. The test's
    direction, which the mean of d need not share: one large positive d can outweigh many small negative ones."""
    return int(np.sign(rank_biserial(d)))


def bootstrap_ci(d: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `d`, resampling its entries (the concepts)."""
    from scipy.stats import bootstrap

    d = np.asarray(d, dtype=float)
    if len(d) < 2 or np.ptp(d) == 0:
        return float(d.mean()), float(d.mean())
    res = bootstrap((d,), np.mean, n_resamples=10_000, confidence_level=level, method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def minimum_detectable_effect(n: int, sd: float, alpha: float, power: float = POWER) -> float:
    """Smallest true mean paired difference a test on `n` concepts detects with probability `power` at
    two-sided level `alpha`, for differences of standard deviation `sd` (paired t-test power, corrected
    for the signed-rank test's efficiency); nan with fewer than 2 concepts."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    d = TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return float(np.ravel(d)[0] * sd / np.sqrt(_WILCOXON_ARE))


def compare(
    areas: pd.DataFrame,
    method: str,
    baselines: list[str],
    *,
    alpha: float = ALPHA,
    seed: int = 0,
) -> pd.DataFrame:
    """`method` against every baseline under every evaluation and mode of `areas`, one row each.

    `areas` columns: concept, seed, method, eval, mode, area. The family for Holm's correction is every
    row returned (baselines x evaluations x modes). Returns a DataFrame of ``Comparison`` fields."""
    rows = []
    for (evaluation, mode), part in areas.groupby(["eval", "mode"], sort=False):
        present = set(part["method"])
        for baseline in baselines:
            if baseline == method or baseline not in present or method not in present:
                continue
            d = concept_differences(part, method, baseline, mode).to_numpy()
            rows.append(dict(method=method, baseline=baseline, evaluation=evaluation, mode=mode, d=d))
    if not rows:
        raise ValueError(f"no evaluation has both {method!r} and one of the baselines")
    from statsmodels.stats.multitest import multipletests

    p = np.array([wilcoxon_p(r["d"]) for r in rows])
    p_holm = multipletests(p, alpha=alpha, method="holm")[1]
    first_level = alpha / len(rows)  # Holm's most stringent step
    out = []
    for r, p_i, ph in zip(rows, p, p_holm):
        d = r.pop("d")
        low, high = bootstrap_ci(d, seed=seed)
        # the direction of a significant result is the test's own, not the sign of the mean
        verdict = "no detectable difference" if ph >= alpha else ("better" if signed_rank_direction(d) > 0 else "worse")
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
        out.append(
            Comparison(
                **r,
                n=len(d),
                mean=float(d.mean()),
                ci_low=low,
                ci_high=high,
                better_on=int((d > 0).sum()),
                p=float(p_i),
                p_holm=float(ph),
                mde=minimum_detectable_effect(len(d), sd, first_level),
                verdict=verdict,
            )
        )
    return pd.DataFrame([asdict(c) for c in out])


def holm_over(families: dict, alpha: float = ALPHA) -> pd.DataFrame:
    """Several ``compare`` families reported together as one (e.g. one per layer, when a verdict spans the
    layers): their rows concatenated with a ``part`` column (the dict's key) and Holm's correction redone
    over all of them. A row that stays significant keeps its verdict's direction: Holm-adjusted p-values
    only grow as the family grows, so it was significant in its own family too. ``mde`` is dropped (it
    was computed at each part's own first Holm level)."""
    from statsmodels.stats.multitest import multipletests

    if not families:
        raise ValueError("no families to combine; pass {part: compare(...)} for at least one part")
    both = pd.concat([f.assign(part=key) for key, f in families.items()], ignore_index=True).drop(columns="mde")
    p_holm = multipletests(both["p"], alpha=alpha, method="holm")[1]
    return both.assign(p_holm=p_holm, verdict=np.where(p_holm < alpha, both["verdict"], "no detectable difference"))


def smallest_p(n: int) -> float:
    """The smallest two-sided p-value a signed-rank test on n paired values can give: 2 / 2^n."""
    return 2.0 / 2.0**n


def needed_concepts(m: int, alpha: float = ALPHA) -> int:
    """The fewest concepts with which a family of `m` comparisons can reach Holm's first level,
    ``smallest_p(n) < alpha / m``."""
    n = 1
    while smallest_p(n) >= alpha / m:
        n += 1
    return n


def decide(family: pd.DataFrame, must_beat: list[str], must_not_lose_to: list[str]) -> str:
    """A claim's decision rule on one ``compare`` family (or a ``holm_over`` one, whose rows carry a
    ``part``): "does not hold" when the method is significantly worse than any of `must_not_lose_to`;
    "holds" when it is significantly better than every one of `must_beat` in every (part, evaluation,
    mode) of the family; "cannot tell" otherwise."""
    if family.empty or not must_beat:
        raise ValueError(
            f"decide needs a non-empty family and baselines to beat (got {len(family)} rows, must_beat={must_beat}); "
            "a rule with nothing to beat would hold vacuously"
        )
    if len(family[family["baseline"].isin(must_not_lose_to) & (family["verdict"] == "worse")]):
        return "does not hold"
    beat = family[family["baseline"].isin(must_beat)]
    cells = family.groupby([c for c in ("part", "evaluation", "mode") if c in family]).ngroups
    if len(beat) == len(must_beat) * cells and (beat["verdict"] == "better").all():
        return "holds"
    return "cannot tell"


def identical_rankings(areas: pd.DataFrame, methods: list[str]) -> list[list[str]]:
    """`methods` grouped by identical areas on every unit of `areas` (columns layer, eval, mode, concept,
    seed, method, area): one ranking under several names (e.g. on two classes the class-mean difference
    and probeless both order neurons by |mu+ - mu-|). Groups in the order of `methods`."""
    piv = areas.pivot_table(index=["layer", "eval", "mode", "concept", "seed"], columns="method", values="area")
    groups: list[list[str]] = []
    for m in (m for m in methods if m in piv):
        match = next((g for g in groups if np.array_equal(piv[g[0]].to_numpy(), piv[m].to_numpy())), None)
        if match:
            match.append(m)
        else:
            groups.append([m])
    return groups


def region_differences(
    curves: pd.DataFrame, entered: pd.DataFrame, method: str, baselines: list[str], seed: int = 0
) -> pd.DataFrame:
    """Where on the k grid `method` differs from each baseline: per (layer, evaluation, mode), the mean over
    concepts of d_c (as in ``compare``, but of the AUROCs averaged over k points, not of areas) over the k
    up to each unit's number of neurons that enter the paper's path ("entered") and over the larger k
    ("fallback"), with its bootstrap interval over concepts. Descriptive: no test.

    `curves`: one row per (concept, layer, seed, method, eval, mode, k) with an "auroc"; `entered`: one
    row per (concept, layer, seed) with "entered". Returns rows of layer, baseline, eval, mode, region, n,
    mean, ci_low, ci_high."""
    keys = ["concept", "layer", "seed"]
    df = curves.merge(entered[[*keys, "entered"]], on=keys)
    df = df.assign(region=np.where(df["k"] <= df["entered"], "entered", "fallback"))
    mean_k = df.groupby(["layer", "eval", "mode", "region", "concept", "seed", "method"])["auroc"].mean()
    mean_k = mean_k.unstack("method")
    sign = np.where(mean_k.index.get_level_values("mode") == "keep", 1.0, -1.0)
    rows = []
    for b in baselines:
        d = (sign * (mean_k[method] - mean_k[b])).groupby(["layer", "eval", "mode", "region", "concept"]).mean()
        for (layer, ev, mode, region), dc in d.groupby(["layer", "eval", "mode", "region"]):
            low, high = bootstrap_ci(dc.to_numpy(), seed=seed)
            rows.append(dict(layer=layer, baseline=b, eval=ev, mode=mode, region=region, n=len(dc),
                             mean=float(dc.mean()), ci_low=low, ci_high=high))  # fmt: skip
    return pd.DataFrame(rows)


def variant_name(method: str, label: str) -> str:
    """The name under which a development variant of `method` is scored: "method [label]"."""
    return f"{method} [{label}]"


def is_variant(methods: pd.Series) -> pd.Series:
    """Whether each method name is a development variant's (a ``variant_name``), not a method as shipped."""
    return methods.str.contains(" [", regex=False)


def variant_areas(
    areas: pd.DataFrame, method: str, frozen: str, labels: list[str], pairs: list[tuple[str, str]]
) -> pd.DataFrame:
    """Development evidence for one choice: the mean area of `method` under each setting of it, one row per
    label (`frozen` is `method` itself, scored as shipped; every other label its ``variant_name``), one
    column per (evaluation, mode) in `pairs` ("(i) keep", ...), and "mean rank" over those columns
    (1 = best: the highest keep area, the lowest remove area). Rows of any other method, `method`'s
    variants of another choice included, are left out. Labels are distinct, and every pair has rows in
    `areas`. Descriptive: the units are the development ones in `areas`."""
    if frozen not in labels:
        raise ValueError(f"the frozen setting {frozen!r} is not among the labels {labels}; list every setting")
    names = {variant_name(method, label): label for label in labels if label != frozen} | {method: frozen}
    rows = areas[areas["method"].isin(names)].assign(label=lambda df: df["method"].map(names))
    means = rows.groupby(["eval", "mode", "label"])["area"].mean()
    table = pd.DataFrame({f"{ev} {mode}": means.get((ev, mode)) for ev, mode in pairs})
    table = table.reindex([label for label in labels if label in set(rows["label"])])
    table.index.name = "setting"
    ranks = {c: table[c].rank(ascending=c.endswith("remove")) for c in table.columns}
    table["mean rank"] = pd.DataFrame(ranks).mean(axis=1)
    return table


def frozen_shortfall(table: pd.DataFrame, frozen: str) -> pd.DataFrame:
    """For each area column of a ``variant_areas`` table: the best setting ("best": the highest keep area,
    the lowest remove area) and how far the `frozen` setting's area falls short of it ("short", >= 0)."""
    rows = {}
    for c in (c for c in table.columns if c != "mean rank"):
        best = table[c].idxmin() if c.endswith("remove") else table[c].idxmax()
        rows[c] = dict(best=best, short=abs(table.loc[best, c] - table.loc[frozen, c]))
    return pd.DataFrame.from_dict(rows, orient="index")
