"""The causal arm of the ranking comparison (claim 3: weighting by writing vectors picks the neurons the
model *uses*): ablate a layer's neurons at every position of the text, read the model at the probed token,
and compare rankings by paired per-text effects, only in cells where ablation can move the readout at all.

Per concept the arm runs `n` balanced texts of the first split's test part (`ablation.downstream_texts`),
and for each readout (`readouts.for_concept`: the final-residual probe, and the model's next-token
behaviour where declared) a score s_i per text i, oriented toward label 1. A setting (a keep mask and the
train-split means as fill, at `positions`) changes it to s'_i; its **per-text effect** is

    e_i = (2 y_i - 1) (s'_i - s_i),

the change toward the text's own label (negative: the concept signal shrank). In probe-score units for the
probe, in nats of log-odds for the behaviour.

1. **Range first.** Per (concept, layer, readout): clean AUROC, AUROC with the whole layer ablated, and the
   mean effect of the whole layer. A cell *qualifies* when its AUROC drop is at least `min_range`
   (``RunConfig.causal_min_range``, chosen on the development concepts by `min_range_rule`: 1.96 times the
   drop's typical bootstrap standard error on the screen texts): elsewhere no ranking can move the readout
   enough to be told apart from another.
2. **Paired effects.** In qualifying cells each method's top-k is kept (the rest ablated) or removed, and
   the paired per-text difference with a baseline,

       d_i = sign (e_i(method) - e_i(baseline)),   sign = +1 keep, -1 remove,

   is > 0 when the method is better (keeping its top-k preserves more, removing it destroys more). Within
   a cell: a two-sided Wilcoxon signed-rank test over texts, the mean of d in units of the whole layer's
   effect (|mean e(whole layer)|) with a bootstrap interval, the matched-pairs rank-biserial correlation,
   Holm over every cell x baseline x mode x readout reported together.
3. **Across concepts** (the independent unit): each method's mean effect per cell, in units of the whole
   layer's effect, averaged over a concept's qualifying layers, goes to ``comparison.compare`` (Wilcoxon
   across concepts, Holm, bootstrap interval, minimum detectable effect).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from . import ablation, activations, comparison, config, parallel, progress, rankers, readouts, theory
from .controls import loud_idle_neurons
from .models import writing_vectors

WHOLE = "whole layer"  # the setting that ablates every neuron of the layer
SIGN = {"keep": 1.0, "remove": -1.0}


def effects(y: np.ndarray, clean: np.ndarray, ablated: np.ndarray) -> np.ndarray:
    """e_i = (2 y_i - 1) (s'_i - s_i): each text's score change toward its own label."""
    return (2 * np.asarray(y) - 1) * (np.asarray(ablated, dtype=float) - np.asarray(clean, dtype=float))


def auroc_drop_se(y: np.ndarray, clean: np.ndarray, whole: np.ndarray, n_boot: int = 1000, seed: int = 0) -> float:
    """Bootstrap standard error of the AUROC drop AUROC(clean) - AUROC(whole layer ablated) over texts.

    Stratified and paired: each resample draws label-1 and label-0 texts separately (with replacement, the
    class sizes kept) and scores the same texts both ways. AUROC = U / (n1 n0), U the Mann-Whitney statistic
    (``scipy.stats.mannwhitneyu``, vectorised over the resamples; ties count one half, as in roc_auc_score)."""
    y = np.asarray(y)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    ip, ineg = pos[rng.integers(0, len(pos), (n_boot, len(pos)))], neg[rng.integers(0, len(neg), (n_boot, len(neg)))]

    def auroc(s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=float)
        return mannwhitneyu(s[ip], s[ineg], axis=1, method="asymptotic").statistic / (len(pos) * len(neg))

    return float((auroc(clean) - auroc(whole)).std(ddof=1))


def range_row(y: np.ndarray, clean: np.ndarray, whole: np.ndarray, seed: int = 0) -> dict:
    """Clean and whole-layer-ablated AUROC, their drop (with its bootstrap standard error over texts,
    `auroc_drop_se`), and the whole layer's mean per-text effect (with its standard deviation over texts,
    and as a fraction of the clean class difference D = mean s|1 - mean s|0)."""
    e = effects(y, clean, whole)
    signal = float(clean[y == 1].mean() - clean[y == 0].mean())
    auc_clean, auc_whole = roc_auc_score(y, clean), roc_auc_score(y, whole)
    return dict(
        clean_auroc=float(auc_clean),
        ablated_auroc=float(auc_whole),
        auroc_drop=float(auc_clean - auc_whole),
        auroc_drop_se=auroc_drop_se(y, clean, whole, seed=seed),
        effect=float(e.mean()),
        effect_sd=float(e.std(ddof=1)),
        signal_drop=float(1 - (whole[y == 1].mean() - whole[y == 0].mean()) / signal),
    )


def min_range_rule(dev_ranges: pd.DataFrame, z: float = 1.96, ceiling: float = 0.99) -> float:
    """The qualifying threshold that development cells imply: z times the median bootstrap standard error of
    the whole-layer AUROC drop (`auroc_drop_se`) over the development (concept, layer, readout) cells whose
    clean AUROC is below `ceiling`, rounded up to 0.01. A smaller drop is within the screen's sampling noise:
    ablating the whole layer is then not told apart from doing nothing, let alone one top-k subset from
    another. Cells at the ceiling are left out: when nothing moves there, their standard error is zero by
    construction and says nothing about how noisy a drop would be. ``config.CAUSAL_MIN_RANGE`` holds the
    value on the paper run's development concepts (notebook 03 reprints the derivation)."""
    rows = dev_ranges[dev_ranges["clean_auroc"] < ceiling]
    if not len(rows):
        raise ValueError(f"no development cell below AUROC {ceiling}: the threshold is chosen on development concepts")
    return float(np.ceil(round(z * float(rows["auroc_drop_se"].median()) * 100, 9)) / 100)


def qualifying(table: pd.DataFrame, min_range: float) -> pd.DataFrame:
    """The rows (concept, layer, readout) of a range table whose whole-layer AUROC drop is >= min_range."""
    return table[table["auroc_drop"] >= min_range]


def loud_idle_order(ctx: rankers.RankContext, k: int) -> np.ndarray:
    """An order of the neurons whose top-k are `controls.loud_idle_neurons` (loud, yet writing little along
    an output-space probe direction fitted on the train split); the rest follow in index order."""
    direction, _ = theory.fit_output_probe(ctx.A @ ctx.W_out + ctx.b_out, ctx.y, seed=ctx.seed)
    top = loud_idle_neurons(ctx.A, ctx.W_out, direction, k)
    return np.concatenate([top, np.setdiff1d(np.arange(ctx.A.shape[1]), top)])


EXTRA_ORDERS: dict[str, Callable[[rankers.RankContext, int], np.ndarray]] = {"loud_idle": loud_idle_order}


def _orders(A_train, y_train, W_out, b_out, methods, k, seed, settings) -> dict[str, np.ndarray]:
    """One cell's neuron orders (a worker unit: arrays in, arrays out)."""
    ctx = rankers.RankContext(A=A_train, y=y_train, W_out=W_out, b_out=b_out, seed=seed, settings=settings)
    return {m: EXTRA_ORDERS[m](ctx, k) if m in EXTRA_ORDERS else rankers.rank(m, ctx) for m in methods}


@dataclass
class ConceptRun:
    """One concept's causal texts, labels, readouts, clean scores, and per layer the train data of the rankers."""

    name: str
    texts: np.ndarray  # rows of the concept run through the model
    token_ids: list[list[int]]
    y: np.ndarray
    readouts: dict
    clean: dict[str, np.ndarray]  # readout -> clean score per text
    train: dict[int, tuple[np.ndarray, np.ndarray]]  # layer -> (A_train, y_train)

    def subset(self, keep: np.ndarray) -> ConceptRun:
        """The same run restricted to the texts where `keep` (a boolean mask over `texts`) is True."""
        return ConceptRun(
            self.name,
            self.texts[keep],
            [t for t, k in zip(self.token_ids, keep) if k],
            self.y[keep],
            self.readouts,
            {r: s[keep] for r, s in self.clean.items()},
            self.train,
        )


@dataclass
class Arm:
    """Everything the causal arm measured on one model: the range table and the per-text effects."""

    model: str
    layers: list[int]
    positions: str
    min_range: float
    k: int
    ranges: pd.DataFrame  # concept, layer, readout, n, clean_auroc, ablated_auroc, auroc_drop, effect, ..., qualifies
    effects: pd.DataFrame  # qualifying cells only: concept, layer, readout, method, mode, k, text, y, effect, scale

    def qualifying_counts(self) -> pd.DataFrame:
        """Qualifying cells per readout (rows) and layer (columns)."""
        return self.ranges.pivot_table(index="readout", columns="layer", values="qualifies", aggfunc="sum")


def layers_of(cfg: config.RunConfig, n_layers: int) -> list[int]:
    """The layers the arm ablates: `cfg.causal_layer_fractions` of depth."""
    return cfg.layers_at(cfg.causal_layer_fractions, n_layers)


def prepare(bridge, cfg: config.RunConfig, name: str, layers: list[int]) -> tuple[ConceptRun, np.ndarray]:
    """Load a concept's activations (cached), pick its causal texts, fit its readouts, score the clean texts.
    Also returns the screen: a boolean mask over the run's texts of the first `cfg.causal_screen_texts` of
    them (the same seeded draw, so a subset), on which the range is measured."""
    c = cfg.concept(name)
    split = cfg.split(c.labels, 0)
    token_ids = activations.tokenize_last(bridge, list(c.texts), cfg.max_tokens)
    acts = activations.layer_activations(
        bridge, cfg.model, c.texts, layers, final_resid=True, max_tokens=cfg.max_tokens
    )
    texts = ablation.downstream_texts(split.test, c.labels, token_ids, cfg.causal_n_texts, seed=cfg.seed)
    screen = ablation.downstream_texts(split.test, c.labels, token_ids, cfg.causal_screen_texts, seed=cfg.seed)
    reads = readouts.for_concept(name, bridge, acts["final"][split.val], c.labels[split.val], seed=cfg.seed)
    run = ConceptRun(
        name=name,
        texts=texts,
        token_ids=[token_ids[i] for i in texts],
        y=c.labels[texts],
        readouts=reads,
        clean={r: f(acts["final"][texts]) for r, f in reads.items()},
        train={layer: (acts[layer][0][split.train], c.labels[split.train]) for layer in layers},
    )
    return run, np.isin(texts, screen)


def _scores(bridge, cfg, run: ConceptRun, layer: int, keeps: list[np.ndarray]) -> list[dict]:
    """Each readout's scores under each keep mask, the fill being the layer's train means (forward passes
    only for the settings not in the cache)."""
    fill = ablation.fill_values(run.train[layer][0], "mean")
    resid = ablation.ablated_final_resid(
        bridge, run.token_ids, layer, keeps, fill, positions=cfg.causal_positions, cache_as=cfg.model
    )
    return [{r: f(x) for r, f in run.readouts.items()} for x in resid]


def range_table(bridge, cfg: config.RunConfig, runs: dict[str, ConceptRun], layers: list[int]) -> pd.DataFrame:
    """`range_row` of every concept x layer x readout (the whole layer ablated), with the number of texts n
    and whether the cell qualifies (`cfg.causal_range_measure` >= `cfg.causal_min_range`)."""
    whole = np.zeros(bridge.cfg.d_mlp, dtype=bool)
    rows = []
    for (name, run), layer in progress.bar(
        [(x, layer) for x in runs.items() for layer in layers], "causal arm: range (whole layer ablated)"
    ):
        (scores,) = _scores(bridge, cfg, run, layer, [whole])
        for r in run.readouts:
            rows.append(
                dict(
                    concept=name,
                    layer=layer,
                    readout=r,
                    n=len(run.y),
                    **range_row(run.y, run.clean[r], scores[r], seed=cfg.seed),
                )
            )
    table = pd.DataFrame(rows)
    table["qualifies"] = table[cfg.causal_range_measure] >= cfg.causal_min_range
    return table


def run_arm(
    bridge,
    cfg: config.RunConfig,
    names: list[str],
    methods: list[str],
    *,
    layers: list[int] | None = None,
    modes: tuple[str, ...] = ablation.MODES,
) -> Arm:
    """The causal arm on one model: the range table of every concept x layer x readout (on the screen texts),
    then, in the qualifying cells, every method's keep/remove-top-k per-text effects (k = `cfg.causal_k`) on
    all `cfg.causal_n_texts` texts, with the whole layer's as reference.

    `methods`: ``rankers.RANKERS`` names or ``EXTRA_ORDERS`` ones (e.g. "loud_idle"), ranked on the first
    split's train part at each layer. Every forward pass goes through the activation cache
    (`ablation.ablated_final_resid`), so a warm rerun runs none, and settings shared with another call (the
    same texts, layer, mask and fill, e.g. notebook 04 after notebook 03) are computed once."""
    layers = layers if layers is not None else layers_of(cfg, bridge.cfg.n_layers)
    d_mlp, k = bridge.cfg.d_mlp, cfg.causal_k
    prepared = {n: prepare(bridge, cfg, n, layers) for n in progress.bar(names, "causal arm: concepts")}
    runs = {n: run for n, (run, _) in prepared.items()}
    ranges = range_table(bridge, cfg, {n: run.subset(screen) for n, (run, screen) in prepared.items()}, layers)
    chosen = ranges[ranges["qualifies"]]
    cells = sorted({(c, int(layer)) for c, layer in chosen[["concept", "layer"]].values})
    W = {layer: writing_vectors(bridge, layer) for layer in {layer for _, layer in cells}}
    orders = parallel.map_units(
        _orders,
        [(*runs[c].train[layer], *W[layer], methods, k, cfg.seed, cfg.rankers) for c, layer in cells],
        desc="causal arm: rankings",
    )
    effect_rows = []
    settings = [(WHOLE, "remove")] + [(m, mode) for m in methods for mode in modes]
    for (name, layer), order in progress.bar(list(zip(cells, orders)), "causal arm: qualifying cells"):
        run = runs[name]
        keeps = [np.zeros(d_mlp, dtype=bool)] + [ablation.kept_neurons(order[m], k, mode) for m, mode in settings[1:]]
        scored = _scores(bridge, cfg, run, layer, keeps)
        for r in chosen[(chosen["concept"] == name) & (chosen["layer"] == layer)]["readout"]:
            scale = float(abs(effects(run.y, run.clean[r], scored[0][r]).mean()))
            for (m, mode), s in zip(settings, scored):
                effect_rows.append(
                    pd.DataFrame(
                        dict(concept=name, layer=layer, readout=r, method=m, mode=mode, k=d_mlp if m == WHOLE else k,
                             text=run.texts, y=run.y, effect=effects(run.y, run.clean[r], s[r]), scale=scale)
                    )
                )  # fmt: skip
    columns = ["concept", "layer", "readout", "method", "mode", "k", "text", "y", "effect", "scale"]
    eff = pd.concat(effect_rows, ignore_index=True) if effect_rows else pd.DataFrame(columns=columns)
    return Arm(cfg.model, layers, cfg.causal_positions, cfg.causal_min_range, k, ranges, eff)


def paired_tests(arm_effects: pd.DataFrame, method: str, baselines: list[str], seed: int = 0) -> pd.DataFrame:
    """Within each qualifying cell (concept, layer, readout, mode, k): `method` against each baseline on the
    paired per-text differences d_i = sign (e_i(method) - e_i(baseline)) (> 0: the method is better).

    Columns: n texts, mean_d and its 95 % bootstrap interval over texts (in units of the whole layer's
    mean effect), rank_biserial (matched pairs: (W+ - W-) / (W+ + W-)), p (two-sided Wilcoxon signed-rank
    over texts), p_holm (Holm over every row returned), verdict."""
    from statsmodels.stats.multitest import multipletests

    rows = []
    keys = ["concept", "layer", "readout", "mode", "k"]
    mine = arm_effects[arm_effects["method"] == method]
    for key, own in mine.groupby(keys, sort=False):
        cell = arm_effects.set_index(keys).loc[key].reset_index()
        for base in baselines:
            theirs = cell[cell["method"] == base]
            if theirs.empty or base == method:
                continue
            a, b = own.set_index("text")["effect"], theirs.set_index("text")["effect"]
            d = SIGN[key[3]] * (a - b.loc[a.index]).to_numpy() / own["scale"].iloc[0]
            low, high = comparison.bootstrap_ci(d, seed=seed)
            rows.append(
                dict(zip(keys, key), method=method, baseline=base, n=len(d), mean_d=float(d.mean()), ci_low=low,
                     ci_high=high, rank_biserial=comparison.rank_biserial(d), p=comparison.wilcoxon_p(d))
            )  # fmt: skip
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = multipletests(out["p"], alpha=comparison.ALPHA, method="holm")[1]
    # the direction of a significant result is the signed-rank test's own (as in comparison.compare), not
    # the sign of the mean: rank_biserial > 0 exactly when the positive ranks outweigh the negative ones
    out["verdict"] = np.where(
        out["p_holm"] >= comparison.ALPHA,
        "no detectable difference",
        np.where(out["rank_biserial"] > 0, "better", "worse"),
    )
    return out


def cell_summary(tests: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`paired_tests`' rows for reading: counted over cells by verdict per (readout, mode, baseline), then
    cell by cell, each entry "mean_d (p_holm p) verdict" (n.d.: no detectable difference)."""
    counts = (
        tests.groupby(["readout", "mode", "baseline"])
        .agg(cells=("verdict", "size"), better=("verdict", lambda v: (v == "better").sum()),
             worse=("verdict", lambda v: (v == "worse").sum()), mean_d=("mean_d", "mean"),
             rank_biserial=("rank_biserial", "mean"))
    )  # fmt: skip
    short = tests["verdict"].replace("no detectable difference", "n.d.")
    result = tests.assign(
        result=[f"{m:+.3f} (p_holm {p:.3f}) {v}" for m, p, v in zip(tests["mean_d"], tests["p_holm"], short)]
    )
    per_cell = result.pivot(index=["concept", "layer", "readout", "mode", "n"], columns="baseline", values="result")
    return counts, per_cell


def within_cell_headline(tests: pd.DataFrame, readout: str, mode: str) -> str:
    """The within-cell verdicts of one readout and mode in words, cell by cell: "concept layer L: better than
    a, b, no detectable difference from c" ("none" without such cells)."""
    words = {
        "better": "better than",
        "worse": "worse than",
        "no detectable difference": "no detectable difference from",
    }
    sel = tests[(tests["readout"] == readout) & (tests["mode"] == mode)] if len(tests) else tests
    return (
        "; ".join(
            f"{c} layer {L}: " + ", ".join(f"{words[v]} {', '.join(g['baseline'])}" for v, g in cell.groupby("verdict"))
            for (c, L), cell in sel.groupby(["concept", "layer"])
        )
        or "none"
    )


def concept_areas(arm_effects: pd.DataFrame, concepts: list[str] | None = None) -> pd.DataFrame:
    """``comparison.compare``'s input: per concept, layer (in its "seed" column: the layers of a concept are
    averaged like its seeds), method, eval (the readout) and mode, the mean per-text effect in units of the
    whole layer's mean effect ("area": keep higher is better, remove lower is better)."""
    e = arm_effects if concepts is None else arm_effects[arm_effects["concept"].isin(concepts)]
    e = e[e["method"] != WHOLE]
    g = e.groupby(["concept", "layer", "method", "readout", "mode"], as_index=False).agg(
        effect=("effect", "mean"), scale=("scale", "first")
    )
    return pd.DataFrame(
        dict(concept=g["concept"], seed=g["layer"], method=g["method"], eval=g["readout"], mode=g["mode"],
             area=g["effect"] / g["scale"])
    )  # fmt: skip


def verdict(compared: pd.DataFrame, readout: str = "behaviour", mode: str = "remove") -> tuple[str, str]:
    """Claim 3 judged causally from ``comparison.compare`` rows: "holds" when the method is better than every
    baseline under `readout` and `mode` after Holm, "does not hold" when it is worse than any, "cannot tell"
    otherwise (including when no concept qualified, or too few for any test to reach alpha)."""
    part = compared[(compared["evaluation"] == readout) & (compared["mode"] == mode)] if len(compared) else compared
    if part.empty:
        return "cannot tell", f"no qualifying {readout} cell: ablating the layer does not move this readout enough"
    n = int(part["n"].max())
    words = ", ".join(f"{r.baseline} {r.mean:+.3f} (p_holm {r.p_holm:.3f})" for r in part.itertuples())
    head = f"{mode}-top-k, {readout} readout, {n} concepts; mean advantage in whole-layer units: {words}"
    if comparison.smallest_p(n) >= comparison.ALPHA / len(compared):
        return "cannot tell", f"{head}; {n} concepts cannot reach significance after Holm"
    if (part["verdict"] == "worse").any():
        return "does not hold", head
    if (part["verdict"] == "better").all():
        return "holds", head
    return "cannot tell", head


def effect_figure(arm: Arm, methods: list[str], readout: str, paper_method: str):
    """Per mode (keep / remove-top-k), each method's mean per-text effect in units of the whole layer's mean
    effect, one dot per qualifying cell (concept x layer) of `readout`, lines joining a cell's methods, and
    the mean over cells (0: as the clean model; -1: as the whole layer ablated). Returns the figure."""
    import matplotlib.pyplot as plt

    from .plotting import method_style

    areas = concept_areas(arm.effects[arm.effects["readout"] == readout])
    modes = [m for m in ablation.MODES if m in set(areas["mode"])]
    fig, axes = plt.subplots(1, max(len(modes), 1), figsize=(5.5 * max(len(modes), 1), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        part = areas[areas["mode"] == mode].pivot_table(index=["concept", "seed"], columns="method", values="area")
        shown = [m for m in methods if m in part.columns]
        x = np.arange(len(shown))
        for _, row in part[shown].iterrows():
            ax.plot(x, row.to_numpy(), color="0.8", lw=0.6, zorder=1)
        for i, m in enumerate(shown):
            style = method_style(m)
            ax.scatter(np.full(len(part), i), part[m], s=10, color=style.color, zorder=2)
            ax.hlines(part[m].mean(), i - 0.3, i + 0.3, color=style.color, lw=3 if m == paper_method else 1.5, zorder=3)
        ax.axhline(0, color="0.5", lw=0.8, ls=":")
        ax.axhline(-1, color="0.5", lw=0.8, ls="--")
        ax.set_xticks(x, [method_style(m).label if m == paper_method else m for m in shown], rotation=25, ha="right")
        ax.set_ylabel("mean per-text effect / |whole layer's|")
        better = "higher" if mode == "keep" else "lower"
        ax.set_title(f"{mode}-top-{arm.k}, {readout} readout ({better} is better); {len(part)} cells", fontsize=10)
    return fig
