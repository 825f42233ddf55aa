"""What a long run says while it works, kept out of the stored notebooks.

Under ``./run_all.sh`` every message and progress bar goes to the file named by $SPARSEPROBE_PROGRESS,
which the runner echoes to the terminal as it grows: the terminal shows what is running and how far
it got, while the executed notebooks keep only results (no timings, no bars), so a rerun with the
same numbers leaves them unchanged. Without that variable (an interactive session) messages print
and bars show inline, as usual.

The runner (``sparseprobe_core/__main__.py``, ``execute``) adds its own lines to the same file: the
notebook that starts, the section that starts (the latest "## " or "### " heading above each code
cell, so notebooks need no calls for it), and, after ``HEARTBEAT_S`` without a word, which notebook
and section are still running and for how long; a notebook's silent stretches need no calls either.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

ENV = "SPARSEPROBE_PROGRESS"
T = TypeVar("T")
_handles: dict[str, IO[str]] = {}


def channel() -> IO[str] | None:
    """The open progress file of this run, or None outside ./run_all.sh."""
    path = os.environ.get(ENV)
    if not path:
        return None
    if path not in _handles:
        _handles[path] = open(path, "a", buffering=1, encoding="utf-8")
    return _handles[path]


def say(message: str) -> None:
    """A line for the person watching the run (e.g. a duration): the terminal under run_all.sh, else stdout."""
    out = channel()
    if out is None:
        print(message)
    else:
        out.write(message + "\n")


def bar(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """`iterable` with a progress bar (time so far and an estimate): on the terminal under run_all.sh,
    inline otherwise (where $TQDM_DISABLE still turns it off)."""
    out = channel()
    if out is None:
        from tqdm.auto import tqdm

        with warnings.catch_warnings():
            # without ipywidgets tqdm.auto falls back to a text bar, which is all we need
            warnings.filterwarnings("ignore", message="IProgress not found")
            return iter(tqdm(iterable, desc=desc, total=total))
    from tqdm import tqdm

    # disable=False: run_all.sh sets TQDM_DISABLE for the libraries' own bars, not for this one
    return iter(tqdm(iterable, desc=desc, total=total, file=out, disable=False, mininterval=2.0, ascii=True, ncols=100))
