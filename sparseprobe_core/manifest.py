"""The figure manifest: which notebook, parameters, code and data made each figure, whether it is
current, and whether a rerun reproduces its numbers.

`run_all.sh` writes it after every notebook succeeded. A test recomputes the hashes and fails when a
notebook or core module changed after the figures were made. Hashes are of the code's syntax tree
(docstrings dropped; comments never reach it), so editing prose does not make figures stale.

**Reproduction.** On the same machine a rerun gives the same numbers bit for bit (fixed seeds, the
same float kernels). On another machine, BLAS and SIMD kernels sum in a different order, so floats
differ in their last digits and a fit or a rank near a tie can move slightly: `compare_numbers`
checks a rerun against a reference with the tolerances of ``TOLERANCES``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .concepts import resolve

MANIFEST = "MANIFEST.json"
_VOLATILE = re.compile(r"0x[0-9a-fA-F]{6,}")

# ---------------------------------------------------------------------------------------------
# hashes: what a figure depends on
# ---------------------------------------------------------------------------------------------


def code_hash(source: str) -> str:
    """sha256 of a Python source's syntax tree without docstrings (comments are not in the tree),
    so only edits that can change what the code computes change the hash. Unparseable text (e.g. a
    cell with IPython magics) is hashed as it is."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return hashlib.sha256(source.encode()).hexdigest()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def notebook_source_hash(path: Path) -> str:
    """Hash of a notebook's code cells (their syntax trees; not markdown, not outputs, not papermill's
    injected parameters, which the manifest records separately)."""
    # imported here, not with the module: every notebook kernel that keys a results-cache entry imports this
    # module for `core_hashes`, and nbformat's import (jsonschema's format checkers) costs 2.7 s of it
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [
        code_hash(c.source)
        for c in nb.cells
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


# The command line, this bookkeeping, and how units are scheduled and cached do not change what a figure
# shows (tests/test_parallel.py: the same numbers on 1 or 2 workers and on a cluster; tests/test_results.py:
# a replayed unit returns what it returned). results.FORMAT versions the cache's keys instead.
_NOT_SCIENCE = {"__main__.py", "manifest.py", "parallel.py", "results.py"}


def core_hashes() -> dict[str, str]:
    """Syntax-tree hash of every core module a figure can depend on, by file name."""
    files = sorted((paths.ROOT / "sparseprobe_core").glob("*.py"))
    return {p.name: code_hash(p.read_text()) for p in files if p.name not in _NOT_SCIENCE}


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sparseprobe_core", "notebooks", "data"],
            cwd=paths.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _data_hashes(params: dict) -> dict[str, str]:
    files = params.get("concept_files") or params["concepts"]
    return {
        name: hashlib.sha256(_concept_path(file).read_bytes()).hexdigest()
        for name, file in zip(params["concepts"], files, strict=True)
    }


def _concept_path(file: str) -> Path:
    path = Path(file)
    if path.suffix == ".csv" and not path.is_absolute():
        return paths.ROOT / path
    return resolve(file)


def build_manifest(runs: dict[str, tuple[Path, list[Path]]]) -> dict:
    """Merge the notebooks' records into one manifest with code, data and commit hashes.

    `runs` maps each model to (its records folder, the source notebooks it ran); the manifest keeps
    each model's notebooks and figures apart (``manifest["models"][model]``)."""
    manifest = {"git_commit": _git_commit(), "core": core_hashes(), "models": {}}
    for model, (records_dir, notebooks) in runs.items():
        by_name = {p.stem: p for p in notebooks}
        entry = manifest["models"][model] = {"notebooks": {}, "figures": {}}
        for record_file in sorted(records_dir.glob("*.json")):
            record = json.loads(record_file.read_text())
            name = record["notebook"]
            entry["notebooks"][name] = {
                "source_sha256": notebook_source_hash(by_name[name]),
                "params": record["params"],
                "data_sha256": _data_hashes(record["params"]),
                "numbers": record["numbers"],
                "verdicts": record.get("verdicts", {}),
            }
            for fig, info in record["figures"].items():
                entry["figures"][fig] = {"notebook": name, **info}
    return manifest


def stale_reasons(manifest: dict, notebooks: list[Path]) -> list[str]:
    """What changed since the manifest was written (empty when the figures are current): a core module,
    a notebook's code, or a concept's data; or a notebook that no model ran."""
    reasons = []
    current = core_hashes()
    for name, old in manifest["core"].items():
        if current.get(name) != old:
            reasons.append(f"sparseprobe_core/{name} changed")
    reasons += [f"sparseprobe_core/{n} is new" for n in current.keys() - manifest["core"].keys()]
    by_name = {nb.stem: nb for nb in notebooks}
    ran = {name for runs in manifest["models"].values() for name in runs["notebooks"]}
    reasons += [f"{by_name[name].name} has no figures in the manifest" for name in by_name if name not in ran]
    for model, runs in manifest["models"].items():
        for name, entry in runs["notebooks"].items():
            if name not in by_name:
                reasons.append(f"{name}.ipynb of the manifest ({model}) is not on disk")
            elif notebook_source_hash(by_name[name]) != entry["source_sha256"]:
                reasons.append(f"{name}.ipynb changed")
            else:
                now = _data_hashes(entry["params"])
                reasons += [
                    f"data of concept {c} changed" for c, sha in entry["data_sha256"].items() if now.get(c) != sha
                ]
    return sorted(set(reasons), key=reasons.index)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically."""
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    paths.atomic_write(path, lambda tmp: tmp.write_text(text))


# ---------------------------------------------------------------------------------------------
# reproduction: a rerun's numbers against a reference, within stated tolerances
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How a recorded number may differ between machines.

    kind "abs": |measured - reference| <= atol (+ rtol * |reference|);
    kind "at_most": measured <= bound, whatever the reference (a quantity that is itself an error bound);
    kind "p_value": the same side of alpha and |difference| <= atol + rtol * reference;
    kind "exact": equal (labels, verdict words, layer lists).
    """

    kind: str
    atol: float = 0.0
    rtol: float = 0.0
    bound: float = math.inf
    alpha: float = 0.05

    def check(self, reference, measured) -> bool:
        """Does `measured` reproduce `reference` under this tolerance?"""
        if self.kind == "exact" or isinstance(reference, str | bool) or reference is None:
            return measured == reference
        if isinstance(measured, str | bool) or measured is None:
            return False
        ref, new = float(reference), float(measured)
        if math.isnan(ref) or math.isnan(new):
            return math.isnan(ref) and math.isnan(new)
        if self.kind == "at_most":
            return new <= self.bound
        if self.kind == "p_value" and (ref < self.alpha) != (new < self.alpha):
            return False  # a p-value must keep its side of alpha; its size is then checked like any number
        return abs(new - ref) <= self.atol + self.rtol * abs(ref)


AUROC = Tolerance("abs", atol=2e-3)  # AUROCs, curve areas and their differences
# (pattern on the number's name, tolerance): the first match wins; floats default to AUROC, other
# values must be equal. A fit near a tie can change a selected count by a neuron, a share of cells by
# a borderline cell, and a Wilcoxon p-value by one rank.
TOLERANCES: tuple[tuple[str, Tolerance], ...] = (
    ("identity_max_rel_diff", Tolerance("at_most", bound=1e-4)),  # float32 rounding, checked against its bound
    # p-values: named p_... or ..._p_holm (the Holm-adjusted p of a comparison across concepts). With 14 concepts
    # a Wilcoxon p moves in discrete steps when float noise reorders two near-equal differences, and Holm multiplies
    # that step by up to the number of comparisons, so it grows with p: 0.0157 -> 0.0244 (AMD EPYC to AMD EPYC) for
    # one that stayed significant, 0.3491 -> 0.415 (AMD EPYC to Intel Xeon) for one far from it. Their effects
    # (the mean differences) are checked as AUROCs; a p-value must keep its side of 0.05 and move by at most
    # 0.05 + 25 % of itself
    (r"^p_|_p_holm$", Tolerance("p_value", atol=0.05, rtol=0.25)),
    (r"(win|free)_fraction$", Tolerance("abs", atol=0.15)),
    (r"(^|_)k(_rule)?(_median)?(_|$)", Tolerance("abs", atol=1.0, rtol=0.1)),
)


def tolerance_for(name: str, value) -> Tolerance:
    """The tolerance a recorded number is compared with (``TOLERANCES``, else by its type)."""
    for pattern, tol in TOLERANCES:
        if re.search(pattern, name):
            return tol
    return AUROC if isinstance(value, float) else Tolerance("exact")


def compare_numbers(reference: dict, measured: dict, prefix: str = "") -> list[str]:
    """Every number of `reference` that `measured` does not reproduce, one line each (empty: all do).

    Lists and dicts are compared element by element with the tolerance of their name."""
    problems = []
    for name, ref in reference.items():
        key = f"{prefix}{name}"
        if name not in measured:
            problems.append(f"{key}: missing from the rerun")
            continue
        new = measured[name]
        if isinstance(ref, dict) and isinstance(new, dict):
            problems += compare_numbers(ref, new, prefix=f"{key}.")
        elif isinstance(ref, list) and isinstance(new, list):
            tol = tolerance_for(name, next((v for v in ref if v is not None), 0.0))
            if len(ref) != len(new) or not all(tol.check(a, b) for a, b in zip(ref, new, strict=True)):
                problems.append(f"{key}: {new} vs reference {ref} ({tol.kind} {tol.atol or tol.bound})")
        else:
            tol = tolerance_for(name, ref)
            if not tol.check(ref, new):
                problems.append(f"{key}: {new!r} vs reference {ref!r} ({tol.kind} {tol.atol or tol.bound})")
    problems += [f"{prefix}{n}: not in the reference" for n in measured.keys() - reference.keys()]
    return problems


# ---------------------------------------------------------------------------------------------
# executed notebooks
# ---------------------------------------------------------------------------------------------


def clean_notebook(path: Path) -> None:
    """Strip what differs between runs and machines from an executed notebook: timestamps, durations,
    random cell ids, memory addresses, the repository's absolute path (e.g. in library warnings), and where
    the kernel happened to flush a cell's printed text (consecutive stream outputs are merged, as a reader
    sees them: nbconvert's CoalesceStreamsPreprocessor)."""
    import nbformat
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = nbformat.read(path, as_version=4)
    CoalesceStreamsPreprocessor().preprocess(nb, {})

    def scrub(text: str) -> str:
        return _VOLATILE.sub("0x…", text.replace(str(paths.ROOT), "<repo>"))

    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"  # papermill gives it a random id on every run
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = scrub(out["text"])
            for kind in ("text/plain", "text/html"):
                if kind in out.get("data", {}):
                    out["data"][kind] = scrub(out["data"][kind])
    nbformat.write(nb, path)
