"""Activation collection vs a plain decoder forward of the same model, on the same batches, per embedded model.

For each model, prints the ratio of `activations.run_last_token` (TransformerLens hooks recording
`mlp.hook_post` and `mlp.hook_out` of every layer, plus the last block's residual) over the HF
decoder's own forward WITHOUT its LM head (what the collection computes; the target ratio is at most
1.05x), the saving of stopping after a shallow layer, and, for reference, the HF forward with logits.
Every batch is timed under each variant back to back, `--repeats` times, and the minimum per batch
and variant is kept (then summed over batches): on a machine shared with other processes, load
then hits all variants alike, and one quiet moment per batch is enough.

`--device cuda` / `--dtype bfloat16` run every variant with the model there (inputs on its device, timings
synchronised with the GPU) and also print the peak GPU memory (benchmarks/device_check.sh).

    .venv/bin/python benchmarks/bench_activations.py [--models smollm2-135m,gemma3-270m] [--n 256] [--repeats 3]
                                                     [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from sparseprobe_core import activations, concepts, models

TARGET = 1.05


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # a GPU runs asynchronously: time what it did, not what was queued


def _timed(fn, *args) -> float:
    _sync()
    start = time.perf_counter()
    fn(*args)
    _sync()
    return time.perf_counter() - start


def length_sorted_batches(ids: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """The batches `activations.run_last_token` forms: the texts sorted by length (stable), cut every `batch_size`."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [[ids[i] for i in order[s : s + batch_size]] for s in range(0, len(ids), batch_size)]


def plain_forward(bridge, model) -> Callable[[list[list[int]]], None]:
    """A function running one batch through `model` (the bridge's HF decoder, with or without its LM head),
    left-padded as ours is, on the model's input device, with nothing recorded."""

    def run(b: list[list[int]]) -> None:
        inputs = activations.left_pad(b, activations.pad_id(bridge))
        with torch.no_grad():
            model(**{k: v.to(models.input_device(bridge)) for k, v in inputs.items()}, use_cache=False)

    return run


def bench_model(
    name: str,
    texts: list[str],
    batch_size: int,
    repeats: int,
    shallow_fraction: float,
    device: str = "cpu",
    dtype: str = "float32",
) -> float:
    """Time the variants on one model; print one line each; return ours (all layers) / plain decoder."""
    start = time.perf_counter()
    bridge = models.load_model(name, device=device, dtype=dtype)
    loaded = time.perf_counter() - start
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    n_layers, last = bridge.cfg.n_layers, bridge.cfg.n_layers - 1
    shallow_layer = round(shallow_fraction * last)
    ids = activations.tokenize_last(bridge, texts, 128)
    batch_ids = length_sorted_batches(ids, batch_size)
    per_layer = (activations.HIDDEN, activations.MLP_OUT)
    all_hooks = [h.format(layer=layer) for layer in range(n_layers) for h in per_layer]
    all_hooks.append(activations.RESID_POST.format(layer=last))
    shallow = [h.format(layer=shallow_layer) for h in per_layer]
    decoder = bridge.original_model.base_model
    base, ours = "plain HF decoder (no LM head)", f"ours: all {n_layers} layers + final resid"
    variants = {
        base: plain_forward(bridge, decoder),
        ours: lambda b: activations.run_last_token(bridge, b, all_hooks, batch_size),
        f"ours: stop after layer {shallow_layer}": lambda b: activations.run_last_token(bridge, b, shallow, batch_size),
        "plain HF forward with logits": plain_forward(bridge, bridge.original_model),
    }
    variants[base](batch_ids[0])  # warm-up: first calls allocate
    best = {v: [float("inf")] * len(batch_ids) for v in variants}
    for i, b in enumerate(batch_ids):
        for _ in range(repeats):
            for v, fn in variants.items():
                best[v][i] = min(best[v][i], _timed(fn, b))
    best = {v: sum(times) for v, times in best.items()}
    tokens = sum(len(x) for x in ids)
    gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if torch.cuda.is_available() else ""
    print(
        f"\n{name} on {models.input_device(bridge)} in {dtype}: {n_layers} layers, d_mlp {bridge.cfg.d_mlp}, "
        f"loaded in {loaded:.1f} s; {len(ids)} texts, {tokens} tokens, batch {batch_size}, best of {repeats} per "
        f"batch, {torch.get_num_threads()} torch thread(s){gpu}"
    )
    for v, seconds in best.items():
        print(
            f"  {v:<38} {seconds:7.2f} s  {tokens / seconds:7.0f} tok/s  "
            f"ratio to plain decoder {seconds / best[base]:5.2f}x"
        )
    ratio = best[ours] / best[base]
    verdict = "ok" if ratio <= TARGET else "ABOVE TARGET"
    print(f"  {name}: ours / plain decoder = {ratio:.3f}x (target <= {TARGET}x): {verdict}")
    return ratio


def main() -> None:
    """Run the benchmark on each requested model and print the ratio per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(models.EMBEDDED), help="comma-separated model names")
    parser.add_argument("--concept", default="python_string")
    parser.add_argument("--n", type=int, default=256, help="examples (balanced subsample)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shallow-fraction", type=float, default=0.2, help="the shallow layer as a fraction of depth")
    parser.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, ...")
    parser.add_argument("--dtype", default="float32", choices=models.DTYPES)
    args = parser.parse_args()

    texts = list(concepts.subsample(concepts.load_concept(args.concept), args.n // 2, seed=0).texts)
    print(f"'{args.concept}': {len(texts)} texts (the same texts for every model)")
    ratios = {
        name: bench_model(name, texts, args.batch_size, args.repeats, args.shallow_fraction, args.device, args.dtype)
        for name in args.models.split(",")
    }
    print("\nours / plain decoder (no LM head): " + ", ".join(f"{n} {r:.3f}x" for n, r in ratios.items()))


if __name__ == "__main__":
    main()
