"""The library leaves global state alone: importing it changes neither matplotlib's backend nor its style."""

import json
import subprocess
import sys

from sparseprobe_core import paths

SCRIPT = """
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
before = dict(plt.rcParams)
import sparseprobe_core, sparseprobe_core.plotting as p
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert dict(plt.rcParams) == before, "importing sparseprobe_core.plotting changed rcParams"
with p.style():
    styled = plt.rcParams["axes.facecolor"], plt.rcParams["font.size"]
assert dict(plt.rcParams) == before, "the style leaked out of its block"
print(styled)
"""


def test_import_changes_no_global_state():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=paths.ROOT)
    assert result.returncode == 0, result.stderr[-2000:]


def test_stored_notebooks_carry_no_timings_or_progress_bars():
    for nb in [*paths.NOTEBOOKS.rglob("[0-9][0-9]_*.ipynb"), *(paths.ROOT / "tests" / "nbval").rglob("*.ipynb")]:
        cells = json.loads(nb.read_text())["cells"]
        text = json.dumps([c.get("outputs", []) for c in cells])
        for marker in ("it/s]", "s/it]", " s so far", "took ", "ran in ", "done after", "run time"):
            assert marker not in text, f"{nb.name} stores a timing or progress bar ({marker!r}); use progress.say/bar"
