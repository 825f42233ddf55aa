"""The new-concept path: `./run_all.sh --concept FILE --profile ci` runs all four notebooks on a
user's file into runs/<concept>/ and leaves the paper's figures/ alone."""

import json
import shutil
import subprocess

import nbformat
import pytest

from sparseprobe_core import paths


@pytest.mark.model
def test_run_all_on_a_new_concept(tmp_path):
    concept = tmp_path / "tiny_french.csv"
    shutil.copy(paths.ROOT / "tests" / "data" / "tiny_concept.csv", concept)
    dest = paths.ROOT / "runs" / "tiny_french"
    shutil.rmtree(dest, ignore_errors=True)
    figures_before = {p.name: p.stat().st_mtime_ns for p in paths.FIGURES.glob("*")}
    try:
        result = subprocess.run(["bash", "run_all.sh", "--concept", str(concept), "--profile", "ci"],
                                cwd=paths.ROOT, capture_output=True, text=True, timeout=1500)
        assert result.returncode == 0, result.stderr[-3000:]
        notebooks = sorted(p.name for p in dest.glob("*.ipynb"))
        assert notebooks == sorted(p.name for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
        manifest = json.loads((dest / "figures" / "MANIFEST.json").read_text())
        for entry in manifest["notebooks"].values():
            assert list(entry["data_sha256"]) == [str(concept)] and entry["params"]["concepts"] == [str(concept)]
        assert manifest["figures"] and all((dest / "figures" / f["file"]).is_file() for f in manifest["figures"].values())
        for nb in notebooks:
            executed = nbformat.read(dest / nb, as_version=4)
            errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
            assert not errors
        assert {p.name: p.stat().st_mtime_ns for p in paths.FIGURES.glob("*")} == figures_before
    finally:
        shutil.rmtree(dest, ignore_errors=True)
