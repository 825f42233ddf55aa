"""Benchmark the prober's regularisation path against scikit-learn saga and NeuroX.

On one concept's cached last-token activations at the rank layer (all d_mlp = 1536 neurons of
SmolLM2-135M), in one run:

1. ours   ``prober.prober_path``: 20 strengths C in [l1_min_c, 100 l1_min_c], one liblinear fit each
          (the first strength is the empty model, known analytically).
2. saga   ``LogisticRegression(l1_ratio=1, solver="saga")``, one fit per strength on the SAME
          weighted design and the same Cs (so both solve the same problems), warm-started from
          the previous strength (saga's best case; ``warm_start=True``), tol 1e-4, max_iter 1000.
3. NeuroX ``linear_probe.train_logistic_regression_probe`` (Dalvi et al. 2019; the elastic-net probe
          of sparseprobe_core/peers.py: raw activations, lambda_l1 = lambda_l2 = 1e-3, 10 Adam epochs,
          one torch thread), one fit at one strength, plus its ``get_neuron_ordering``.

It prints the wall time of each, the ratio to ours, and the test AUROC each reaches (best over
the path and at its largest C; NeuroX has one fit). The weighted design is built with the prober's
private ``_build_design`` so that saga sees exactly the matrix liblinear sees.

Data: by default every example of the concept (``--n-per-class all``; french: 1478 rows). Only the
400-per-class subsample of the paper profile is precomputed in the activation cache, so the first
run collects the activations of the other rows (a forward pass up to the rank layer: about a
minute for french on 2 CPU cores, several for the larger concepts; cached afterwards). Split:
70 % train / 30 % test, stratified.

    .venv/bin/python benchmarks/bench_prober.py [--concept french] [--n-per-class all|N]
                                                [--weighting contribution] [--layer L] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from sparseprobe_core import activations, concepts, config, models, prober

N_STRENGTHS = 20


def run_ours(A_tr, y_tr, A_te, y_te, W_out, weighting, seed):
    start = time.perf_counter()
    path = prober.prober_path(
        A_tr, y_tr, A_te, y_te, weighting=weighting, W_out=W_out, n_strengths=N_STRENGTHS, seed=seed
    )
    return path, time.perf_counter() - start


def run_saga(A_tr, y_tr, A_te, y_te, W_out, weighting, Cs, seed):
    """One warm-started saga fit per strength on the prober's own design (same problems)."""
    design = prober._build_design(A_tr, y_tr, weighting, W_out, None, "global", 1.0, 1.0, seed)
    X_te = (A_te - design.center) * design.unit
    clf = LogisticRegression(
        C=Cs[1], l1_ratio=1.0, solver="saga", tol=1e-4, max_iter=1000, warm_start=True, random_state=seed
    )
    auroc, n_sel, coefs, iters = [], [], [], []
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for C in Cs[1:]:
            clf.set_params(C=C).fit(design.X, y_tr)
            coefs.append(clf.coef_[0].copy())
            iters.append(int(clf.n_iter_[0]))
    seconds = time.perf_counter() - start
    for theta in coefs:
        n_sel.append(int(np.count_nonzero(theta)))
        auroc.append(roc_auc_score(y_te, X_te @ theta))
    n_warn = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return dict(
        seconds=seconds,
        auroc=np.array(auroc),
        n_selected=np.array(n_sel),
        theta=np.array(coefs),
        iters=iters,
        n_not_converged=n_warn,
        design=design,
    )


def run_neurox(A_tr, y_tr, A_te, y_te, seed):
    """NeuroX's elastic-net probe at its tutorials' settings (10 epochs); its test AUROC."""
    import torch

    from sparseprobe_core.peers import PeerUnavailable, neurox_modules

    try:
        linear_probe, _ = neurox_modules()
    except PeerUnavailable as error:
        return dict(error=str(error))
    torch.manual_seed(seed)
    X = np.ascontiguousarray(A_tr, dtype=np.float32)
    labels = np.asarray(y_tr, dtype=np.int64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of 32 through one linear layer: threads only contend
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            start = time.perf_counter()
            probe = linear_probe.train_logistic_regression_probe(
                X, labels, lambda_l1=1e-3, lambda_l2=1e-3, num_epochs=10
            )
            train_s = time.perf_counter() - start
            start = time.perf_counter()
            linear_probe.get_neuron_ordering(probe, {0: 0, 1: 1}, 100)
            order_s = time.perf_counter() - start
        with torch.no_grad():
            logits = probe(torch.from_numpy(np.ascontiguousarray(A_te, dtype=np.float32))).numpy()
            weight = probe.linear.weight.numpy()
    finally:
        torch.set_num_threads(threads)
    w = weight[1] - weight[0]
    return dict(
        seconds=train_s,
        order_seconds=order_s,
        auroc=roc_auc_score(y_te, logits[:, 1] - logits[:, 0]),
        n_large=int(np.sum(np.abs(w) > 1e-2 * np.abs(w).max())),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concept", default="french")
    parser.add_argument("--n-per-class", default="all", help="'all' or an integer")
    parser.add_argument("--weighting", default="contribution", choices=prober.WEIGHTINGS)
    parser.add_argument("--layer", type=int, default=None, help="default: the rank layer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = config.make_config(profile="paper", seed=args.seed)
    n_per_class = None if args.n_per_class == "all" else int(args.n_per_class)
    start = time.perf_counter()
    bridge = models.load_model(cfg.model)
    info = models.model_info(bridge, cfg.model)
    layer = cfg.rank_layer(info.n_layers) if args.layer is None else models.check_layer(info, args.layer)
    load_s = time.perf_counter() - start
    c = concepts.subsample(concepts.load_concept(args.concept), n_per_class, args.seed)
    start = time.perf_counter()
    A, _ = activations.layer_activations(bridge, cfg.model, c.texts, [layer])[layer]
    acts_s = time.perf_counter() - start
    W_out, _ = models.writing_vectors(bridge, layer)
    A = A.astype(np.float64)
    y = c.labels
    split = concepts.make_split(y, seed=args.seed, test_size=0.3)
    A_tr, y_tr, A_te, y_te = A[split.train], y[split.train], A[split.test], y[split.test]
    print(
        f"{args.concept}: {len(y)} examples ({np.bincount(y).tolist()} per class), layer {layer}, "
        f"d_mlp={A.shape[1]}; train {len(y_tr)}, test {len(y_te)}; model load {load_s:.1f}s, "
        f"activations {acts_s:.1f}s"
    )

    path, ours_s = run_ours(A_tr, y_tr, A_te, y_te, W_out, args.weighting, args.seed)
    plain, plain_s = run_ours(A_tr, y_tr, A_te, y_te, W_out, "none", args.seed)
    saga = run_saga(A_tr, y_tr, A_te, y_te, W_out, args.weighting, path.Cs, args.seed)
    nx = run_neurox(A_tr, y_tr, A_te, y_te, args.seed)

    # agreement of saga with liblinear on the same problems (selected sets and AUROC)
    same_support = np.mean([set(np.flatnonzero(t)) == set(s) for t, s in zip(saga["theta"], path.selected[1:])])
    max_auc_gap = float(np.max(np.abs(saga["auroc"] - path.auroc[1:])))

    print(
        f"\n{'method':46s} {'fits':>5s} {'seconds':>8s} {'x ours':>7s} {'best AUROC':>10s} "
        f"{'AUROC@Cmax':>10s} {'neurons@Cmax':>12s}"
    )
    rows = [
        (
            f"ours: prober_path ({args.weighting}, liblinear)",
            N_STRENGTHS - 1,
            ours_s,
            path.auroc.max(),
            path.auroc[-1],
            path.n_selected[-1],
        ),
        (
            "ours: prober_path (none, liblinear)",
            N_STRENGTHS - 1,
            plain_s,
            plain.auroc.max(),
            plain.auroc[-1],
            plain.n_selected[-1],
        ),
        (
            f"sklearn saga per strength ({args.weighting}, warm)",
            N_STRENGTHS - 1,
            saga["seconds"],
            saga["auroc"].max(),
            saga["auroc"][-1],
            saga["n_selected"][-1],
        ),
    ]
    for name, fits, s, best, last, n in rows:
        print(f"{name:46s} {fits:5d} {s:8.2f} {s / ours_s:7.1f} {best:10.4f} {last:10.4f} {n:12d}")
    if "error" in nx:
        print(f"{'NeuroX elastic-net probe':46s} cannot run: {nx['error']}")
    else:
        print(
            f"{'NeuroX elastic-net probe (1 strength, 10 ep.)':46s} {1:5d} {nx['seconds']:8.2f} "
            f"{nx['seconds'] / ours_s:7.1f} {nx['auroc']:10.4f} {nx['auroc']:10.4f} "
            f"{nx['n_large']:12d}"
        )
        print(f"{'  + NeuroX get_neuron_ordering':46s} {'':5s} {nx['order_seconds']:8.2f}")
    print(
        f"\nsaga / ours time ratio {saga['seconds'] / ours_s:.1f}x; NeuroX (one strength) / ours "
        f"(whole path) {nx.get('seconds', float('nan')) / ours_s:.2f}x, i.e. "
        f"{N_STRENGTHS - 1} NeuroX fits would take ~"
        f"{(N_STRENGTHS - 1) * nx.get('seconds', float('nan')) / ours_s:.2f}x ours"
    )
    print(
        f"saga vs liblinear on the same {N_STRENGTHS - 1} problems: identical selected set at "
        f"{same_support:.0%} of strengths, max |AUROC difference| {max_auc_gap:.4f}, saga "
        f"iterations {min(saga['iters'])}-{max(saga['iters'])}, not converged at "
        f"{saga['n_not_converged']} strengths"
    )
    print("NeuroX neurons@Cmax = weights above 1% of the largest (Adam leaves no exact zeros)")


if __name__ == "__main__":
    main()
