"""The concept catalog (data/concepts/catalog.toml) and the builder agree with the files on disk.

No model here: committed concepts must exist, parse and hold `per_class` examples of each class;
local ones (built at set-up from sources that may not be redistributed) are checked when built.
"""

import importlib.util
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from sparseprobe_core import concepts, paths

KINDS = {"code-token", "word-in-context", "sentence"}
CATALOG = tomllib.loads((paths.CONCEPTS / "catalog.toml").read_text(encoding="utf-8"))
LOCAL = paths.CONCEPTS / "local"


def _builder():
    """data/build_concepts.py as a module (standard library only; importing it builds nothing)."""
    spec = importlib.util.spec_from_file_location("build_concepts", paths.DATA / "build_concepts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _csv(name: str) -> Path:
    return (LOCAL if CATALOG[name]["local"] else paths.CONCEPTS) / f"{name}.csv"


def test_catalog_is_what_the_builder_writes():
    builder = _builder()
    assert list(CATALOG) == list(builder.CONCEPTS)
    assert (paths.CONCEPTS / "catalog.toml").read_text(encoding="utf-8") == builder._catalog_text(), (
        "data/concepts/catalog.toml is stale: run python data/build_concepts.py --only french"
    )


def test_catalog_has_enough_concepts_of_each_kind():
    kinds = [entry["kind"] for entry in CATALOG.values()]
    assert len(kinds) >= 16
    assert all(kinds.count(kind) >= 4 for kind in KINDS)


@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_entry_is_complete(name):
    entry = CATALOG[name]
    assert entry["kind"] in KINDS
    for field in ("label_1", "label_0", "source", "licence"):
        assert isinstance(entry[field], str) and entry[field].strip() and "\n" not in entry[field], field
    assert isinstance(entry["local"], bool)
    assert isinstance(entry["per_class"], int) and entry["per_class"] >= 400
    assert isinstance(entry["max_tokens"], int) and entry["max_tokens"] > 0 and entry["max_tokens"] % 8 == 0
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name)


def test_every_concept_file_has_a_catalog_entry_in_the_right_folder():
    committed = {p.stem for p in paths.CONCEPTS.glob("*.csv")}
    local = {p.stem for p in LOCAL.glob("*.csv")}
    assert committed == {n for n, e in CATALOG.items() if not e["local"]}
    assert local <= {n for n, e in CATALOG.items() if e["local"]}


def test_local_concepts_are_git_ignored():
    ignored = (paths.ROOT / ".gitignore").read_text().split()
    assert "data/concepts/local/" in ignored


@pytest.mark.parametrize("name", list(CATALOG))
def test_concept_file_is_valid_balanced_and_as_large_as_the_catalog_says(name):
    path = _csv(name)
    if CATALOG[name]["local"] and not path.exists():
        pytest.skip(f"{name} is built at set-up: python data/build_concepts.py --local")
    c = concepts.load_concept(path)
    counts = np.bincount(c.labels, minlength=2)
    assert counts[0] == counts[1] == CATALOG[name]["per_class"] >= 400
    assert all(not t.endswith((" ", "\n")) for t in c.texts)  # the probed token is a real token


def _tokenizer():
    folders = sorted((paths.ROOT / ".cache" / "models").glob("*/tokenizer.json"))
    if not folders:
        pytest.skip("no SmolLM2 tokenizer in .cache/models/ (load the model once, e.g. ./run_all.sh)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folders[0].parent))


def test_texts_fit_max_tokens():
    tokenizer = _tokenizer()
    for name, entry in CATALOG.items():
        path = _csv(name)
        if not path.exists():
            continue
        texts = list(concepts.load_concept(path).texts)
        longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        assert longest <= entry["max_tokens"], f"{name}: a text has {longest} tokens > max_tokens"


def test_builder_is_deterministic_for_a_catalog_concept(tmp_path, monkeypatch):
    """Rebuilding `german` (a second or so; needs the Django and Sphinx wheels in data/.build/) gives
    the committed bytes, written into a scratch folder."""
    builder = _builder()
    for key in ("django", "sphinx"):
        if not (builder.BUILD_DIR / builder.DOWNLOADS[key][1]).exists():
            pytest.skip("the Django/Sphinx wheels are not in data/.build/ (python data/build_concepts.py fetches them)")
    monkeypatch.setattr(builder, "OUT_DIR", tmp_path)
    monkeypatch.setattr(builder, "LOCAL_DIR", tmp_path / "local")
    monkeypatch.setattr(builder, "CATALOG", tmp_path / "catalog.toml")
    builder.main(["--only", "german"])
    assert (tmp_path / "german.csv").read_bytes() == (paths.CONCEPTS / "german.csv").read_bytes()
    assert (tmp_path / "catalog.toml").read_bytes() == (paths.CONCEPTS / "catalog.toml").read_bytes()


def test_local_flag_builds_only_missing_local_concepts(tmp_path, monkeypatch, capsys):
    builder = _builder()
    monkeypatch.setattr(builder, "OUT_DIR", tmp_path)
    monkeypatch.setattr(builder, "LOCAL_DIR", tmp_path / "local")
    monkeypatch.setattr(builder, "CATALOG", tmp_path / "catalog.toml")
    (tmp_path / "local").mkdir()
    local = [n for n, e in builder.CONCEPTS.items() if e["local"]]
    for name in local:
        (tmp_path / "local" / f"{name}.csv").write_text("placeholder")
    built = []
    for name in builder.CONCEPTS:
        monkeypatch.setattr(builder, f"build_{name}", lambda *a, name=name: built.append(name) or [])
    builder.main(["--local"])
    assert built == []
    (tmp_path / "local" / f"{local[-1]}.csv").unlink()
    with pytest.raises(SystemExit):  # the stub builds nothing, which the per-class check rejects
        builder.main(["--local"])
    assert built == [local[-1]]
