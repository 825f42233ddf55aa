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
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from . import paths
from .config import RunConfig


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
        else {"notebook": notebook, "params": cfg.record(), "figures": {}, "numbers": {}}
    )
    record["params"] = cfg.record()
    record[key].update(values)
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


def save_figure(fig: plt.Figure, name: str, cfg: RunConfig, notebook: str, caption: str = "") -> Path:
    """Write `fig` to `<out_dir>/<name>.png` atomically, record it for the manifest, show that file
    inline when running in a notebook (so the executed notebook displays exactly the saved figure),
    and close it."""
    path = Path(cfg.out_dir) / f"{name}.png"
    with style():
        fig.tight_layout()
        paths.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png", metadata={"Software": None}))
    plt.close(fig)
    _show_inline(path)
    _update_record(cfg, notebook, "figures", {name: {"file": path.name, "caption": caption}})
    return path


def record_numbers(cfg: RunConfig, notebook: str, **numbers) -> dict:
    """Record headline numbers (floats to 4 significant digits, so small quantities such as a float32
    rounding error keep theirs) that a notebook's text quotes; returns them."""
    rounded = {k: (float(f"{v:.4g}") if isinstance(v, float | np.floating) else v) for k, v in numbers.items()}
    _update_record(cfg, notebook, "numbers", rounded)
    return rounded
