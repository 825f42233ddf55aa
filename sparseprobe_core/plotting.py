"""One place that styles, saves and records figures and the headline numbers notebooks quote.

Each notebook writes `<out_dir>/records/<notebook>.json` with the parameters, figures and numbers
it produced; `run_all.sh` merges these into `figures/MANIFEST.json` with file hashes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from .config import RunConfig  # noqa: E402

sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _records_path(cfg: RunConfig, notebook: str) -> Path:
    return Path(cfg.out_dir) / "records" / f"{notebook}.json"


def _update_record(cfg: RunConfig, notebook: str, key: str, name: str, value) -> None:
    path = _records_path(cfg, notebook)
    record = json.loads(path.read_text()) if path.exists() else {"notebook": notebook, "params": cfg.record(), "figures": {}, "numbers": {}}
    record["params"] = cfg.record()
    record[key][name] = value

    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=True, default=_jsonable) + "\n")

    _atomic_write(path, write)


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
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png", metadata={"Software": None}))
    plt.close(fig)
    _show_inline(path)
    _update_record(cfg, notebook, "figures", name, {"file": path.name, "caption": caption})
    return path


def record_numbers(cfg: RunConfig, notebook: str, **numbers) -> dict:
    """Record headline numbers (rounded to 4 decimals) that a notebook's text quotes; returns them."""
    rounded = {k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v) for k, v in numbers.items()}
    for k, v in rounded.items():
        _update_record(cfg, notebook, "numbers", k, v)
    return rounded
