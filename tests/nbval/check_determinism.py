"""Run by run_tests.sh after nbval re-executed the ci notebooks: the headline numbers of that run
must equal the ones recorded when tests/nbval/ was generated (two runs, same seed, same numbers)."""

import json
import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def test_rerun_gives_identical_headline_numbers():
    out = os.environ.get("SPARSEPROBE_NBVAL_OUT")
    if not out:
        pytest.fail("SPARSEPROBE_NBVAL_OUT is not set: run this through ./run_tests.sh")
    reference = json.loads((HERE / "MANIFEST.json").read_text())["notebooks"]
    records = {p.stem: json.loads(p.read_text()) for p in (Path(out) / "records").glob("*.json")}
    assert set(records) == set(reference)
    for name, ref in reference.items():
        assert records[name]["numbers"] == ref["numbers"], f"{name}: numbers differ between two ci runs"
