"""The results cache behind parallel.map_units: a rerun replays a unit only when nothing it read changed."""

import linecache
import sys
import threading
import warnings

import numpy as np
import pytest

from sparseprobe_core import parallel, results

LOG = {"path": None}  # where units note each call; a unit reads this dict, which stays the same


def _note(value) -> None:
    with open(LOG["path"], "a") as f:
        f.write(f"{value}\n")


def calls() -> list[int]:
    """The values units noted, one per computed (not replayed) unit."""
    try:
        return [int(v) for v in open(LOG["path"]).read().split()]
    except FileNotFoundError:
        return []


def _core_like_unit(x, seed):
    _note(seed)
    return np.asarray(x) * seed


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """The cache on, in a fresh folder; units run in this process so calls can be counted."""
    monkeypatch.setenv(results.ENV, str(tmp_path / "results"))
    monkeypatch.setenv(parallel.ENV_JOBS, "1")
    monkeypatch.setitem(LOG, "path", str(tmp_path / "calls.log"))
    return tmp_path / "results"


def _notebook_function(tmp_path, source: str, name: str, **globals_):
    """A function as a notebook cell defines it: module __main__, source known only to linecache."""
    file = str(tmp_path / f"cell_{abs(hash(source))}.py")
    linecache.cache[file] = (len(source), None, source.splitlines(True), file)
    namespace = {"__name__": "__main__", "_note": _note, **globals_}
    exec(compile(source, file, "exec"), namespace)
    return namespace[name], namespace


CELL = """
def helper(v):
    return v + OFFSET

def unit(x):
    _note(x)
    return [helper(x * s) for s in GRID]
"""


def test_a_rerun_reads_the_cache_and_returns_the_same_results(cache):
    units = [(np.arange(3.0), s) for s in (1, 2)]
    first = parallel.map_units(_core_like_unit, units)
    assert calls() == [1, 2] and len(list(cache.rglob("*.pkl"))) == 2
    again = parallel.map_units(_core_like_unit, units)
    assert calls() == [1, 2]  # nothing recomputed
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    parallel.map_units(_core_like_unit, [(np.arange(3.0) + 1, 1), units[1]])  # one argument changed
    assert calls() == [1, 2, 1]


def test_a_core_edit_invalidates_core_units(cache, monkeypatch):
    parallel.map_units(_core_like_unit, [(1.0, 3)])
    monkeypatch.setattr(results, "core_code", lambda: "another core")
    parallel.map_units(_core_like_unit, [(1.0, 3)])
    assert calls() == [3, 3]


def test_a_notebook_unit_is_keyed_by_its_source_and_every_global_it_reads(cache, tmp_path):
    unit, ns = _notebook_function(tmp_path, CELL, "unit", GRID=[1, 2], OFFSET=0.5, UNUSED=0)
    assert parallel.map_units(unit, [(1,), (2,)]) == [[1.5, 2.5], [2.5, 4.5]]
    parallel.map_units(unit, [(1,), (2,)])
    assert calls() == [1, 2]
    ns["UNUSED"] = 1  # not read by the unit: still a hit
    parallel.map_units(unit, [(1,)])
    assert calls() == [1, 2]
    ns["OFFSET"] = 0.0  # read by a helper the unit calls
    assert parallel.map_units(unit, [(1,)]) == [[1.0, 2.0]]
    ns["GRID"] = [1, 2, 3]  # read by the unit itself
    assert parallel.map_units(unit, [(1,)]) == [[1.0, 2.0, 3.0]]
    edited, _ = _notebook_function(tmp_path, CELL.replace("x * s", "x * s * 1"), "unit", GRID=[1, 2, 3], OFFSET=0.0)
    parallel.map_units(edited, [(1,)])  # same results, but edited code is never trusted to give them
    assert calls() == [1, 2, 1, 1, 1]


def test_what_cannot_be_keyed_is_computed_every_time(cache, tmp_path):
    unit, _ = _notebook_function(tmp_path, CELL, "unit", GRID=[threading.Lock()], OFFSET=0)
    with pytest.raises(TypeError):  # the unit itself fails on a lock; only the keying matters here
        parallel.map_units(unit, [(1,)])
    assert calls() == [1] and not cache.exists()
    exec_only = {"__name__": "__main__", "_note": _note}
    exec(compile("def unit(x):\n    _note(x)\n    return x\n", "<no source>", "exec"), exec_only)
    assert parallel.map_units(exec_only["unit"], [(7,)]) == [7]
    assert parallel.map_units(exec_only["unit"], [(7,)]) == [7]
    assert calls() == [1, 7, 7] and not cache.exists()


def test_an_unreadable_entry_is_recomputed_with_a_warning(cache):
    parallel.map_units(_core_like_unit, [(2.0, 5)])
    (entry,) = cache.rglob("*.pkl")
    entry.write_bytes(b"not a pickle")
    with pytest.warns(UserWarning, match="unreadable"):
        assert parallel.map_units(_core_like_unit, [(2.0, 5)]) == [10.0]
    assert calls() == [5, 5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the entry was rewritten
        assert parallel.map_units(_core_like_unit, [(2.0, 5)]) == [10.0]
    assert calls() == [5, 5]


def test_off_computes_everything_and_writes_nothing(cache, monkeypatch):
    monkeypatch.setenv(results.ENV, "off")
    parallel.map_units(_core_like_unit, [(1.0, 1)])
    parallel.map_units(_core_like_unit, [(1.0, 1)])
    assert calls() == [1, 1] and not cache.exists()


def test_library_versions_are_part_of_the_key(monkeypatch):
    key = results.function_key(_core_like_unit)
    env = results.environment()
    monkeypatch.setattr(results, "environment", lambda: (*env[:-1], ("numpy", "another version")))
    assert results.function_key(_core_like_unit) != key
    assert sys.version in env
