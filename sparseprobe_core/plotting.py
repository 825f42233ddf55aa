"""One place that styles, saves and records figures and the headline numbers notebooks quote.

Each notebook writes `<out_dir>/records/<notebook>.json` with the parameters, figures and numbers
it produced; `run_all.sh` merges these into `figures/MANIFEST.json` with file hashes.

Importing this module changes no global state (no backend switch, no seaborn theme): the project's
style applies only inside ``with style():``, so a user's own Jupyter session keeps its settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.legend import Legend
from matplotlib.transforms import Bbox

from . import paths
from .config import RunConfig

# One look per method in every figure (colour-blind-safe Okabe-Ito colours, then line styles), so a
# reader can follow a method across notebooks. The paper's method is always the thick black line.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#999999",
}
PAPER_METHOD = "sparse_prober_contribution"


@dataclass(frozen=True)
class MethodStyle:
    """How a ranking method is drawn and named in every figure and table."""

    label: str
    color: str
    ls: str = "-"
    lw: float = 1.4

    def kw(self, emphasis: bool = True) -> dict:
        """Matplotlib keyword arguments; without emphasis the method is drawn as thin grey context."""
        if emphasis:
            return dict(color=self.color, ls=self.ls, lw=self.lw, label=self.label)
        return dict(color=OKABE_ITO["grey"], ls=self.ls, lw=0.7, alpha=0.6, label=self.label)


_C = OKABE_ITO
METHOD_STYLES: dict[str, MethodStyle] = {
    PAPER_METHOD: MethodStyle("sparse prober, contribution-weighted (the paper's)", _C["black"], "-", 2.6),
    "sparse_prober_contribution_coefw": MethodStyle("sparse prober, |coef x weight| at k", _C["black"], "--", 1.6),
    "sparse_prober_none": MethodStyle("sparse prober, unweighted (plain L1 path)", _C["blue"], "-", 1.6),
    "sparse_prober_norm": MethodStyle("sparse prober, norm-weighted", _C["blue"], "--"),
    "sparse_prober_adaptive": MethodStyle("sparse prober, adaptive lasso", _C["blue"], ":"),
    "f_stat": MethodStyle("F statistic (Gurnee et al.)", _C["vermillion"], "-", 1.6),
    "mean_diff": MethodStyle("class-mean difference (Gurnee et al.)", _C["orange"], "-", 1.6),
    "probeless": MethodStyle("probeless (Antverg & Belinkov)", _C["orange"], "--"),
    "l1_probe": MethodStyle("L1 probe, z-scored", _C["sky"], "-", 1.6),
    "dense_l2": MethodStyle("|w| of a dense L2 probe", _C["green"], "-", 1.6),
    # not a ranking: the ceiling a sparse probe is compared with (notebook 02)
    "dense_probe_all_neurons": MethodStyle("dense L2 probe, all neurons (ceiling)", _C["grey"], "--", 1.4),
    "elastic_net": MethodStyle("elastic-net probe (NeuroX rule)", _C["green"], "--"),
    "grad_x_act_probe": MethodStyle("gradient x activation (probe)", _C["purple"], "-", 1.6),
    "grad_x_act_model": MethodStyle("gradient x activation (model)", _C["purple"], ":"),
    "act_magnitude": MethodStyle("activation magnitude", _C["yellow"], "-", 1.6),
    "direct_effect": MethodStyle("direct effect |a| |W_out|", _C["yellow"], "--"),
    "neurox_probeless": MethodStyle("NeuroX probeless", _C["orange"], ":"),
    "neurox_linear_probe": MethodStyle("NeuroX linear probe", _C["green"], ":"),
    "tl_sparse_probe": MethodStyle("TransformerLens sparse probe", _C["vermillion"], ":"),
    "random": MethodStyle("random", _C["grey"], ":", 1.4),
    # neuron selectors (selection.py): the paper's noise rule thick and black; every look stays unique
    "noise_rule": MethodStyle("noise rule, t >= sqrt(2 ln d) (the paper's)", _C["black"], "-.", 2.6),
    "noise_rule_bh": MethodStyle("noise rule, BH threshold (variant)", _C["black"], ":", 1.8),
    "knockoff+": MethodStyle("knockoff+ (FDR <= q)", _C["sky"], "--", 1.6),
    "knockoff": MethodStyle("knockoff (modified FDR <= q)", _C["sky"], ":", 1.6),
    "stability": MethodStyle("stability selection (E[V] <= 1)", _C["green"], "-.", 1.6),
    "cv_1se": MethodStyle("CV 1-SE (no error control)", _C["vermillion"], "--", 1.6),
    "cv_best": MethodStyle("CV best (no error control)", _C["vermillion"], "-."),
}


def method_style(name: str) -> MethodStyle:
    """The style of a method (a grey dash-dot line with its own name for one this table does not know)."""
    return METHOD_STYLES.get(name, MethodStyle(name, _C["grey"], "-."))


@contextmanager
def style() -> Iterator[None]:
    """The project's figure style (seaborn "whitegrid", notebook context, colour-blind palette),
    applied to the figures created and saved inside the block only."""
    import seaborn as sns

    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook")}
    rc["axes.prop_cycle"] = mpl.cycler(color=sns.color_palette("colorblind"))
    with mpl.rc_context(rc):
        yield


def _records_path(cfg: RunConfig, notebook: str) -> Path:
    return Path(cfg.out_dir) / "records" / f"{notebook}.json"


def _update_record(cfg: RunConfig, notebook: str, key: str, values: dict) -> None:
    path = _records_path(cfg, notebook)
    record = (
        json.loads(path.read_text())
        if path.exists()
        else {"notebook": notebook, "params": cfg.record(), "figures": {}, "numbers": {}, "verdicts": {}}
    )
    record["params"] = cfg.record()
    record.setdefault(key, {}).update(values)
    text = json.dumps(record, indent=1, sort_keys=True, default=_jsonable) + "\n"
    paths.atomic_write(path, lambda tmp: tmp.write_text(text))


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _show_inline(path: Path) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(Image(filename=str(path)))


def legend_outside(fig: plt.Figure, axes, ncol: int | None = None) -> Legend:
    """One legend for the whole figure, centred below its panels, so that it covers no data.

    Entries are collected from every axes in `axes` (each label once, in order of appearance);
    `save_figure` widens the saved image to include it."""
    handles: dict[str, object] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    ncol = ncol or min(len(handles), 3)
    return fig.legend(
        list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False
    )


def _covers(box: Bbox, ax: plt.Axes) -> bool:
    """Does drawn data of `ax` (a line, band, marker, bar, heatmap cell or image) reach into `box`
    (display coordinates)? The axes' background, grid and text are not data."""

    def points_in(xy: np.ndarray) -> bool:
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        inside = (xy[:, 0] >= box.x0) & (xy[:, 0] <= box.x1) & (xy[:, 1] >= box.y0) & (xy[:, 1] <= box.y1)
        return bool(inside.any())

    for line in ax.get_lines():
        if not line.get_visible() or not len(line.get_xydata()):
            continue
        path = line.get_transform().transform_path(line.get_path())
        if line.get_linestyle() not in ("None", "", " ") and path.intersects_bbox(box, filled=False):
            return True
        if line.get_marker() not in (None, "None", "", " ") and points_in(path.vertices):
            return True
    for coll in ax.collections:
        if not coll.get_visible():
            continue
        if isinstance(coll, PathCollection):  # scatter: markers at the offsets
            if points_in(coll.get_offset_transform().transform(coll.get_offsets())):
                return True
        elif any(coll.get_transform().transform_path(p).intersects_bbox(box) for p in coll.get_paths()):
            return True
    for patch in ax.patches:
        if patch.get_visible() and patch.get_transform().transform_path(patch.get_path()).intersects_bbox(box):
            return True
    return any(image.get_visible() and image.get_window_extent().overlaps(box) for image in ax.images)


def legends_over_data(fig: plt.Figure) -> list[str]:
    """Every legend of `fig` that covers drawn data of a panel, as "legend of <owner> over <panel>";
    empty when none does (a legend in an empty panel or outside the panels covers nothing)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    def name(i: int, ax: plt.Axes) -> str:
        return repr(ax.get_title()) if ax.get_title() else f"panel {i + 1}"

    legends = [(name(i, ax), ax.get_legend()) for i, ax in enumerate(fig.axes)] + [("figure", g) for g in fig.legends]
    problems = []
    for owner, legend in legends:
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        for i, ax in enumerate(fig.axes):
            region = Bbox.intersection(box, ax.get_window_extent(renderer))  # data is clipped to its axes
            if region is not None and region.width > 0 and region.height > 0 and _covers(region, ax):
                problems.append(f"legend of {owner} over {name(i, ax)}")
    return problems


def save_figure(fig: plt.Figure, name: str, cfg: RunConfig, notebook: str, caption: str = "") -> Path:
    """Write `fig` to `<out_dir>/<name>.png` atomically, record it for the manifest, show that file
    inline when running in a notebook (so the executed notebook displays exactly the saved figure),
    and close it. The record lists every legend that covers data (`legends_over_data`; a test
    requires none)."""
    path = Path(cfg.out_dir) / f"{name}.png"
    with style():
        fig.tight_layout()
        # a figure legend (legend_outside) hangs below the panels: widen the saved image to hold it
        tight = {"bbox_inches": "tight", "pad_inches": 0.1} if fig.legends else {}
        covered = legends_over_data(fig)
        paths.atomic_write(
            path, lambda tmp: fig.savefig(tmp, dpi=120, format="png", metadata={"Software": None}, **tight)
        )
    plt.close(fig)
    _show_inline(path)
    record = {"file": path.name, "caption": caption, "legend_over_data": covered}
    _update_record(cfg, notebook, "figures", {name: record})
    return path


VERDICTS = ("holds", "does not hold", "cannot tell")


def record_verdict(
    cfg: RunConfig,
    notebook: str,
    claim: str,
    verdict: str,
    headline: str,
    layer: int | None = None,
    figure: str | None = None,
) -> dict:
    """Record a claim's verdict on this run's model (one of VERDICTS) with a one-line headline of the
    numbers behind it; the cross-model summary, the read-along page and the README table are built
    from these. `claim`: "1".."5", or a part of one such as "3-detection" (grouped under claim 3);
    `layer`: a verdict that is made per layer; `figure`: the saved figure (its name) that shows it,
    which the read-along page puts beside the verdict."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r}; use one of {', '.join(VERDICTS)}")
    key = f"claim{claim}" + (f"_layer{layer}" if layer is not None else "")
    entry = {"claim": str(claim), "layer": layer, "verdict": verdict, "headline": headline}
    if figure is not None:
        entry["figure"] = figure
    _update_record(cfg, notebook, "verdicts", {key: entry})
    return entry


def record_numbers(cfg: RunConfig, notebook: str, **numbers) -> dict:
    """Record headline numbers (floats to 4 significant digits, so small quantities such as a float32
    rounding error keep theirs) that a notebook's text quotes; returns them."""
    rounded = {k: (float(f"{v:.4g}") if isinstance(v, float | np.floating) else v) for k, v in numbers.items()}
    _update_record(cfg, notebook, "numbers", rounded)
    return rounded
