"""No notebook is silently dropped: run_all.sh, nbval and the disk agree, and each has a parameters cell."""

import nbformat
import pytest

from sparseprobe_core import config, models, paths

ON_DISK = sorted(p.name for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_run_all_runs_every_numbered_notebook():
    script = (paths.ROOT / "run_all.sh").read_text()
    assert "notebooks/[0-9][0-9]_*.ipynb" in script


def _code(nb) -> list[str]:
    return [
        c.source for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]


def test_nbval_checks_the_same_notebooks_with_the_same_code():
    nbval = paths.ROOT / "tests" / "nbval"
    plan = config.run_plan("ci", "", [paths.NOTEBOOKS / name for name in ON_DISK])
    for model, notebooks in plan.items():
        folder = nbval if model == config.DEFAULT_MODEL else nbval / config.model_slug(model)
        assert sorted(p.name for p in folder.glob("*.ipynb")) == [nb.name for nb in notebooks], model
        for nb in notebooks:
            ours = nbformat.read(nb, as_version=4)
            ref = nbformat.read(folder / nb.name, as_version=4)
            assert _code(ours) == _code(ref), f"{folder.name}/{nb.name} is stale: run ./run_all.sh --profile ci"


def test_ci_runs_every_notebook_and_notebook_01_on_every_model():
    plan = config.run_plan("ci", "", [paths.NOTEBOOKS / name for name in ON_DISK])
    assert [nb.name for nb in plan[config.DEFAULT_MODEL]] == ON_DISK
    assert set(plan) == set(models.EMBEDDED) and all(nbs[0].name.startswith("01_") for nbs in plan.values())


@pytest.mark.parametrize("name", ON_DISK)
def test_notebook_has_parameters_cell_first_among_code(name):
    nb = nbformat.read(paths.NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert nb.metadata.kernelspec.name == "python3"
