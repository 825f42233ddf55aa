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
    entry = plotting.record_verdict(
        cfg, "03_x", claim="4", verdict="cannot tell", headline="+0.01 [-0.02, 0.03]", layer=7
    )
    assert entry["verdict"] == "cannot tell"
    record = json.loads((cfg.out_dir / "records" / "03_x.json").read_text())
    assert record["verdicts"]["claim4_layer7"]["headline"] == "+0.01 [-0.02, 0.03]"
    with pytest.raises(ValueError, match="use one of holds, does not hold, cannot tell"):
        plotting.record_verdict(cfg, "03_x", claim="4", verdict="wins", headline="")


def test_legend_outside_covers_no_data_and_an_inside_legend_is_found(tmp_path):
    import matplotlib.pyplot as plt
    import numpy as np

    from sparseprobe_core import config, plotting

    x = np.linspace(0, 1, 50)
    fig, ax = plt.subplots()
    ax.plot(x, x, label="rising")
    ax.fill_between(x, 0, 1, alpha=0.2)
    ax.legend(loc="center")
    assert plotting.legends_over_data(fig) == ["legend of panel 1 over panel 1"]
    plt.close(fig)

    cfg = config.make_config(profile="ci", out_dir=str(tmp_path))
    with plotting.style():
        fig, axes = plt.subplots(2, 2, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.plot(x, x**i, **plotting.method_style(plotting.PAPER_METHOD).kw())
            ax.plot(x, 1 - x, **plotting.method_style("f_stat").kw())
            ax.set_title(f"concept {i}")
        legend = plotting.legend_outside(fig, axes)
        assert [t.get_text() for t in legend.get_texts()] == [
            plotting.method_style(m).label for m in (plotting.PAPER_METHOD, "f_stat")
        ]
        assert plotting.legends_over_data(fig) == []
        path = plotting.save_figure(fig, "02_x", cfg, "02_x")
    record = json.loads((cfg.out_dir / "records" / "02_x.json").read_text())
    assert record["figures"]["02_x"]["legend_over_data"] == []
    from PIL import Image

    with Image.open(path) as image:  # the saved image was widened to hold the legend below the panels
        assert image.height > 4.8 * 120


def test_legend_in_an_empty_corner_or_a_spare_panel_is_fine():
    import matplotlib.pyplot as plt
    import numpy as np

    from sparseprobe_core import plotting

    x = np.linspace(0, 1, 50)
    fig, axes = plt.subplots(1, 2)
    axes[0].plot(x, x**4, label="a")
    axes[0].legend(loc="upper left")
    axes[1].axis("off")
    axes[1].legend(*axes[0].get_legend_handles_labels(), loc="center")
    assert plotting.legends_over_data(fig) == []
    plt.close(fig)


def test_no_saved_figure_draws_a_legend_over_data():
    """Every figure of the committed runs was checked when it was saved (plotting.save_figure)."""
    for path in (paths.FIGURES / "MANIFEST.json", paths.ROOT / "tests" / "nbval" / "MANIFEST.json"):
        data = json.loads(path.read_text())
        assert "models" in data, f"{path} predates per-model runs: rerun ./run_all.sh"
        for model, run in data["models"].items():
            for name, info in run["figures"].items():
                assert "legend_over_data" in info, f"{path}: {name} was saved before the check existed; rerun"
                assert info["legend_over_data"] == [], f"{name} ({model}): {info['legend_over_data']}"
