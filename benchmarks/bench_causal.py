"""Benchmark of the causal arm's runner: a layer ablated at every position of the text
(`ablation.AllPositionsRunner`, what `causal.run_arm` uses) against the naive full re-run.

For each model and layer: a few rankings x keep/remove-top-k (mean fill) on a concept's balanced test texts,
run three ways:

- naive: every sequence through every layer with the ablation hook, one setting per forward pass;
- runner: one clean pass per batch that stops at the layer (the residual entering it at every position),
  then every setting through the layers from the layer on only, `--chunk` settings per pass;
- warm: `ablation.ablated_final_resid` reading the same settings back from the activation cache.

Prints seconds per setting (wall and CPU), the ratio naive / runner per setting (target >= 5x), the
runner's throughput in text tokens per second, and checks that both paths give the same final residual
and the same probe AUROC. Naive runs only `--naive` settings (it is the slow one); per-setting times
are compared.

The same settings are then run with the ablation at the probed token only (the named option
`positions="last"`, `ablation.DownstreamRunner`: the prefix keys/values of the clean run are reused, so
each setting runs one token through the layers from the layer on) against its naive full re-run.

Why the all-position ratio cannot reach 5x: an ablation at every position changes every position's
residual from layer L on, so each setting must run all tokens through layers L..N-1 however the clean
run is reused; the per-setting ratio is bounded by N / (N - L) (SmolLM2, N = 30: 1.1x at layer 3, 1.9x
at layer 14), and batching settings buys little on a CPU, where a forward pass is compute-bound. The
probed-token option is where the target applies.

    .venv/bin/python benchmarks/bench_causal.py [--model smollm2-135m] [--concept french] [--n-texts 64]
        [--layers 0.1,0.5] [--threads 1] [--naive 2] [--chunk 8] [--batch 16]

Loads the embedded model (not timed); the clean activations come from the activation cache.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from sparseprobe_core import ablation, causal, config, models, rankers

METHODS = ("sparse_prober_contribution", "f_stat", "act_magnitude", "random")


@contextmanager
def timed(out: dict, name: str):
    """Wall and CPU seconds of the block, stored as out[name] = (wall, cpu)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    out[name] = (time.perf_counter() - wall, time.process_time() - cpu)


def run_both(make_runner, keeps, fill, chunk: int, n_naive: int):
    """Build a runner (its clean pass), run every setting through it, and the first `n_naive` settings
    naively; returns (runner, fast, naive, {"clean" | "runner" | "naive": (wall, cpu)})."""
    t: dict[str, tuple[float, float]] = {}
    with timed(t, "clean"):
        runner = make_runner()
    with timed(t, "runner"):
        fast = runner.final_resid_many(keeps, fill, chunk=chunk)
    with timed(t, "naive"):
        naive = [runner.final_resid_naive(keep, fill) for keep in keeps[:n_naive]]
    return runner, fast, naive, t


def main(model: str, concept: str, n_texts: int, fractions: list[float], threads: int, n_naive: int, chunk: int,
         batch: int) -> None:  # fmt: skip
    torch.set_num_threads(threads)
    # the screen is a subset of the causal texts (the benchmark uses every text, not the screen)
    settings = {
        "causal_n_texts": n_texts,
        "causal_screen_texts": min(n_texts, config.PROFILES["paper"]["causal_screen_texts"]),
    }
    cfg = config.make_config(profile="paper", model=model, concept=concept, settings=settings)
    bridge = models.load_model(model)
    n_layers = bridge.cfg.n_layers
    layers = sorted({round(f * (n_layers - 1)) for f in fractions})
    run, _ = causal.prepare(bridge, cfg, concept, layers)  # (run, screen mask); the benchmark uses every text
    tokens = sum(map(len, run.token_ids))
    print(
        f"{model}, {concept}: {len(run.texts)} texts, {tokens} tokens ({tokens / len(run.texts):.1f} per text), "
        f"{threads} torch thread(s), batches of {batch} texts x {chunk} settings; readouts {list(run.readouts)}"
    )
    for layer in layers:
        A_train, y_train = run.train[layer]
        W_out, b_out = models.writing_vectors(bridge, layer)
        ctx = rankers.RankContext(A=A_train, y=y_train, W_out=W_out, b_out=b_out, seed=cfg.seed, settings=cfg.rankers)
        keeps = [
            ablation.kept_neurons(rankers.rank(m, ctx), cfg.causal_k, mode)
            for m in METHODS
            for mode in ("keep", "remove")
        ]
        fill = ablation.fill_values(A_train, "mean")
        runner, fast, naive, t = run_both(
            functools.partial(ablation.AllPositionsRunner, bridge, run.token_ids, layer, batch_size=batch),
            keeps,
            fill,
            chunk,
            n_naive,
        )
        with tempfile.TemporaryDirectory() as folder:
            os.environ["SPARSEPROBE_CACHE"] = folder
            ablation.ablated_final_resid(
                bridge, run.token_ids, layer, keeps, fill, cache_as=model, batch_size=batch, chunk=chunk
            )
            with timed(t, "warm"):
                warm = ablation.ablated_final_resid(bridge, run.token_ids, layer, keeps, fill, cache_as=model)
        S = len(keeps)
        per = {name: (t[name][0] / n, t[name][1] / n) for name, n in (("runner", S), ("naive", n_naive), ("warm", S))}
        scale = max(np.abs(x).max() for x in naive)
        diff = max(np.abs(f - n).max() for f, n in zip(fast, naive))
        probe = run.readouts["probe"]
        auroc_diff = max(abs(roc_auc_score(run.y, probe(f)) - roc_auroc) for f, roc_auroc in
                         zip(fast, [roc_auc_score(run.y, probe(n)) for n in naive]))  # fmt: skip
        depth = (n_layers - runner.start) / n_layers
        print(f"layer {layer} ({n_layers - runner.start} of {n_layers} layers run per setting), {S} settings:")
        print(f"  clean pass (layers < {layer}, once): {t['clean'][0]:.1f} s wall, {t['clean'][1]:.1f} s CPU")
        for name in ("naive", "runner", "warm"):
            print(f"  {name:>6}: {per[name][0]:7.2f} s wall, {per[name][1]:7.2f} s CPU per setting")
        print(
            f"  per-setting ratio naive / runner: {per['naive'][0] / per['runner'][0]:.1f}x wall, "
            f"{per['naive'][1] / per['runner'][1]:.1f}x CPU (target >= 5x); "
            f"including the clean pass: {per['naive'][0] / ((t['runner'][0] + t['clean'][0]) / S):.1f}x wall"
        )
        print(
            f"  runner throughput: {tokens / per['runner'][0]:.0f} text tokens per second per setting through "
            f"{n_layers - runner.start} layers ({tokens * depth / per['runner'][0]:.0f} full-depth tokens/s); "
            f"naive {tokens / per['naive'][0]:.0f} tokens/s"
        )
        print(
            f"  same final residual: max |difference| {diff:.1e} on values up to {scale:.0f} (relative "
            f"{diff / scale:.1e}); same probe AUROC: max |difference| {auroc_diff:.1e}; warm equals runner: "
            f"{all(np.array_equal(w, f) for w, f in zip(warm, fast))}; bound N / (N - L) = "
            f"{n_layers / (n_layers - runner.start):.1f}x"
        )
        last, fast_last, naive_last, t_last = run_both(
            functools.partial(ablation.DownstreamRunner, bridge, run.token_ids, layer, batch_size=batch),
            keeps,
            fill,
            chunk,
            n_naive,
        )
        wall_last = (t_last["naive"][0] / n_naive, t_last["runner"][0] / S)
        cpu_last = (t_last["naive"][1] / n_naive, t_last["runner"][1] / S)
        diff_last = max(np.abs(f - n).max() for f, n in zip(fast_last, naive_last))
        print(
            f"  probed token only (positions='last', {'prefix reused' if last.start else 'every layer run'}): "
            f"naive {wall_last[0]:.2f} s, runner {wall_last[1]:.3f} s wall per setting; ratio "
            f"{wall_last[0] / wall_last[1]:.1f}x wall, {cpu_last[0] / cpu_last[1]:.1f}x CPU (target >= 5x); "
            f"clean pass {t_last['clean'][0]:.1f} s; same final residual: max |difference| {diff_last:.1e}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--concept", default="french")
    parser.add_argument("--n-texts", type=int, default=64)
    parser.add_argument("--layers", default="0.1,0.5", help="fractions of depth")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--naive", type=int, default=2, help="settings run naively")
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    a = parser.parse_args()
    main(a.model, a.concept, a.n_texts, [float(x) for x in a.layers.split(",")], a.threads, a.naive, a.chunk, a.batch)
