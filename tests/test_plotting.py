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


def test_every_ranker_and_peer_has_its_own_style():
    from sparseprobe_core import peers, plotting, rankers

    names = [*rankers.RANKERS, *peers.PEERS]
    assert set(names) <= set(plotting.METHOD_STYLES)
    looks = [(s.color, s.ls) for n, s in plotting.METHOD_STYLES.items() if n != "random"]
    assert len(set(looks)) == len(looks), "two methods share a colour and line style"
    assert plotting.method_style(plotting.PAPER_METHOD).color == "#000000"


def test_a_verdict_must_be_one_of_three_words(tmp_path):
    import pytest

    from sparseprobe_core import config, plotting

    cfg = config.make_config(profile="ci", out_dir=str(tmp_path))
    entry = plotting.record_verdict(cfg, "03_x", claim="4", verdict="cannot tell", headline="+0.01 [-0.02, 0.03]", layer=7)
    assert entry["verdict"] == "cannot tell"
    record = json.loads((cfg.out_dir / "records" / "03_x.json").read_text())
    assert record["verdicts"]["claim4_layer7"]["headline"] == "+0.01 [-0.02, 0.03]"
    with pytest.raises(ValueError, match="use one of holds, does not hold, cannot tell"):
        plotting.record_verdict(cfg, "03_x", claim="4", verdict="wins", headline="")
