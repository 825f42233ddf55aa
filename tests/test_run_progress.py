"""A run the user can follow (the `execute` plumbing of run_all.sh, on tiny notebooks, no model): the terminal
names each notebook and section as it starts, a silent stretch gets a heartbeat, and a failing notebook keeps
its evidence (the notebook as far as it ran, the kernels' and progress logs) and prints where it is."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sparseprobe_core import __main__ as cli
from sparseprobe_core import paths


def _write(path: Path, cells: list) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_failing_notebook_keeps_its_evidence_and_sections_are_named(tmp_path):
    params = new_code_cell("profile = 'ci'\nmodel = ''", metadata={"tags": ["parameters"]})
    ok = _write(
        tmp_path / "01_ok.ipynb",
        [new_markdown_cell("# Title"), params, new_markdown_cell("## First part"), new_code_cell("print(1)")],
    )
    bad = _write(
        tmp_path / "02_bad.ipynb",
        [params, new_markdown_cell("## The failing part"), new_code_cell("raise ValueError('planted failure')")],
    )
    stage = tmp_path / "stage"
    stage.mkdir()
    where = ["--stage", stage, "--notebooks-to", tmp_path / "nb", "--figures-to", tmp_path / "fig"]
    run_params = ["-p", "profile", "ci", "-p", "model", "tiny-model"]
    result = subprocess.run(
        [sys.executable, "-m", "sparseprobe_core", "execute", *map(str, where), *run_params, str(ok), str(bad)],
        capture_output=True,
        text=True,
        cwd=paths.ROOT,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    err = result.stderr
    # the terminal followed the run: notebook, then each section as it started
    for line in (
        "== 01_ok.ipynb on tiny-model",
        "-- First part",
        "== 02_bad.ipynb on tiny-model",
        "-- The failing part",
    ):
        assert line in err, err
    assert err.index("-- First part") < err.index("== 02_bad.ipynb")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: 02_bad.ipynb on tiny-model failed at cell In [3]: ValueError: planted failure"], err
    kept = dict(line.strip().removeprefix("kept ").split(": ", 1) for line in err.splitlines() if "  kept " in line)
    executed = Path(kept["the notebook as far as it ran"])
    assert executed == stage / "tiny-model" / "02_bad.ipynb" and "planted failure" in executed.read_text()
    assert Path(kept["the kernels' log"]).is_file()
    assert "-- The failing part" in Path(kept["the progress log"]).read_text()
    assert not (tmp_path / "fig").exists() and not (tmp_path / "nb").exists()  # nothing published


def test_heartbeat_after_silence(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "HEARTBEAT_S", 0.3)
    term = io.StringIO()
    watch = cli._Watch()
    log = tmp_path / "progress.log"
    with cli._echo(log, term, watch):
        watch.enter("02_probe_training on smollm2-135m", "2. Layer sweep")
        with open(log, "a") as f:
            f.write("fits:  50%|#####     | 1/2 [00:01<00:01]")  # a bar in the middle of its line
        time.sleep(1.2)
    text = term.getvalue()
    assert "fits:  50%" in text
    assert "\n   ... still running 02_probe_training on smollm2-135m: 2. Layer sweep (0:0" in text
    assert text.count("still running") >= 2  # it keeps speaking while the silence lasts


def test_run_all_keeps_the_stage_only_when_it_fails():
    script = (paths.ROOT / "run_all.sh").read_text()
    assert """trap 'if [ "$succeeded" = 1 ]; then rm -rf "$stage"; else restore_concept; fi' EXIT""" in script
    assert script.index("succeeded=1") > script.index("-m sparseprobe_core execute")


def test_run_all_output_ends_when_it_exits():
    """The heartbeat's sleep holds no copy of run_all.sh's output, so a reader of the pipe (`| tee log`, a
    test's captured output) sees its end when the script exits, not when an orphaned 30 s sleep does."""
    pipe = subprocess.PIPE  # its few lines fit in the pipe's buffer, so it can exit before they are read
    proc = subprocess.Popen(["bash", "run_all.sh", "--setup-only"], cwd=paths.ROOT, stdout=pipe, stderr=pipe, text=True)
    proc.wait(timeout=120)
    exited = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert time.monotonic() - exited < 5, "the pipe stayed open after run_all.sh exited (the heartbeat's sleep)"
