"""The figure manifest: which notebook, parameters, code and data made each figure, and is it current.

`run_all.sh` calls `python -m sparseprobe_core manifest` after every notebook succeeded. A test
recomputes the hashes and fails when a notebook or core file changed after the figures were made.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import nbformat

from . import paths
from .concepts import resolve

MANIFEST = "MANIFEST.json"
_VOLATILE = re.compile(r"0x[0-9a-fA-F]{6,}")


def notebook_source_hash(path: Path) -> str:
    """sha256 of a notebook's cell sources (markdown and code, not outputs, not papermill's injected cell)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c.source for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


# The command line and this bookkeeping do not change what a figure shows.
_NOT_SCIENCE = {"__main__.py", "manifest.py"}


def core_hashes() -> dict[str, str]:
    """sha256 of every core module a figure can depend on, by file name."""
    files = sorted((paths.ROOT / "sparseprobe_core").glob("*.py"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.name not in _NOT_SCIENCE}


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sparseprobe_core", "notebooks", "data"],
                               cwd=paths.ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_manifest(records_dir: Path, notebooks: list[Path]) -> dict:
    """Merge the notebooks' records into one manifest with code, data and commit hashes."""
    manifest = {"git_commit": _git_commit(), "core": core_hashes(), "notebooks": {}, "figures": {}}
    by_name = {p.stem: p for p in notebooks}
    for record_file in sorted(records_dir.glob("*.json")):
        record = json.loads(record_file.read_text())
        name = record["notebook"]
        data = {c: hashlib.sha256(resolve(c).read_bytes()).hexdigest() for c in record["params"]["concepts"]}
        manifest["notebooks"][name] = {
            "source_sha256": notebook_source_hash(by_name[name]),
            "params": record["params"],
            "data_sha256": data,
            "numbers": record["numbers"],
        }
        for fig, info in record["figures"].items():
            manifest["figures"][fig] = {"notebook": name, "model": record["params"]["model"], **info}
    return manifest


def stale_reasons(manifest: dict, notebooks: list[Path]) -> list[str]:
    """What changed since the manifest was written (empty when the figures are current)."""
    reasons = []
    for name, old in manifest["core"].items():
        new = core_hashes().get(name)
        if new != old:
            reasons.append(f"sparseprobe_core/{name} changed")
    reasons += [f"sparseprobe_core/{n} is new" for n in core_hashes().keys() - manifest["core"].keys()]
    for nb in notebooks:
        entry = manifest["notebooks"].get(nb.stem)
        if entry is None:
            reasons.append(f"{nb.name} has no figures in the manifest")
        elif notebook_source_hash(nb) != entry["source_sha256"]:
            reasons.append(f"{nb.name} changed")
        else:
            for concept, sha in entry["data_sha256"].items():
                if hashlib.sha256(resolve(concept).read_bytes()).hexdigest() != sha:
                    reasons.append(f"data of concept {concept} changed")
    return reasons


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file, then rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def clean_notebook(path: Path) -> None:
    """Strip what differs between runs and machines from an executed notebook: timestamps, durations,
    random cell ids, memory addresses, and the repository's absolute path (e.g. in library warnings)."""
    nb = nbformat.read(path, as_version=4)

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
