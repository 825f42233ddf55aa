"""Activation collection vs a plain forward pass of the same model, on the same batches.

Prints the overhead ratio of `activations.run_last_token` (TransformerLens hooks caching
`mlp.hook_post` and `hook_mlp_out` of every layer) over the HF model's own forward, and the saving
of stopping the forward pass after a shallow layer. Repetitions alternate between the variants and
the minimum is kept, so load from other processes hits all of them alike.

    .venv/bin/python benchmarks/bench_activations.py [--concept python_string] [--n 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from sparseprobe_core import activations, concepts, models


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print one line per variant with its ratio to the plain forward."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concept", default="python_string")
    parser.add_argument("--n", type=int, default=256, help="examples (balanced subsample)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shallow-layer", type=int, default=5)
    args = parser.parse_args()

    bridge = models.load_model()
    n_layers = bridge.cfg.n_layers
    concept = concepts.subsample(concepts.load_concept(args.concept), args.n // 2, seed=0)
    ids = activations.tokenize_last(bridge, list(concept.texts), 128)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = [
        activations.left_pad([ids[i] for i in order[s : s + args.batch_size]], activations._pad_id(bridge))
        for s in range(0, len(ids), args.batch_size)
    ]
    all_hooks = [h.format(layer=layer) for layer in range(n_layers) for h in (activations.HIDDEN, activations.MLP_OUT)]
    shallow = [h.format(layer=args.shallow_layer) for h in (activations.HIDDEN, activations.MLP_OUT)]

    def plain() -> None:
        with torch.no_grad():
            for b in batches:
                bridge.original_model(**b)

    variants = {
        "plain HF forward (logits)": plain,
        f"ours: all {n_layers} layers cached": lambda: activations.run_last_token(
            bridge, ids, all_hooks, args.batch_size
        ),
        f"ours: stop after layer {args.shallow_layer}": lambda: activations.run_last_token(
            bridge, ids, shallow, args.batch_size
        ),
    }
    plain()  # warm-up: first calls allocate
    best = {name: float("inf") for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            best[name] = min(best[name], _timed(fn))
    tokens = sum(len(x) for x in ids)
    base = best["plain HF forward (logits)"]
    print(f"{len(ids)} texts of '{args.concept}', {tokens} tokens, batch {args.batch_size}, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"{name:<34} {seconds:7.2f} s  {tokens / seconds:7.0f} tok/s  ratio to plain {seconds / base:5.2f}x")


if __name__ == "__main__":
    main()
