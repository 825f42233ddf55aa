"""How fast this machine does the two kinds of work a paper run is made of, against the machines in the README.

Machines of this project's kind differ: two that `lscpu` cannot tell apart (Intel Xeon with AMX, model 167)
ran the same fresh paper run in 50 min 57 s and 64 min 42 s (benchmarks/TIMINGS.md). Before reading a run time
against the README's budget table, measure the machine:

- **decoder**: SmolLM2's plain decoder (no hooks, no LM head) on 512 sentiment texts, length-sorted, in batches
  of 32, best of `--repeats` passes: tokens per second (the forward passes, about 40-50 % of a fresh run);
- **fitting**: scikit-learn's liblinear along a 20-strength L1 path on a fixed synthetic problem of a rank
  unit's shape (560 rows x 576 neurons, one BLAS thread as in the worker processes), best of 5 x `--repeats`:
  paths per second (the fitting, most of the rest).

Each is printed with its ratio to the reference machines measured with this script (1.00x = as fast).

    .venv/bin/python benchmarks/bench_machine.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_activations import length_sorted_batches, plain_forward  # the same batches and forward
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.svm import l1_min_c
from threadpoolctl import threadpool_limits

from sparseprobe_core import activations, concepts, models

# (tokens/s of the decoder, L1 paths/s of the fitting) measured by this script, per machine and date: the middle
# of the runs minutes apart on one machine, which gave 832-998 tokens/s and 3.2-4.3 paths/s (a shared machine
# varies by itself), so read a ratio to about +-0.1 (decoder) / +-0.15 (fitting); the two machines of model 167
# differed by 1.30x in decoder speed (TIMINGS.md), which this can tell
REFERENCES = {
    "Intel Xeon with AMX, model 167 (2026-12-02; paper run 64 min 42 s at b4f9f55)": (940.0, 3.6),
    # one run on the day of its paper run; two runs on another machine of this kind the day before: 341-345
    # tokens/s, 2.13-2.24 paths/s
    "AMD EPYC Zen 3, family 25 model 1, AVX2 (2026-12-03; paper run 112 min 10 s at 7b2714a)": (406.0, 2.55),
}


def decoder_speed(repeats: int) -> float:
    """Tokens per second of SmolLM2's decoder without its LM head on the benchmark's batches."""
    bridge = models.load_model("smollm2-135m")
    texts = list(concepts.subsample(concepts.load_concept("sentiment"), 256, seed=0).texts)
    ids = activations.tokenize_last(bridge, texts, 128)
    batches = length_sorted_batches(ids, 32)
    run = plain_forward(bridge, bridge.original_model.base_model)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            run(b)
        best = min(best, time.perf_counter() - start)
    return sum(len(x) for x in ids) / best


def fitting_speed(repeats: int) -> float:
    """L1 paths per second: 20 liblinear fits at C = l1_min_c * logspace(0, 2, 20) on a fixed problem."""
    X, y = make_classification(n_samples=560, n_features=576, n_informative=20, random_state=0)
    X = (X - X.mean(0)) / X.std(0)
    Cs = l1_min_c(X, y, loss="log") * np.logspace(0, 2, 20)
    best = np.inf
    with threadpool_limits(1):
        for _ in range(5 * repeats):  # a path takes about 0.3 s: more tries for the one quiet moment
            start = time.perf_counter()
            for C in Cs:
                LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear", tol=1e-4, random_state=0).fit(X, y)
            best = min(best, time.perf_counter() - start)
    return 1 / best


def main() -> None:
    """Measure both speeds and print them beside each reference machine's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokens, paths = decoder_speed(args.repeats), fitting_speed(args.repeats)
    print(
        f"this machine: decoder {tokens:,.0f} tokens/s ({torch.get_num_threads()} torch threads); "
        f"fitting {paths:.2f} L1 paths/s"
    )
    for name, (ref_tokens, ref_paths) in REFERENCES.items():
        print(f"  vs {name}: decoder {tokens / ref_tokens:.2f}x, fitting {paths / ref_paths:.2f}x")


if __name__ == "__main__":
    main()
