"""Command line: `python -m sparseprobe_core {rank,execute,manifest,clean-notebooks}`; see --help."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from . import manifest, paths

METHOD_ALIASES = {"weighted": "sparse_prober_contribution"}


def _cmd_rank(args: argparse.Namespace) -> None:
    from . import activations, concepts, models, rankers, theory

    method = METHOD_ALIASES.get(args.method, args.method)
    if method not in rankers.RANKERS:
        raise ValueError(f"unknown method {args.method!r}; use weighted or one of: {', '.join(rankers.RANKERS)}")
    if args.k <= 0:
        raise ValueError(f"--k {args.k} must be a positive number of neurons")
    concept = concepts.load_concept(args.concept)
    model = args.model or models.DEFAULT_MODEL
    bridge = models.load_model(model)
    info = models.model_info(bridge, model)
    layer = models.check_layer(info, args.layer)
    if args.k > info.d_mlp:
        raise ValueError(f"--k {args.k} exceeds the layer's {info.d_mlp} neurons; pass --k between 1 and {info.d_mlp}")
    A, M = activations.layer_activations(bridge, model, concept.texts, [layer])[layer]
    W_out, b_out = models.writing_vectors(bridge, layer)
    ctx = rankers.RankContext(A=A, y=concept.labels, W_out=W_out, b_out=b_out, M=M, seed=args.seed)
    order = rankers.rank(method, ctx)[: args.k]
    scores = rankers.RANKERS[method](ctx)
    w, _ = theory.fit_output_probe(M, concept.labels, seed=args.seed)
    parts = theory.contribution_decomposition(A, W_out, w, concept.labels)
    rows = [{"rank": r + 1, "neuron": int(i), "score": float(scores[i]), "writing_norm": float(parts.writing_norm[i]),
             "alignment": float(parts.cos_theta[i])} for r, i in enumerate(order)]
    if args.json:
        print(json.dumps({"concept": concept.name, "model": model, "layer": layer, "method": method, "neurons": rows}, indent=1))
        return
    print(f"top {args.k} neurons of layer {layer} for concept {concept.name!r} by {method} ({model})")
    print(f"{'rank':>4} {'neuron':>6} {'score':>10} {'|W_out|':>8} {'cos':>6}")
    for row in rows:
        print(f"{row['rank']:>4} {row['neuron']:>6} {row['score']:>10.4g} {row['writing_norm']:>8.3f} {row['alignment']:>6.2f}")


def _cmd_manifest(args: argparse.Namespace) -> None:
    notebooks = sorted(Path(p) for p in args.notebooks)
    data = manifest.build_manifest(Path(args.records), notebooks)
    out = Path(args.out)
    manifest.write_json(out, data)
    print(f"wrote {out.relative_to(paths.ROOT) if out.is_relative_to(paths.ROOT) else out}: {len(data['figures'])} figures")


@contextmanager
def _kernel_stderr_to(path: Path):
    """Send fd 2, which the kernels inherit, to `path` (their start-up chatter); restore it after."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _cmd_execute(args: argparse.Namespace) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    stage = Path(args.stage).resolve()
    os.environ["SPARSEPROBE_OUT_DIR"] = str(stage / "figures")  # the notebooks' kernels inherit it
    params = dict(args.param)
    for nb in map(Path, args.notebooks):
        print(f"== {nb.name} (profile {params.get('profile', 'paper')})", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            with _kernel_stderr_to(stage / "kernels.log"):
                # "immediate": once the last cell has run, kill the kernel instead of letting it spend
                # 2.5 s failing to SIGTERM the worker pool's resource tracker (which ignores SIGTERM)
                papermill.execute_notebook(nb, stage / nb.name, parameters=params, cwd=str(nb.parent),
                                           kernel_name="python3", progress_bar=False, shutdown_kernel="immediate")
        except PapermillExecutionError as err:
            reason = str(err.evalue).strip().splitlines()[0] if str(err.evalue).strip() else ""
            raise RuntimeError(f"{nb.name} failed at cell In [{err.exec_count}]: {err.ename}: {reason}") from None
        print(f"   {nb.name} ran in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    executed = [stage / Path(nb).name for nb in args.notebooks]
    for nb in executed:
        manifest.clean_notebook(nb)
    _cmd_manifest(argparse.Namespace(records=stage / "figures" / "records", out=stage / "figures" / "MANIFEST.json",
                                     notebooks=args.notebooks))


def _cmd_clean(args: argparse.Namespace) -> None:
    for nb in args.notebooks:
        manifest.clean_notebook(Path(nb))


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors print one line to stderr and return a non-zero code."""
    parser = argparse.ArgumentParser(prog="python -m sparseprobe_core")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rank", help="print a layer's top neurons for a concept")
    r.add_argument("--concept", required=True, help="a shipped concept name or a CSV with columns text,label")
    r.add_argument("--layer", required=True, type=int)
    r.add_argument("--method", default="weighted", help="weighted (= sparse_prober_contribution) or any ranker name")
    r.add_argument("--k", type=int, default=10, help="how many neurons to print")
    # resolved in _cmd_rank, so the other commands never import torch and TransformerLens
    r.add_argument("--model", default=None, help="an embedded model, smollm2-135m (default) or gemma3-270m, "
                   "or a TransformerBridge hub name (needs internet)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=_cmd_rank)
    e = sub.add_parser("execute", help="run notebooks in order with papermill, strip them, write their figure manifest")
    e.add_argument("--stage", required=True, help="folder for the executed notebooks; figures go to STAGE/figures")
    e.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a notebook parameter (a string), as papermill's -p")
    e.add_argument("notebooks", nargs="+")
    e.set_defaults(func=_cmd_execute)
    m = sub.add_parser("manifest", help="merge notebook records into a figure manifest")
    m.add_argument("--records", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("notebooks", nargs="+")
    m.set_defaults(func=_cmd_manifest)
    c = sub.add_parser("clean-notebooks", help="strip timestamps and addresses from executed notebooks")
    c.add_argument("notebooks", nargs="+")
    c.set_defaults(func=_cmd_clean)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, RuntimeError, OSError) as err:  # ConceptError and ModelLoadError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
