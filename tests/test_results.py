"""The results cache behind parallel.map_units: a rerun replays a unit only when nothing it read changed."""

import functools
import linecache
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from sparseprobe_core import parallel, paths, results

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
    reads_a_generator, _ = _notebook_function(
        tmp_path, "def unit(x):\n    _note(x)\n    return x + 0 * len(STREAM.gi_code.co_name)\n", "unit",
        STREAM=(i for i in range(3)),
    )  # fmt: skip
    assert parallel.map_units(reads_a_generator, [(7,)]) == [7]
    assert parallel.map_units(reads_a_generator, [(7,)]) == [7]
    assert calls() == [1, 7, 7] and not cache.exists()


def test_comments_and_layout_do_not_count(cache, tmp_path):
    unit, _ = _notebook_function(tmp_path, CELL, "unit", GRID=[1], OFFSET=0)
    relaid, _ = _notebook_function(
        tmp_path, CELL.replace("def unit(x):", "# a comment\n\ndef unit(x):  # the unit"), "unit", GRID=[1], OFFSET=0
    )
    assert results.function_key(unit) == results.function_key(relaid)


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


ARG_CELL = """
def scale(v):
    return v * 2

class Shift:
    def __init__(self, by):
        self.by = by

    def apply(self, v):
        return v + self.by + OFFSET
"""


def test_code_inside_arguments_is_keyed_by_its_source(cache, tmp_path):
    """A notebook function or an instance of a notebook class passed as an argument, or nested in one."""
    _, ns = _notebook_function(tmp_path, ARG_CELL, "scale", OFFSET=0)

    def key(*unit):
        return results.unit_key(results.function_key(_core_like_unit), unit)

    before = key(ns["scale"], [ns["Shift"](1)])
    assert key(ns["scale"], [ns["Shift"](1)]) == before
    _, edited = _notebook_function(tmp_path, ARG_CELL.replace("v * 2", "v * 3"), "scale", OFFSET=0)
    assert key(edited["scale"], [ns["Shift"](1)]) != before  # a function's body
    ns["OFFSET"] = 1
    assert key(ns["scale"], [ns["Shift"](1)]) != before  # a global a method of the argument's class loads
    ns["OFFSET"] = 0
    _, other = _notebook_function(tmp_path, ARG_CELL.replace("+ self.by", "- self.by"), "scale", OFFSET=0)
    assert key(ns["scale"], [other["Shift"](1)]) != before  # a class's method


def test_only_loaded_globals_count_not_attribute_names(cache, tmp_path):
    cell = "def unit(cfg_like):\n    _note(1)\n    return cfg_like.seed\n"
    unit, ns = _notebook_function(tmp_path, cell, "unit", seed=0)
    key = results.function_key(unit)
    ns["seed"] = 1  # a global that shares a name with an attribute the unit reads
    assert results.function_key(unit) == key


def test_a_local_module_is_keyed_by_its_file(cache, tmp_path, monkeypatch):
    helper = tmp_path / "my_helper_mod.py"
    helper.write_text("FACTOR = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    mod = importlib.import_module("my_helper_mod")
    unit, _ = _notebook_function(tmp_path, "def unit(x):\n    return x * my_helper_mod.FACTOR\n", "unit",
                                 my_helper_mod=mod)  # fmt: skip
    key = results.function_key(unit)
    helper.write_text("FACTOR = 3\n")
    assert results.function_key(unit) != key
    sys.modules.pop("my_helper_mod", None)


def test_an_empty_closure_cell_is_keyable(cache, tmp_path):
    cell = (
        "def outer():\n    def unit(x):\n        return later(x)\n    key = KEY(unit)\n"
        "    def later(x):\n        return x\n    return key\n"
    )
    _, ns = _notebook_function(tmp_path, cell, "outer", KEY=results.function_key)
    assert isinstance(ns["outer"](), str)


def test_nothing_is_cached_once_the_core_changed_on_disk(cache, monkeypatch):
    parallel.map_units(_core_like_unit, [(1.0, 4)])
    monkeypatch.setattr(results, "_IMPORTED", {**results._IMPORTED, "rankers.py": -1})  # as if edited since
    monkeypatch.setattr(results, "_code_hash_of_files", functools.cache(lambda: "the edited core"))
    monkeypatch.setattr(results, "_imported_hash", ["the imported core"])
    parallel.map_units(_core_like_unit, [(1.0, 5)])
    parallel.map_units(_core_like_unit, [(1.0, 5)])
    assert calls() == [4, 5, 5] and len(list(cache.rglob("*.pkl"))) == 1


def _fails_on_negative(x):
    if x < 0:
        raise ValueError("negative")
    return x


def test_finished_units_are_kept_when_a_later_one_fails(cache):
    with pytest.raises(ValueError, match="negative"):
        parallel.map_units(_fails_on_negative, [(1,), (-1,)])
    assert len(list(cache.rglob("*.pkl"))) == 1  # the first unit's result was stored before the failure


def test_a_relative_folder_is_inside_the_repository(monkeypatch):
    monkeypatch.setenv(results.ENV, "some/where")
    assert results.folder() == results.paths.ROOT / "some" / "where"
    monkeypatch.setenv(results.ENV, "OFF")
    assert results.folder() is None
    for on in ("on", "1", "Yes", "true", ""):  # words that mean "on" are not folder names
        monkeypatch.setenv(results.ENV, on)
        assert results.folder() == results.paths.ROOT / ".cache" / "results"


def test_an_empty_activation_cache_variable_means_the_default(monkeypatch):
    monkeypatch.setenv("SPARSEPROBE_CACHE", " ")
    assert results.paths.cache_dir() == results.paths.ROOT / ".cache" / "activations"


def _warns(x):
    for _ in range(3):  # the same place three times: recorded once, as Python's default filter shows it
        warnings.warn(f"unit {x} did not converge", RuntimeWarning, stacklevel=1)
    return x


def _terminal_and_caller(capsys, run):
    """What a map_units call prints (the terminal outside run_all.sh) and what it raises in the caller."""
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("default")  # Python's own default: each place shows once
        out = run()
    return out, capsys.readouterr().out, raised


def test_a_loops_warnings_are_counted_on_the_terminal_the_same_when_read_back(cache, capsys):
    cold = _terminal_and_caller(capsys, lambda: parallel.map_units(_warns, [(1,), (2,), (1,)]))
    warm = _terminal_and_caller(capsys, lambda: parallel.map_units(_warns, [(1,), (2,), (1,)]))
    assert cold[0] == warm[0] == [1, 2, 1] and calls() == []  # _warns notes nothing; the results match
    assert cold[2] == warm[2] == []  # nothing is raised in the caller, so a notebook prints nothing of it
    for printed in (cold[1], warm[1]):
        assert "2 x builtins.RuntimeWarning: unit 1 did not converge" in printed
        assert "1 x builtins.RuntimeWarning: unit 2 did not converge" in printed
    assert "3 of 3 units read from the results cache" in warm[1]


def test_warnings_from_worker_processes_are_counted(monkeypatch, capsys):
    monkeypatch.setenv(results.ENV, "off")
    monkeypatch.setenv(parallel.ENV_JOBS, "2")
    _, printed, _ = _terminal_and_caller(capsys, lambda: parallel.map_units(_warns, [(3,), (4,)]))
    assert "1 x builtins.RuntimeWarning: unit 4 did not converge" in printed


def test_an_error_filter_still_stops_the_unit(cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="unit 5"):
            parallel.map_units(_warns, [(5,)])
    assert not cache.exists()


# The code that makes keys and entries. It is not in the manifest's hash, so a change to it must bump
# results.FORMAT (old entries could otherwise be read under the new rules); then update this pin.
_KEY_CODE = ("FORMAT", "_KeyHasher", "_token", "_digest", "_bytecode", "_reads", "_globals_loaded", "_code_digest",
             "_module_digest", "_accounted", "environment", "core_code", "function_key", "unit_key", "_path",
             "load", "save", "capture")  # fmt: skip
PIN = (4, "318572e8da4644a0")


def test_the_key_code_is_pinned_to_its_format():
    import hashlib
    import inspect

    from sparseprobe_core import manifest

    source = "".join(manifest.code_hash(inspect.getsource(getattr(results, n))) for n in _KEY_CODE if n != "FORMAT")
    pin = (results.FORMAT, hashlib.sha256(source.encode()).hexdigest()[:16])
    assert pin == PIN, f"the key code changed: bump results.FORMAT if keys or entries differ, then pin {pin}"


def test_keying_a_unit_does_not_import_nbformat():
    """Every notebook kernel keys its units by the core's code hash (`manifest.core_hashes`); reading notebooks
    is the manifest's other job, and nbformat's import (2.7 s, jsonschema's format checkers) stays out of the
    kernels: 8 of them in a warm paper run."""
    code = (
        "import sys; from sparseprobe_core import results; results.unit_key(results.function_key(len), (1,)); "
        "assert 'nbformat' not in sys.modules, 'imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=paths.ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
