"""Command line: ``sparseprobe rank ...`` (also ``python -m sparseprobe_core``); see ``--help``.

Exit status: 0 success, 1 a data or run-time error (one ``error:`` line saying what to fix), 2 a usage
error (argparse's convention). The plumbing that ``run_all.sh`` calls (execute, check-run, prepare-models, report)
is not listed in the help.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, paths

if TYPE_CHECKING:
    from . import models

METHOD_ALIASES = {"weighted": "sparse_prober_contribution"}
# rankers whose score is only a position in an order; every other ranker's score is its own statistic
_ORDER_ONLY = ("sparse_prober_",)


def _method_names() -> list[str]:
    from .rankers import RANKERS

    # grad_x_act_model needs the model's own concept gradient, which a labelled text file does not give
    return [*METHOD_ALIASES, *(m for m in RANKERS if m != "grad_x_act_model")]


class _MethodChoices:
    """The --method choices of rank, listed only when argparse checks or shows them: importing the rankers (their
    estimators, scipy.stats: about 2 s) is wasted on the plumbing commands that run_all.sh calls five times a run
    (prepare-models then imports no scikit-learn at all; the others still import concepts' splitters)."""

    def __contains__(self, name: object) -> bool:
        return name in _method_names()

    def __iter__(self) -> Iterator[str]:
        return iter(_method_names())


def _check_layer_and_k(info: models.ModelInfo, args: argparse.Namespace) -> int:
    """Check rank's --layer and --k against the model's sizes; return the layer, or raise a one-line error."""
    from . import models

    layer = models.check_layer(info, args.layer)
    if args.k > info.d_mlp:
        raise ValueError(f"--k {args.k} exceeds the layer's {info.d_mlp} neurons; pass --k between 1 and {info.d_mlp}")
    return layer


def _cmd_rank(args: argparse.Namespace) -> None:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from . import activations, concepts, models, rankers, theory

    method = METHOD_ALIASES.get(args.method, args.method)
    concept = concepts.load_concept(args.concept)
    copied = models.copy_sizes(args.model)
    if copied is not None:  # an embedded model's sizes are known before its load (10 s for Gemma 3)
        _check_layer_and_k(copied, args)
    bridge = models.load_model(args.model, device=args.device, dtype=args.dtype)
    info = models.model_info(bridge, args.model)
    layer = _check_layer_and_k(info, args)
    A, M = activations.layer_activations(bridge, args.model, concept.texts, [layer])[layer]
    W_out, b_out = models.writing_vectors(bridge, layer)
    y = concept.labels
    ctx = rankers.RankContext(A=A, y=y, W_out=W_out, b_out=b_out, M=M, seed=args.seed)
    scores = rankers.RANKERS[method](ctx)
    top = rankers.rank(method, ctx)[: args.k]
    w, _ = theory.fit_output_probe(M, y, seed=args.seed)
    parts = theory.contribution_decomposition(A, W_out, w / np.linalg.norm(w), y)
    shift = parts.mean_activation_by_class[1] - parts.mean_activation_by_class[0]
    native = not method.startswith(_ORDER_ONLY)
    rows = [
        {
            "rank": r + 1,
            "neuron": int(i),
            # the neuron's contribution to the class separation of the concept score along the unit
            # output-probe direction d: (E[a_i|1] - E[a_i|0]) * (W_out[i] . d)
            "contribution": float(shift[i] * parts.beta[i]),
            "auroc": float(roc_auc_score(y, A[:, i])),  # the neuron alone; < 0.5: it falls with the concept
            "delta_a": float(shift[i]),
            "writing_norm": float(parts.writing_norm[i]),
            "alignment": float(parts.cos_theta[i]),
            **({"score": float(scores[i])} if native else {}),
        }
        for r, i in enumerate(top)
    ]
    if args.json:
        import json

        out = {"concept": concept.name, "model": args.model, "layer": layer, "method": method, "neurons": rows}
        print(json.dumps(out, indent=1))
        return
    print(
        f"top {args.k} neurons of layer {layer} for concept {concept.name!r} by {method} ({args.model}, {len(y)} texts)"
    )
    print(
        "contribution = class shift of the activation x its writing along the concept direction; "
        "auroc = the neuron alone"
    )
    head = f"{'rank':>4} {'neuron':>6} {'contribution':>12} {'auroc':>6} {'delta_a':>8} {'|W_out|':>8} {'cos':>6}"
    print(head + (f" {'score':>10}" if native else ""))
    for row in rows:
        line = (
            f"{row['rank']:>4} {row['neuron']:>6} {row['contribution']:>12.4g} {row['auroc']:>6.3f} "
            f"{row['delta_a']:>8.3g} {row['writing_norm']:>8.3f} {row['alignment']:>6.2f}"
        )
        print(line + (f" {row['score']:>10.4g}" if native else ""))


def _usable_run_name(name: str) -> bool:
    """A user's concept names its run folder runs/<name>/ and is one item of the notebooks' comma-separated
    `concept` parameter: no comma, no leading - or . or space, and not the ci profile's folder runs/ci/."""
    return bool(name) and "," not in name and name[0] not in "-. " and name == name.strip() and name != "ci"


def _check_concept(file: str) -> None:
    """Validate a user's concept file (what run_all.sh --concept checks first): print its size and warnings."""
    from . import concepts

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        concept = concepts.load_concept(file)
    if not _usable_run_name(concept.name):
        raise ValueError(
            f"{file}: its name {concept.name!r} names the run (runs/<name>/); rename the file "
            "(no comma, not starting with - or ., not ci.csv)"
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    counts = concept.labels.sum(), len(concept.labels) - concept.labels.sum()
    print(f"{concept.name}: {len(concept)} texts ({counts[0]} label 1 / {counts[1]} label 0)", file=sys.stderr)


def _cmd_check_run(args: argparse.Namespace) -> None:
    """Check run_all.sh's options before any notebook runs: the profile, the model's name, the layers (format,
    and range on an embedded model once it has its de-quantized copy), the dtype and the device; then the
    concept file, if given (`_check_concept`). A name that is not an embedded model's is a hub model's (loaded
    online), unless it is a near miss of an embedded one. A bad option is a usage error: one line, exit status 2;
    a bad concept file a data error, exit status 1. Prints on stdout the embedded models whose layers' range
    waits for their copy, for run_all.sh to check again once the copies are made (one process, not three: each
    takes about 3 s, most of it importing scikit-learn)."""
    import difflib

    from . import config, models

    device, dtype = args.device or "cpu", args.dtype or "float32"
    waiting: list[str] = []
    try:
        if args.model.startswith("-"):
            raise ValueError(f"unknown model {args.model!r}; use {' or '.join(models.EMBEDDED)}, or a hub name")
        if args.model and args.model not in models.EMBEDDED and "/" not in args.model:
            close = difflib.get_close_matches(args.model, list(models.EMBEDDED), n=1, cutoff=0.75)
            if close:
                raise ValueError(f"unknown model {args.model!r}; did you mean {close[0]}? (other names: hub models)")
        for model in config.run_plan(args.profile, args.model, []):
            cfg = config.make_config(profile=args.profile, model=model, layers=args.layers, device=device, dtype=dtype)
            sizes = models.copy_sizes(model)
            if sizes is not None:
                cfg.explicit_layers(sizes.n_layers)
            elif args.layers and model in models.EMBEDDED:
                waiting.append(model)
        if args.device:  # the default, cpu, needs no check (nor torch's import time)
            models.check_device(device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.concept:
        _check_concept(args.concept)
    if waiting:
        print(" ".join(waiting))


@contextmanager
def _terminal() -> Iterator:
    """Keep a handle on the terminal while fd 2, which the kernels inherit, goes to a log."""
    term = os.fdopen(os.dup(2), "w", buffering=1)
    try:
        yield term
    finally:
        term.close()


@contextmanager
def _fd2_to(path: Path) -> Iterator[None]:
    """Send fd 2 (the kernels' start-up chatter) to `path`; restore it after."""
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


HEARTBEAT_S = 25.0  # the terminal never stays silent longer than this while a notebook runs


@dataclass
class _Watch:
    """What the run is doing, for the terminal: the notebook and section running and since when, and
    when the terminal last got a line (the heartbeat speaks up after HEARTBEAT_S of silence)."""

    notebook: str = ""
    section: str = ""
    since: float = field(default_factory=time.monotonic)
    heard: float = field(default_factory=time.monotonic)

    def enter(self, notebook: str, section: str) -> None:
        self.notebook, self.section, self.since = notebook, section, time.monotonic()


def _heading(cells: list, before: int) -> str:
    """The latest markdown heading of level 2 or 3 ("## ...", "### ...") above cell `before`, or
    "set-up" above the first one (level 1 is the notebook's title, already on the terminal)."""
    for cell in reversed(cells[:before]):
        if cell.cell_type == "markdown":
            for line in reversed(cell.source.splitlines()):
                if line.startswith(("## ", "### ")):
                    return line.lstrip("#").strip()
    return "set-up"


def _section_engine(watch: _Watch, notebook: str) -> str:
    """Register (under a name, which is returned) a papermill engine that, before each code cell,
    writes the section that is starting to the progress file when it changes."""
    from papermill.engines import NBClientEngine, papermill_engines

    from . import progress

    class SectionEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            start = nb_man.cell_start

            def announce(cell, cell_index=None, **kw):
                if cell.cell_type == "code" and cell_index is not None:
                    section = _heading(nb_man.nb.cells, cell_index)
                    if section != watch.section:
                        watch.enter(notebook, section)
                        progress.say(f"   -- {section}")
                return start(cell, cell_index, **kw)

            nb_man.cell_start = announce
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("sparseprobe-sections", SectionEngine)
    return "sparseprobe-sections"


@contextmanager
def _echo(path: Path, term, watch: _Watch) -> Iterator[None]:
    """Copy what the notebooks write to the progress file (`progress.say`, `progress.bar`, the section
    lines) to the terminal as it arrives; after HEARTBEAT_S without a word, say what is still running."""
    stop = threading.Event()
    path.touch()

    def pump() -> None:
        last = "\n"
        with open(path, encoding="utf-8", errors="replace") as f:
            while True:
                chunk = f.read()
                now = time.monotonic()
                if chunk:
                    term.write(chunk)
                    last = chunk[-1]
                    watch.heard = now
                elif stop.is_set():
                    return
                elif now - watch.heard >= HEARTBEAT_S and watch.notebook:
                    minutes, seconds = divmod(int(now - watch.since), 60)
                    term.write(
                        ("" if last == "\n" else "\n")
                        + f"   ... still running {watch.notebook}: {watch.section} ({minutes}:{seconds:02d})\n"
                    )
                    last, watch.heard = "\n", now
                else:
                    time.sleep(0.2)
                    continue
                term.flush()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class RunFailed(RuntimeError):
    """A notebook failed; `kept` names the files left for the user to read, (what, path) each."""

    def __init__(self, message: str, kept: list[tuple[str, Path]]):
        super().__init__(message)
        self.kept = kept


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when inside it (run_all.sh runs in the repository)."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _cmd_execute(args: argparse.Namespace) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from . import config, manifest, progress

    stage = Path(args.stage).resolve()
    os.environ["SPARSEPROBE_OUT_DIR"] = str(stage / "figures")  # the notebooks' kernels inherit these
    os.environ[progress.ENV] = str(stage / "progress.log")
    params = dict(args.param)
    profile = params.get("profile", "paper")
    plan = config.run_plan(profile, params.pop("model", ""), [Path(nb) for nb in args.notebooks])
    watch = _Watch()
    with _terminal() as term, _echo(stage / "progress.log", term, watch), _fd2_to(stage / "kernels.log"):
        for model, notebooks in plan.items():
            (stage / config.model_slug(model)).mkdir(parents=True, exist_ok=True)
            for nb in notebooks:
                progress.say(f"== {nb.name} on {model} (profile {profile})")
                watch.enter(f"{nb.stem} on {model}", "starting the kernel")
                executed = stage / config.model_slug(model) / nb.name
                start = time.perf_counter()
                try:
                    # "immediate": once the last cell has run, kill the kernel instead of letting it spend
                    # 2.5 s failing to SIGTERM the worker pool's resource tracker (which ignores SIGTERM)
                    papermill.execute_notebook(
                        nb,
                        executed,
                        parameters={**params, "model": model},
                        cwd=str(nb.parent),
                        kernel_name="python3",
                        engine_name=_section_engine(watch, f"{nb.stem} on {model}"),
                        progress_bar=False,
                        shutdown_kernel="immediate",
                    )
                except Exception as err:
                    # keep what shows the failure: the notebook as far as it ran (papermill saves it
                    # cell by cell, with the failing cell's traceback), and the logs; run_all.sh
                    # leaves the staging folder in place
                    kept = [("the notebook as far as it ran", executed)] if executed.exists() else []
                    kept += [("the kernels' log", stage / "kernels.log"), ("the progress log", stage / "progress.log")]
                    kept = [(what, Path(_shown_path(path))) for what, path in kept]
                    if isinstance(err, PapermillExecutionError):
                        reason = str(err.evalue).strip().splitlines()[0] if str(err.evalue).strip() else ""
                        where = f"at cell In [{err.exec_count}]: {err.ename}: {reason}"
                    else:
                        where = f"({type(err).__name__}: {err})".replace("\n", " ")
                    raise RunFailed(f"{nb.name} on {model} failed {where}", kept) from None
                finally:
                    watch.notebook = ""  # no heartbeat between notebooks
                progress.say(f"   {nb.name} on {model} ran in {time.perf_counter() - start:.0f} s")
    runs = {}
    for model, notebooks in plan.items():
        for nb in notebooks:
            manifest.clean_notebook(stage / config.model_slug(model) / nb.name)
        runs[model] = (stage / "figures" / config.model_slug(model) / "records", notebooks)
    manifest.write_json(stage / "figures" / manifest.MANIFEST, manifest.build_manifest(runs))
    _publish(stage, plan, Path(args.notebooks_to), Path(args.figures_to))


def _cmd_report(args: argparse.Namespace) -> None:
    """Build the read-along page, the summary figure and (optionally) the README's findings table."""
    from . import manifest, report

    if not (Path(args.figures) / manifest.MANIFEST).is_file():
        raise ValueError(
            f"{args.figures}/{manifest.MANIFEST} is missing: the page is built from a finished run; run ./run_all.sh"
        )
    start = time.perf_counter()
    print(f"building the read-along page from {args.figures} and {args.notebooks} ...", file=sys.stderr)
    page = report.build(
        Path(args.figures), Path(args.notebooks), Path(args.out), Path(args.readme) if args.readme else None
    )
    print(f"read-along page: {_shown_path(page)} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


def _publish(stage: Path, plan: dict[str, list[Path]], notebooks_to: Path, figures_to: Path) -> None:
    """Move a successful run into place: each model's figures replace `figures_to/<model>/`; the executed
    notebooks of the default model go to `notebooks_to/`, those of other models to `notebooks_to/<model>/`;
    the manifest to `figures_to/MANIFEST.json`. Nothing is moved before every notebook has succeeded."""
    from . import config, manifest

    # Everything is first moved beside its destination (same file system), then each destination is swapped
    # in by a rename, the manifest last: an interruption leaves at most one folder or file of the old run
    # beside the new ones, for a moment, instead of one model's old figures for the length of the copies.
    swaps = []
    figures_to.mkdir(parents=True, exist_ok=True)
    for model in plan:
        slug = config.model_slug(model)
        new_figures = figures_to / f".{slug}.new"
        shutil.rmtree(new_figures, ignore_errors=True)
        new_figures.mkdir()
        for png in (stage / "figures" / slug).glob("*.png"):
            shutil.move(png, new_figures / png.name)
        swaps.append((new_figures, figures_to / slug))  # a figure a notebook no longer makes must not linger
        executed_to = notebooks_to if model == config.DEFAULT_MODEL else notebooks_to / slug
        executed_to.mkdir(parents=True, exist_ok=True)
        for nb in (stage / slug).glob("*.ipynb"):
            shutil.move(nb, executed_to / f".{nb.name}.new")
            swaps.append((executed_to / f".{nb.name}.new", executed_to / nb.name))
    shutil.move(stage / "figures" / manifest.MANIFEST, figures_to / f".{manifest.MANIFEST}.new")
    swaps.append((figures_to / f".{manifest.MANIFEST}.new", figures_to / manifest.MANIFEST))
    for new, dest in swaps:
        if new.is_dir() and dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            new.rename(dest)
            shutil.rmtree(old)
        else:
            new.replace(dest)


def _exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that what runs ends through its `finally` blocks. (In a pool's worker
    the executor catches it and returns it as the task's result; the worker then exits at the pool's shutdown.)"""
    signal.signal(signal.SIGTERM, _exit_once)


def _exit_once(signum: int, _frame: object) -> None:
    """SIGTERM's handler: exit, ignoring any further SIGTERM (a process group's and run_all.sh's, say), which
    would otherwise cut the clean-up short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(128 + signum)


def _cmd_prepare_models(args: argparse.Namespace) -> None:
    """De-quantize the embedded models named (default: all) that have no float32 copy yet, side by side in one
    process each (a de-quantization runs on one core), so that later loads only read the copy, e.g. the test
    command's two workers, which would otherwise each make their own. A hub model's name is skipped: it has
    nothing to de-quantize."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from . import models

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # first: no second entry while the workers are stopped
        for worker in multiprocessing.active_children():
            worker.terminate()
        sys.exit(128 + signum)

    names = [n for n in args.models if n in models.EMBEDDED] if args.models else list(models.EMBEDDED)
    todo = [n for n in names if not models.has_dequantized_copy(n)]
    if not todo:
        return
    print(f"de-quantizing the embedded models, once: {', '.join(todo)}", file=sys.stderr)
    # run_all.sh stops this with SIGTERM when it ends early (an error, Ctrl-C); by default SIGTERM ends Python
    # at once, leaving a de-quantization's temporary folder in .cache/models/ (Gemma 3's holds up to 1.1 GB of
    # copy and 253 MB of GGUF). Exiting through `finally` instead, here and in the workers, lets atomic_write
    # remove it.
    signal.signal(signal.SIGTERM, stop)
    with ProcessPoolExecutor(max_workers=len(todo), initializer=_exit_on_sigterm) as pool:
        for name, folder in zip(todo, pool.map(models.dequantized_copy, todo)):
            print(f"  {name}: {folder.relative_to(paths.ROOT)}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    from .models import DTYPES

    parser = argparse.ArgumentParser(
        prog="sparseprobe",
        description="Rank a layer's MLP neurons for a concept (the companion code of the paper 'Sparse Prober'). "
        "The analysis itself runs as notebooks: ./run_all.sh.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="rank")
    r = sub.add_parser("rank", help="print a layer's top neurons for a concept, with what each writes")
    r.add_argument("--concept", required=True, help="a shipped concept name or a CSV file with columns text,label")
    r.add_argument("--layer", required=True, type=int, help="the layer whose MLP neurons are ranked")
    r.add_argument(
        "--method",
        default="weighted",
        choices=_MethodChoices(),
        metavar="METHOD",
        help="ranking method (default: weighted = sparse_prober_contribution, the paper's); one of: %(choices)s",
    )
    r.add_argument("--k", type=int, default=10, help="how many neurons to print (default: 10)")
    r.add_argument(
        "--model",
        default="smollm2-135m",
        help="an embedded model, smollm2-135m (default) or gemma3-270m, or a TransformerBridge hub name (online)",
    )
    r.add_argument(
        "--device",
        default="cpu",
        help="where the model runs: cpu (default), cuda, cuda:1, ..., or auto (spread over every visible GPU)",
    )
    r.add_argument("--dtype", default="float32", choices=DTYPES, help="the model's precision (default: float32)")
    r.add_argument("--seed", type=int, default=0, help="seed of the rankers' solvers (default: 0)")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=_cmd_rank)
    # plumbing for run_all.sh: added without help=, so `sparseprobe --help` does not list them
    e = sub.add_parser("execute")
    e.add_argument("--stage", required=True)
    e.add_argument("--notebooks-to", required=True)
    e.add_argument("--figures-to", required=True)
    e.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    e.add_argument("notebooks", nargs="+")
    e.set_defaults(func=_cmd_execute)
    rp = sub.add_parser("report")
    rp.add_argument("--figures", default="figures", help="the folder with MANIFEST.json and <model>/*.png")
    rp.add_argument("--notebooks", default="notebooks", help="the executed notebooks (others' models in <model>/)")
    rp.add_argument("--out", default="report", help="the page's folder, replaced whole")
    rp.add_argument("--readme", default="", help="also rewrite this README's findings table")
    rp.set_defaults(func=_cmd_report)
    cr = sub.add_parser("check-run")
    for option in ("--profile", "--model", "--layers", "--device", "--dtype", "--concept"):
        cr.add_argument(option, default="paper" if option == "--profile" else "")
    cr.set_defaults(func=_cmd_check_run)
    pm = sub.add_parser("prepare-models")
    pm.add_argument("models", nargs="*", help="model names (default: every embedded model)")
    pm.set_defaults(func=_cmd_prepare_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; an error prints one `error:` line to stderr and returns 1 (data/run time) or 2 (usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "k", 1) <= 0:
        parser.error(f"--k {args.k} must be a positive number of neurons")
    try:
        args.func(args)
    except (ValueError, RuntimeError, OSError) as err:  # ConceptError, ModelLoadError, PeerUnavailable included
        print(f"error: {err}", file=sys.stderr)
        for what, path in getattr(err, "kept", []):  # RunFailed: where to read what happened
            print(f"  kept {what}: {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
