"""Benchmark of the downstream ablation sweep (evaluation (ii) of sparseprobe_core.ablation).

Times a small sweep (a few ranking methods x k values x keep/remove-top-k, mean-ablation) scored by the
final-residual probe three ways: the naive full re-run of every sequence; the KV-reuse path (clean
prefix keys/values and the residual entering the ablated layer computed once, then one token per
example per setting through the layers from the ablated one on), one setting per forward pass;
and the KV-reuse path with all settings sharing batched passes (``final_resid_many``, what the
notebooks use). Prints the speed ratios and checks that all paths give the same AUROC.

    .venv/bin/python benchmarks/bench_ablation.py [--concept python_string] [--n-test 32] [--threads 2]

All paths use the same torch thread count (default: torch's own, 2 on the reference machine; pass
--threads 1 when the cores are busy with other work, see DownstreamRunner). Loads the embedded model
(a few seconds, not timed).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from sparseprobe_core import ablation, activations, concepts, config, models, rankers

METHODS = ("random", "mean_diff", "sparse_prober_contribution")
KS = (10, 100, 500)


def main(concept: str = "python_string", n_test: int = 32, threads: int | None = None, seed: int = 0) -> None:
    cfg = config.make_config(profile="ci", concept=concept, seed=seed)
    bridge = models.load_model(cfg.model)
    info = models.model_info(bridge, cfg.model)
    layer = cfg.rank_layer(info.n_layers)
    c = concepts.subsample(concepts.load_concept(concept), cfg.n_per_class, cfg.seed)
    acts = activations.layer_activations(bridge, cfg.model, c.texts, [layer], final_resid=True)
    A, _ = acts[layer]
    split = concepts.make_split(c.labels, seed=cfg.seed, test_size=0.3, val_size=0.2)
    test = split.test[:n_test]
    W_out, b_out = models.writing_vectors(bridge, layer)
    ctx = rankers.RankContext(A=A[split.train], y=c.labels[split.train], W_out=W_out, b_out=b_out, seed=seed)
    orders = {m: rankers.rank(m, ctx) for m in METHODS}
    fill = ablation.fill_values(A[split.train], "mean")
    ids = activations.tokenize_last(bridge, [c.texts[i] for i in test], 128)
    settings = [(m, k, mode) for m in METHODS for k in KS for mode in ablation.MODES]
    print(
        f"{concept}, layer {layer}, {len(test)} test texts ({np.mean([len(x) for x in ids]):.1f} tokens on average), "
        f"{len(settings)} settings ({len(METHODS)} methods x k in {KS} x keep/remove-top-k, mean-ablation), "
        f"{threads or torch.get_num_threads()} torch thread(s)"
    )

    start = time.perf_counter()
    runner = ablation.DownstreamRunner(bridge, ids, layer, threads=threads)
    prefix = time.perf_counter() - start
    probe = ablation.dense_probe(seed).fit(acts["final"][split.val], c.labels[split.val])
    y_test = c.labels[test]
    resid, seconds = {}, {}
    masks = [ablation.kept_neurons(orders[m], k, mode) for m, k, mode in settings]
    for name, run in (
        ("kv_reuse", lambda: [runner.final_resid(keep, fill) for keep in masks]),
        ("batched", lambda: runner.final_resid_many(masks, fill)),
        ("naive", lambda: [runner.final_resid_naive(keep, fill) for keep in masks]),
    ):
        start = time.perf_counter()
        resid[name] = run()
        seconds[name] = time.perf_counter() - start
    seconds["kv_reuse_total"] = seconds["kv_reuse"] + prefix
    clean = runner.final_resid(np.ones(len(fill), bool), fill)
    auroc = {
        name: np.array([roc_auc_score(y_test, probe.decision_function(r)) for r in rs]) for name, rs in resid.items()
    }
    resid_diff = max(
        np.abs(a - b).max() for fast in ("kv_reuse", "batched") for a, b in zip(resid[fast], resid["naive"])
    )
    effect = min(np.abs(r - clean).max() for r in resid["naive"])
    scale = max(np.abs(r).max() for r in resid["naive"])
    print(
        f"kv_reuse: {seconds['kv_reuse']:7.2f} s for the sweep + {prefix:.2f} s once for the clean prefix keys/values "
        f"({seconds['kv_reuse'] / len(settings):.3f} s per setting)"
    )
    print(
        f" batched: {seconds['batched']:7.2f} s for the sweep ({seconds['batched'] / len(settings):.3f} s per setting; "
        f"{seconds['kv_reuse'] / seconds['batched']:.1f}x faster than one setting per pass)"
    )
    print(f"   naive: {seconds['naive']:7.2f} s for the sweep ({seconds['naive'] / len(settings):.3f} s per setting)")
    print(
        "speed-up of KV reuse over the naive full re-run: "
        f"{seconds['naive'] / seconds['kv_reuse_total']:.1f}x including the prefix, "
        f"{seconds['naive'] / seconds['kv_reuse']:.1f}x per setting (aim >= 10x)"
    )
    diff = max(np.abs(auroc[fast] - auroc["naive"]).max() for fast in ("kv_reuse", "batched"))
    print(f"same AUROC on all {len(settings)} settings: max |difference| {diff:.1e} -> {diff < 1e-3}")
    print(
        f"same final residual: max |difference| {resid_diff:.1e} on values up to {scale:.0f} "
        f"(relative {resid_diff / scale:.1e}); smallest ablation effect on the residual {effect:.1f}, "
        "so the check is not vacuous"
    )
    for (m, k, mode), a, b in zip(settings, auroc["kv_reuse"], auroc["naive"]):
        print(f"  {m:>28} {mode:>6}-top-k k={k:<4} AUROC kv_reuse {a:.4f}  naive {b:.4f}")
    print(
        "(the downstream AUROC barely moves with k here: one layer's MLP at one token carries little of what "
        "the final-residual probe reads; see notebook 03)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concept", default="python_string")
    parser.add_argument("--n-test", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.concept, args.n_test, args.threads, args.seed)
