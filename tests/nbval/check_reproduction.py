"""Run by run_tests.sh after nbval re-executed the ci notebooks: that run's headline numbers must
reproduce the ones recorded when tests/nbval/ was generated, within the tolerances stated in
sparseprobe_core/manifest.py (TOLERANCES). The references may come from another machine, whose float
kernels differ in the last digits, so nothing here compares floats for equality."""

import json
import os
from pathlib import Path

import pytest

from sparseprobe_core import manifest

HERE = Path(__file__).parent


def test_rerun_reproduces_the_reference_numbers():
    out = os.environ.get("SPARSEPROBE_NBVAL_OUT")
    if not out:
        pytest.fail("SPARSEPROBE_NBVAL_OUT is not set: run this through ./run_tests.sh")
    reference = json.loads((HERE / manifest.MANIFEST).read_text())["notebooks"]
    records = {p.stem: json.loads(p.read_text()) for p in (Path(out) / "records").glob("*.json")}
    assert set(records) == set(reference)
    problems = [
        f"{name}: {problem}"
        for name, ref in reference.items()
        for problem in manifest.compare_numbers(ref["numbers"], records[name]["numbers"])
    ]
    assert not problems, "the ci rerun does not reproduce the reference:\n" + "\n".join(problems)
