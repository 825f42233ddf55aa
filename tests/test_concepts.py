"""Concept files: every malformed input gives one clear line; shipped concepts are valid and balanced."""

import numpy as np
import pytest

from sparseprobe_core import concepts
from sparseprobe_core.concepts import ConceptError


def _write(tmp_path, content: bytes | str, name="c.csv"):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def _rows(n0=25, n1=25):
    return "text,label\n" + "".join(f"zero {i},0\n" for i in range(n0)) + "".join(f"one {i},1\n" for i in range(n1))


def test_valid_file_loads(tmp_path):
    c = concepts.load_concept(_write(tmp_path, _rows()))
    assert len(c) == 50 and c.labels.sum() == 25 and c.name == "c" and len(c.sha256) == 64


@pytest.mark.parametrize(
    "content, message",
    [
        ("words,label\na,0\n", "needs columns 'text,label'"),
        (_rows().replace("one 3,1", "one 3,2"), "labels must be 0 or 1"),
        (_rows().replace("one 3,1", "one 3,yes"), "labels must be 0 or 1"),
        ("text,label\n" + "".join(f"zero {i},0\n" for i in range(30)), "only one class"),
        (_rows(25, 5), "give at least 20 of each"),
        (_rows().replace("one 3,1", ",1"), "empty text"),
        (_rows().replace("one 3,1", "   ,1"), "empty text"),
        (_rows().replace("one 3,1", "zero 4,1"), "lines 6 and 30 have the same text with labels 0 and 1"),
        ("text,label\n", "has no rows, only a header"),
        (_rows().replace("one 3,1", "one 3,1.5"), "labels must be 0 or 1"),
        (_rows().encode() + b"caf\xe9,1\n", "is not UTF-8"),
        (_rows().replace("one 3,1", "one, 3,1"), "line 30 has more fields than text,label; quote a text"),
        (_rows().replace("one 3,1", '"one 3,1'), "line 30 opens a quote that is never closed"),
        (_rows().replace("one 3,1", 'one 3,"1'), "line 30 opens a quote that is never closed"),
        ('text,label\n"one,1\n' + "x" * 140_000 + ",0\n", r"line 2 cannot be read as CSV \(field larger"),
    ],
)
def test_malformed_files_fail_with_one_line(tmp_path, content, message):
    with pytest.raises(ConceptError, match=message) as err:
        concepts.load_concept(_write(tmp_path, content))
    assert "\n" not in str(err.value)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(ConceptError, match="cannot be read"):
        concepts.load_concept(tmp_path / "nope.csv")
    with pytest.raises(ConceptError, match="unknown concept 'no_such_concept'"):
        concepts.load_concept("no_such_concept")


def test_splits_are_stratified_reproducible_and_disjoint():
    y = np.array([0] * 60 + [1] * 40)
    a, b = concepts.make_split(y, seed=3, val_size=0.2), concepts.make_split(y, seed=3, val_size=0.2)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("train", "val", "test"))
    parts = [a.train, a.val, a.test]
    assert sum(len(p) for p in parts) == 100 and len(np.unique(np.concatenate(parts))) == 100
    assert abs(y[a.test].mean() - 0.4) < 0.05 and abs(y[a.train].mean() - 0.4) < 0.05
    assert not np.array_equal(concepts.make_split(y, seed=4).test, concepts.make_split(y, seed=3).test)


def test_subsample_is_balanced_and_reproducible(tmp_path):
    c = concepts.load_concept(_write(tmp_path, _rows(40, 30)))
    s1, s2 = concepts.subsample(c, 20, seed=1), concepts.subsample(c, 20, seed=1)
    assert s1.texts == s2.texts and np.bincount(s1.labels).tolist() == [20, 20]


@pytest.mark.parametrize("name", ["python_string", "python_number", "french"])
def test_shipped_concepts_are_valid_and_balanced(name):
    c = concepts.load_concept(name)
    counts = np.bincount(c.labels)
    assert counts[0] == counts[1] >= 400


def test_repeated_rows_are_dropped_with_one_warning(tmp_path):
    content = _rows() + "one 3,1\none 3,1\nzero 7,0\n"
    with pytest.warns(UserWarning, match=r"c\.csv: dropped 3 repeated row\(s\) \(same text and label\)"):
        c = concepts.load_concept(_write(tmp_path, content))
    assert len(c) == 50 and len(set(c.texts)) == 50


def test_header_case_and_pandas_labels_are_accepted(tmp_path):
    content = (
        "Text,Label\n" + "".join(f"zero {i},0.0\n" for i in range(25)) + "".join(f"one {i},1.0\n" for i in range(25))
    )
    c = concepts.load_concept(_write(tmp_path, content))
    assert len(c) == 50 and c.labels.sum() == 25
