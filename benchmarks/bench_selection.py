"""Wall time of each neuron selector of ``sparseprobe_core.selection`` at real and planted sizes.

Sizes (rows x neurons, d_model): the planted study's layer (1000 x 512, 64) and real layers with the
paper profile's 400 training rows: SmolLM2-135M (400 x 1536, 576) and Gemma 3 270M (400 x 2048, 640).
The data are planted layers of those shapes (``theory.planted_mlp``, hard case, k* = 32): the cost
depends on the shape, not on where the activations came from, and no model is needed.

Per size it prints the wall time of one selection by each method, on ONE thread (BLAS limited with
threadpoolctl; liblinear is single-threaded anyway): the noise rule (output probe on half the rows
plus the rule on the other half), its BH variant, the knockoff filter with the equicorrelated
S-matrix (split into Ledoit-Wolf, S-matrix + sampling, and the lasso statistic), stability selection
(50 half-subsamples, the usual count, and 30, the planted study's) and CV 1-SE. Then, separately, the
knockpy S-matrix alone for each ``--smatrix`` method, each in a child process stopped after
``--smatrix-timeout`` seconds (SDP is far too slow at real sizes; its row then says "> limit").

    .venv/bin/python benchmarks/bench_selection.py [--sizes 1000x512x64,400x1536x576,400x2048x640]
                                                   [--smatrix equicorrelated,mvr,maxent,sdp]
                                                   [--smatrix-timeout 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import time
import warnings

import numpy as np
from sklearn.covariance import LedoitWolf
from threadpoolctl import threadpool_limits

from sparseprobe_core import concepts, selection, theory


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _noise_rule(P, seed, threshold):
    half = concepts.make_split(P.y, seed=seed, test_size=0.5)
    w, _ = theory.fit_output_probe(P.M[half.train], P.y[half.train], seed=seed)
    C_val = theory.neuron_contributions(P.A[half.test], theory.effective_neuron_weights(P.W_out, w))
    return selection.noise_rule(C_val, P.y[half.test], threshold=threshold)


def _knockoff_parts(X: np.ndarray, seed: int) -> dict[str, float]:
    """The equicorrelated knockoff filter's three stages, timed one by one (same code path)."""
    import knockpy.knockoffs

    Z = selection._standardize(X)
    lw, t_lw = _timed(lambda: LedoitWolf().fit(Z))
    np.random.seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        _, t_s = _timed(
            lambda: knockpy.knockoffs.GaussianSampler(
                X=Z, mu=np.zeros(Z.shape[1]), Sigma=lw.covariance_, invSigma=lw.precision_, method="equicorrelated"
            ).sample_knockoffs()
        )
    return {"ledoit_wolf": t_lw, "smatrix_and_sample": t_s}


def _smatrix_child(d: int, n: int, d_model: int, seed: int, method: str, out) -> None:
    import knockpy.smatrix

    with threadpool_limits(limits=1):
        P = theory.planted_mlp(n=n, d_mlp=d, d_model=d_model, k_true=32, seed=seed, hard=True)
        Sigma = LedoitWolf().fit(selection._standardize(P.A)).covariance_
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            S, elapsed = _timed(lambda: knockpy.smatrix.compute_smatrix(Sigma, method=method))
        out.put((elapsed, float(np.diag(S).mean())))


def _smatrix_time(d: int, n: int, d_model: int, seed: int, method: str, timeout: float) -> str:
    out = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=_smatrix_child, args=(d, n, d_model, seed, method, out))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.terminate()
        child.join()
        return f"> {timeout:.0f} s (stopped)"
    elapsed, diag = out.get()
    return f"{elapsed:7.1f} s   mean diag S = {diag:.3f}"


def _bench_size(n: int, d: int, d_model: int, seed: int) -> None:
    with threadpool_limits(limits=1):
        P = theory.planted_mlp(n=n, d_mlp=d, d_model=d_model, k_true=32, seed=seed, hard=True)
        print(f"\n{n} rows x {d} neurons (d_model {d_model}), one thread")
        runs = {
            "noise_rule (probe + rule)": lambda: _noise_rule(P, seed, "universal"),
            "noise_rule_bh (probe + rule)": lambda: _noise_rule(P, seed, "bh"),
            "knockoff+ / knockoff (equicorrelated)": lambda: selection.knockoff_filter(P.A, P.y, random_state=seed),
            "stability (50 subsamples)": lambda: selection.stability_selection(
                P.A, P.y, n_subsamples=50, random_state=seed
            ),
            "stability (30 subsamples)": lambda: selection.stability_selection(
                P.A, P.y, n_subsamples=30, random_state=seed
            ),
            "cv_1se (5 folds)": lambda: selection.cv_one_se(P.A, P.y, random_state=seed),
        }
        for name, fn in runs.items():
            sel, elapsed = _timed(fn)
            other = sel.info.get("selected_other_offset")
            extra = f" (knockoff, offset 0: k = {other.size})" if other is not None else ""
            print(f"  {name:40s} {elapsed:7.2f} s   k = {sel.k}{extra}", flush=True)
        parts = _knockoff_parts(P.A, seed)
        print(
            "  knockoff stages: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
            + " (the rest of its time is the CV lasso statistic)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="1000x512x64,400x1536x576,400x2048x640", help="comma-separated n x d_mlp x d_model"
    )
    parser.add_argument(
        "--smatrix",
        default="equicorrelated,mvr,maxent,sdp",
        help="knockpy S-matrix methods to time alone ('' for none)",
    )
    parser.add_argument("--smatrix-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for size in args.sizes.split(","):
        n, d, d_model = (int(v) for v in size.split("x"))
        _bench_size(n, d, d_model, args.seed)
        for method in filter(None, args.smatrix.split(",")):
            print(
                f"  S-matrix {method:14s} {_smatrix_time(d, n, d_model, args.seed, method, args.smatrix_timeout)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
