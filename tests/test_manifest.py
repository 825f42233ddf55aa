"""The figure manifest: it records what made each figure, and the committed figures are current."""

import json
import shutil

import nbformat
import pytest

from sparseprobe_core import config, manifest, paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_committed_figures_are_current():
    path = paths.FIGURES / manifest.MANIFEST
    assert path.exists(), "figures/MANIFEST.json is missing: run ./run_all.sh"
    reasons = manifest.stale_reasons(json.loads(path.read_text()), NOTEBOOKS)
    assert not reasons, (
        "figures are stale (" + "; ".join(reasons) + "): run ./run_all.sh and commit figures/ and notebooks/"
    )


def test_every_manifest_figure_exists_with_its_record():
    data = json.loads((paths.FIGURES / manifest.MANIFEST).read_text())
    assert set(data["models"]) == set(config.run_plan("paper", "", NOTEBOOKS))
    for model, runs in data["models"].items():
        assert set(runs["notebooks"]) == {nb.stem for nb in NOTEBOOKS}, model
        for name, info in runs["figures"].items():
            assert (paths.FIGURES / config.model_slug(model) / info["file"]).is_file(), name
            entry = runs["notebooks"][info["notebook"]]
            assert entry["params"]["model"] == model and entry["data_sha256"]
    assert data["git_commit"] != "unknown"


@pytest.fixture
def one_record(tmp_path):
    """A records folder for one copied notebook, as a notebook run would leave it."""
    nb = tmp_path / "01_theory_check.ipynb"
    shutil.copy(NOTEBOOKS[0], nb)
    records = tmp_path / "records"
    records.mkdir()
    record = {
        "notebook": nb.stem,
        "params": {"model": "smollm2-135m", "concepts": ["python_number"]},
        "figures": {"01_x": {"file": "01_x.png", "caption": ""}},
        "numbers": {"a": 1.0},
    }
    (records / f"{nb.stem}.json").write_text(json.dumps(record))
    return nb, records


def test_a_changed_notebook_makes_the_manifest_stale(one_record):
    nb, records = one_record
    data = manifest.build_manifest({"smollm2-135m": (records, [nb])})
    assert manifest.stale_reasons(data, [nb]) == []
    book = nbformat.read(nb, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code" and not c.metadata.get("tags")]
    code[0].source += "\nedited = True"
    nbformat.write(book, nb)
    assert manifest.stale_reasons(data, [nb]) == [f"{nb.name} changed"]


def test_a_changed_core_file_makes_the_manifest_stale(one_record):
    nb, records = one_record
    data = manifest.build_manifest({"smollm2-135m": (records, [nb])})
    data["core"]["theory.py"] = "0" * 64
    assert manifest.stale_reasons(data, [nb]) == ["sparseprobe_core/theory.py changed"]


def test_clean_notebook_strips_timestamps_and_addresses(tmp_path):
    book = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.metadata["papermill"] = {"start_time": "2026-11-21T10:00:00"}
    cell.outputs = [nbformat.v4.new_output("stream", text=f"<object at 0x7f3a2b1c9d00> {paths.ROOT}/.venv/x.py")]
    book.cells = [cell]
    book.metadata["papermill"] = {"input_path": "/abs/path"}
    path = tmp_path / "n.ipynb"
    nbformat.write(book, path)
    manifest.clean_notebook(path)
    text = path.read_text()
    assert "0x7f3a" not in text and "start_time" not in text and "/abs/path" not in text
    assert str(paths.ROOT) not in text and "<repo>/.venv/x.py" in text


def test_clean_notebook_merges_text_the_kernel_flushed_in_pieces(tmp_path):
    """Where a kernel flushes a cell's printed lines differs from run to run; the stored notebook does not."""
    book = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", text="a\n"),
        nbformat.v4.new_output("stream", text="b\n"),
        nbformat.v4.new_output("stream", name="stderr", text="w\n"),
        nbformat.v4.new_output("stream", text="c\n"),
    ]
    book.cells = [cell]
    path = tmp_path / "n.ipynb"
    nbformat.write(book, path)
    manifest.clean_notebook(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [("stdout", "a\nb\n"), ("stderr", "w\n"), ("stdout", "c\n")]


def test_code_hash_ignores_docstrings_and_comments_not_code():
    src = 'def f(x):\n    """Add one."""\n    return x + 1  # one\n'
    same = 'def f(x):\n    """Add one to x, as the paper says."""\n    # a comment\n    return x + 1\n'
    other = 'def f(x):\n    """Add one."""\n    return x + 2\n'
    assert manifest.code_hash(src) == manifest.code_hash(same)
    assert manifest.code_hash(src) != manifest.code_hash(other)


def test_a_markdown_edit_leaves_the_figures_current(one_record):
    nb, records = one_record
    data = manifest.build_manifest({"smollm2-135m": (records, [nb])})
    book = nbformat.read(nb, as_version=4)
    next(c for c in book.cells if c.cell_type == "markdown").source += "\nA clearer sentence."
    nbformat.write(book, nb)
    assert manifest.stale_reasons(data, [nb]) == []


REFERENCE = {
    "area_i_mean_keep_ours": 0.7846,
    "dense_auroc_by_layer": {"french": [0.809, 0.898]},
    "identity_max_rel_diff": 1.62e-07,
    "p_i_mean_keep": 0.004,
    "claim4_L7_l1_probe_i_remove_p_holm": 0.01575,
    "claim4_L7_f_stat_i_remove_p_holm": 0.3491,
    "noise_rule_k": 29,
    "scope_layers": 10,
    "winner_at_10": "contribution",
}


def test_a_rerun_within_tolerance_reproduces_the_reference():
    rerun = {
        **REFERENCE,
        "area_i_mean_keep_ours": 0.7848,  # measured on a second machine
        "dense_auroc_by_layer": {"french": [0.8105, 0.8965]},
        "identity_max_rel_diff": 2.12e-07,  # a bound, not a value: any float32 rounding error passes
        "p_i_mean_keep": 0.008,
        "claim4_L7_l1_probe_i_remove_p_holm": 0.02441,  # measured on a second machine
        "claim4_L7_f_stat_i_remove_p_holm": 0.415,  # measured on a third machine (Intel Xeon)
        "noise_rule_k": 30,
    }
    assert manifest.compare_numbers(REFERENCE, rerun) == []


@pytest.mark.parametrize(
    "name, value",
    [
        ("area_i_mean_keep_ours", 0.7876),  # 3e-3 > 2e-3
        ("dense_auroc_by_layer", {"french": [0.809, 0.902]}),
        ("identity_max_rel_diff", 3e-4),  # above float32 precision: the identity broke
        ("p_i_mean_keep", 0.06),  # the other side of 0.05
        ("claim4_L7_l1_probe_i_remove_p_holm", 0.051),
        ("claim4_L7_f_stat_i_remove_p_holm", 0.49),  # 0.14 > 0.05 + 0.25 x 0.3491
        ("noise_rule_k", 36),
        ("scope_layers", 9),
        ("winner_at_10", "norm"),
    ],
)
def test_a_rerun_beyond_tolerance_is_reported(name, value):
    problems = manifest.compare_numbers(REFERENCE, {**REFERENCE, name: value})
    assert len(problems) == 1 and problems[0].startswith(name)


def test_missing_and_new_numbers_are_reported():
    rerun = {k: v for k, v in REFERENCE.items() if k != "noise_rule_k"} | {"extra": 1.0}
    assert manifest.compare_numbers(REFERENCE, rerun) == [
        "noise_rule_k: missing from the rerun",
        "extra: not in the reference",
    ]
