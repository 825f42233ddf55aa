"""Run by run_tests.sh after nbval re-executed the ci notebooks: that run's headline numbers must
reproduce the ones recorded when tests/nbval/ was generated, within the tolerances stated in
sparseprobe_core/manifest.py (TOLERANCES). The references may come from another machine, whose float
kernels differ in the last digits, so nothing here compares floats for equality."""

import json
import os
from pathlib import Path

import pytest

from sparseprobe_core import config, manifest

HERE = Path(__file__).parent


def test_rerun_reproduces_the_reference_numbers():
    out = os.environ.get("SPARSEPROBE_NBVAL_OUT")
    if not out:
        pytest.fail("SPARSEPROBE_NBVAL_OUT is not set: run this through ./run_tests.sh")
    reference = json.loads((HERE / manifest.MANIFEST).read_text())["models"]
    problems = []
    for model, runs in reference.items():
        records_dir = Path(out) / config.model_slug(model) / "records"
        records = {p.stem: json.loads(p.read_text()) for p in records_dir.glob("*.json")}
        assert set(records) == set(runs["notebooks"]), f"{model}: the rerun made records for {sorted(records)}"
        for name, ref in runs["notebooks"].items():
            problems += [f"{model} {name}: {p}" for p in manifest.compare_numbers(ref["numbers"], records[name]["numbers"])]
            # a verdict is a word: it must be the same on any machine (its headline's numbers are checked above)
            verdicts = {k: v["verdict"] for k, v in records[name].get("verdicts", {}).items()}
            problems += [
                f"{model} {name}: verdict {k} is {verdicts.get(k)!r}, reference {v['verdict']!r}"
                for k, v in ref.get("verdicts", {}).items()
                if verdicts.get(k) != v["verdict"]
            ]
    assert not problems, "the ci rerun does not reproduce the reference:\n" + "\n".join(problems)
