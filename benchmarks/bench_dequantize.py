"""De-quantizing an embedded model with its GGUF file parsed once vs once per read, side by side in one run.

`models.dequantized_copy` parses the file once (`models._gguf_parsed_once`); without that context transformers
parses it for each of its reads.

transformers builds a new `gguf.GGUFReader` for the tokenizer, for the config and for the weights, and parsing
the header (a Python loop over every field, Gemma 3's 262k-token vocabulary included) is most of the work. Each
variant writes a copy into its own temporary folder (the repository's `.cache/models/` is not touched); the
script prints both times, their ratio, and whether the two copies are the same bytes (sha256 of every file).
The variants alternate, `--repeats` times, and the minimum of each is kept. One de-quantization runs on one
core: Gemma 3 takes 1-1.5 min, SmolLM2 about half that.

`--imports` instead de-quantizes once (parsed once, as the set-up does) and lists the distributions the
de-quantization imported, and those of them missing from run_all.sh's DEQUANTIZE_NEEDS (exit status 1 if any): a
fresh set-up installs that list first and de-quantizes while the rest installs, so a missing one could be
installed half-way through a de-quantization. Run it after changing the pinned versions.

    .venv/bin/python benchmarks/bench_dequantize.py [--models smollm2-135m,gemma3-270m] [--repeats 1] [--imports]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from packaging.utils import canonicalize_name

from sparseprobe_core import activations, models, paths


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: activations._file_sha256(f) for f in sorted(folder.iterdir())}  # streamed: 1.1 GB files


def _timed_copy(name: str, parsed_once: bool) -> tuple[float, dict[str, str]]:
    """Seconds to de-quantize `name` into a fresh temporary repository root, and the copy's file digests;
    without `parsed_once`, transformers parses the GGUF file for each of its reads."""
    plain = mock.patch.object(models, "_gguf_parsed_once", contextlib.nullcontext)
    with (
        tempfile.TemporaryDirectory() as root,
        mock.patch.object(paths, "ROOT", Path(root)),
        contextlib.nullcontext() if parsed_once else plain,
    ):
        start = time.perf_counter()
        folder = models.dequantized_copy(name)
        return time.perf_counter() - start, _digests(folder)


def bench_model(name: str, repeats: int) -> float:
    """Print one line for `name`; return plain / parsed-once."""
    plain, once = float("inf"), float("inf")
    for _ in range(repeats):
        seconds, plain_files = _timed_copy(name, parsed_once=False)
        plain = min(plain, seconds)
        seconds, once_files = _timed_copy(name, parsed_once=True)
        once = min(once, seconds)
    same = "same bytes" if plain_files == once_files else "DIFFERENT files"
    print(f"{name:14s} GGUF parsed per read {plain:6.1f} s   parsed once {once:6.1f} s   "
          f"{plain / once:4.2f}x   copies: {same}")  # fmt: skip
    return plain / once


def check_imports(names: list[str]) -> int:
    """De-quantize `names` and print the distributions imported; return 1 if run_all.sh's list misses one."""
    for name in names:
        _timed_copy(name, parsed_once=True)
    by_module = importlib.metadata.packages_distributions()
    imported = {canonicalize_name(d) for m in list(sys.modules) for d in by_module.get(m.partition(".")[0], [])}
    script = (paths.ROOT / "run_all.sh").read_text()
    listed = re.search(r'^DEQUANTIZE_NEEDS="([^"]*)"', script, re.M)[1].split()
    no_deps = re.search(r'^NO_DEPS="([^"]*)"', script, re.M)[1].split()
    own = {"sparseprobe"} | {canonicalize_name(spec.partition("==")[0]) for spec in no_deps}
    missing = sorted(imported - own - {canonicalize_name(n) for n in listed})
    print("imported:", " ".join(sorted(imported - own)))
    print("missing from run_all.sh's DEQUANTIZE_NEEDS:", " ".join(missing) or "none")
    return 1 if missing else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(models.EMBEDDED), help="comma-separated embedded models")
    parser.add_argument("--repeats", type=int, default=1, help="alternations of the two variants (minimum kept)")
    parser.add_argument("--imports", action="store_true", help="check run_all.sh's DEQUANTIZE_NEEDS instead")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' per-tensor bar
    if args.imports:
        sys.exit(check_imports(args.models.split(",")))
    print(f"de-quantization, one process, {os.cpu_count()} CPU(s) visible")
    for name in args.models.split(","):
        bench_model(name, args.repeats)


if __name__ == "__main__":
    main()
