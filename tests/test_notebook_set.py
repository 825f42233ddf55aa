"""No notebook is silently dropped: run_all.sh, nbval and the disk agree, and each has a parameters cell."""

import nbformat
import pytest

from sparseprobe_core import paths

ON_DISK = sorted(p.name for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_run_all_runs_every_numbered_notebook():
    script = (paths.ROOT / "run_all.sh").read_text()
    assert "notebooks/[0-9][0-9]_*.ipynb" in script


def _code(nb) -> list[str]:
    return [
        c.source for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]


def test_nbval_checks_the_same_notebooks_with_the_same_code():
    checked = sorted(p.name for p in (paths.ROOT / "tests" / "nbval").glob("*.ipynb"))
    assert checked == ON_DISK
    for name in ON_DISK:
        ours = nbformat.read(paths.NOTEBOOKS / name, as_version=4)
        ref = nbformat.read(paths.ROOT / "tests" / "nbval" / name, as_version=4)
        assert _code(ours) == _code(ref), f"tests/nbval/{name} is stale: run ./run_all.sh --profile ci"


@pytest.mark.parametrize("name", ON_DISK)
def test_notebook_has_parameters_cell_first_among_code(name):
    nb = nbformat.read(paths.NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert nb.metadata.kernelspec.name == "python3"
