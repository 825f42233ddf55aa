"""Peak memory of collecting a large concept into the activation store, for growing numbers of texts.

Each size runs in a fresh process: load the model, reset the process's peak resident size (Linux
/proc/self/clear_refs), collect `mlp.hook_post` and `mlp.hook_out` of 3 layers for n texts into an
empty store (`activations.layer_activations`), and read the peak (VmHWM) above the resident size
before collecting. Then the read-back: the same call again (a cache hit, memory-mapped above
`activations.MAP_ABOVE_BYTES`), and one probe-sized read (70 % of one layer's hidden activations,
copied as a probe's fit would). The activations themselves (n x 3 x (d_mlp + d_model) float32) are
printed beside, for scale: the peak must stay flat while they grow.

Texts: the concept's texts repeated up to n, each cut to its last `--max-tokens` tokens (short texts
keep the forward passes cheap on a CPU; memory does not depend on their content).

    .venv/bin/python benchmarks/bench_store.py [--ns 2000,10000,20000] [--layers 0,1,2] [--max-tokens 12]
                                              [--batch-size 128] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from sparseprobe_core import activations, concepts, models


def _status_mb(field: str) -> float:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(field)) / 1024


def _reset_peak() -> float:
    """Reset the peak resident size to the current one (Linux); return the current one, in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS:")


def one(n: int, layers: list[int], max_tokens: int, batch_size: int, concept: str, device: str, dtype: str) -> dict:
    """Collect n texts into an empty store in this process; the memory and speed numbers."""
    import torch

    bridge = models.load_model(models.DEFAULT_MODEL, device=device, dtype=dtype)
    base = list(concepts.load_concept(concept).texts)
    texts = [base[i % len(base)] for i in range(n)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "kept their last N tokens": intended here
        ids = activations.tokenize_last(bridge, texts, max_tokens)
    start_mb = _reset_peak()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acts = activations.layer_activations(
            bridge, models.DEFAULT_MODEL, texts, layers, max_tokens=max_tokens, batch_size=batch_size
        )
    seconds = time.perf_counter() - start
    collect_mb = _status_mb("VmHWM:") - start_mb
    del acts
    read_start = _reset_peak()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acts = activations.layer_activations(
            bridge, models.DEFAULT_MODEL, texts, layers, max_tokens=max_tokens, batch_size=batch_size
        )
    read_mb = _status_mb("VmHWM:") - read_start
    train = np.random.default_rng(0).permutation(n)[: int(0.7 * n)]
    A_train = acts[layers[-1]][0][np.sort(train)]  # what a probe of one layer reads
    probe_mb = _status_mb("VmHWM:") - read_start
    return dict(
        n=n,
        tokens=sum(len(x) for x in ids),
        seconds=seconds,
        collect_mb=collect_mb,
        read_mb=read_mb,
        probe_read_mb=probe_mb,
        train_rows_mb=A_train.nbytes / 2**20,
        acts_mb=sum(a.nbytes for pair in acts.values() for a in pair) / 2**20,
        mapped=all(isinstance(a.base, np.memmap) for pair in acts.values() for a in pair),
        gpu_peak_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    )


def main() -> None:
    """Run each size in its own process and print one line per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="2000,10000,20000", help="numbers of texts, comma-separated")
    parser.add_argument("--layers", default="0,1,2", help="3 layers of SmolLM2 (early ones: cheap to reach)")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--concept", default="python_string")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    if args.one:
        print(
            json.dumps(one(args.one, layers, args.max_tokens, args.batch_size, args.concept, args.device, args.dtype))
        )
        return
    print(
        f"{models.DEFAULT_MODEL}, layers {layers} (hook_post + hook_out each), texts cut to {args.max_tokens} tokens, "
        f"batches of {args.batch_size}, "
        f"{args.device} {args.dtype}; FLUSH_BYTES {activations.FLUSH_BYTES >> 20} MiB, "
        f"MAP_ABOVE_BYTES {activations.MAP_ABOVE_BYTES >> 20} MiB; peaks are resident memory above the start (MB)"
    )
    print(f"{'n':>7} {'tokens':>8} {'tok/s':>7} {'activations':>11} {'collect':>8} {'read':>6} {'+ one layer':>22}")
    for n in (int(x) for x in args.ns.split(",")):
        with tempfile.TemporaryDirectory() as cache:  # an empty store each time
            out = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--one", str(n)],
                env={**os.environ, "SPARSEPROBE_CACHE": cache, "TQDM_DISABLE": "1"},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        gpu = f"  GPU peak {r['gpu_peak_mb']:.0f} MB" if r["gpu_peak_mb"] is not None else ""
        print(
            f"{r['n']:>7} {r['tokens']:>8} {r['tokens'] / r['seconds']:>7.0f} {r['acts_mb']:>9.0f}MB "
            f"{r['collect_mb']:>8.0f} {r['read_mb']:>6.0f} {r['probe_read_mb']:>6.0f} "
            f"({r['train_rows_mb']:.0f} MB of rows)"
            f"{'  memory-mapped' if r['mapped'] else ''}{gpu}"
        )


if __name__ == "__main__":
    main()
