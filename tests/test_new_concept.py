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
    figures_before = {str(p): p.stat().st_mtime_ns for p in paths.FIGURES.rglob("*")}
    try:
        result = subprocess.run(
            ["bash", "run_all.sh", "--concept", str(concept), "--profile", "ci", "--model", "smollm2-135m"],
            cwd=paths.ROOT,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        notebooks = sorted(p.name for p in dest.glob("*.ipynb"))
        assert notebooks == sorted(p.name for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
        manifest = json.loads((dest / "figures" / "MANIFEST.json").read_text())
        runs = manifest["models"]["smollm2-135m"]
        for entry in runs["notebooks"].values():
            # shown by its name; the data analysed is the copy kept beside the results
            assert list(entry["data_sha256"]) == ["tiny_french"] and entry["params"]["concepts"] == ["tiny_french"]
            assert entry["params"]["concept_files"] == ["runs/tiny_french/tiny_french.csv"]
        assert (dest / "tiny_french.csv").read_bytes() == concept.read_bytes()
        assert runs["figures"] and all(
            (dest / "figures" / "smollm2-135m" / f["file"]).is_file() for f in runs["figures"].values()
        )
        for nb in notebooks:
            executed = nbformat.read(dest / nb, as_version=4)
            outputs = [o for c in executed.cells for o in c.get("outputs", [])]
            assert not [o for o in outputs if o.get("output_type") == "error"]
            text = (dest / nb).read_text()
            assert str(tmp_path) not in text and str(paths.ROOT) not in text, f"{nb} shows a personal path"
            assert "Mean of empty slice" not in text and "RuntimeWarning" not in text, f"{nb} shows a RuntimeWarning"
        assert {str(p): p.stat().st_mtime_ns for p in paths.FIGURES.rglob("*")} == figures_before
    finally:
        shutil.rmtree(dest, ignore_errors=True)
