"""The results cache: what a unit of analysis returned, kept on disk under a key of everything it read.

`parallel.map_units` looks every unit up here before it runs it, so a rerun whose code, data and
settings are unchanged (the warm ``./run_all.sh``) replays the fits instead of redoing them, and a
change anywhere recomputes exactly the units it can affect. A unit's key is a hash of

- the unit function and its arguments, pickled by a hasher (joblib's, arrays by content) that replaces
  every function, class and module it meets, however deep (an argument, a dataclass field, a global):
  one from the core by the syntax-tree hash of the core modules that can change a result (the
  manifest's: any edit of the science invalidates every entry); one from the standard library or an
  installed package by its name (the versions below stand for its code); anything else (a notebook
  cell, a local script) by its bytecode (comments and layout do not count) and, recursively, the value
  of every global name its code loads, its defaults and closure variables (a class: its bases and
  attributes, methods included; a local module: its file). A ``RunConfig`` counts by its recorded
  parameters (``record()``, without the per-run staging folder);
- the interpreter, the machine type, the version of every installed distribution and whether torch
  sees a GPU (a new scikit-learn, or NeuroX training on CUDA, may give other numbers);
- ``FORMAT``: this module and `parallel` are not in the manifest's hash (scheduling and caching do not
  change a figure), so a change to how keys or entries are made bumps it (tests/test_results.py pins
  the key code to it).

A unit that cannot be keyed (a value pickle refuses, a local module without a file) is always computed,
and so is everything while the core's files differ from the code this process imported (an edit during
a run). Entries are pickles written atomically as each unit finishes (a killed run keeps the finished
ones; none is half written), with the warnings the unit raised: `parallel.map_units` counts a loop's
warnings on the terminal, from computed and read-back units alike, and never in a notebook, so a warm
run's notebooks equal the cold run's. An unreadable entry is recomputed with a warning. Units computed
on a Dask cluster are not stored (its workers' libraries are not this process's). The cache lives in
``.cache/results``; $SPARSEPROBE_RESULTS names another folder (relative to the repository), or ``off``
to compute everything (the tests set it, ``tests/conftest.py``, except the cache's own tests). A
replayed unit returns what it returned when computed, timings included. ``rm -rf .cache/results``
forgets every entry.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import importlib.metadata
import inspect
import os
import pickle
import platform
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

from joblib.hashing import NumpyHasher

from . import config, paths

ENV = "SPARSEPROBE_RESULTS"
FORMAT = 4  # bump when the key or the entry format changes (this module is not in the core's hash)
_CORE = __name__.rpartition(".")[0]
_CORE_DIR = Path(__file__).resolve().parent


class Unkeyable(Exception):
    """A unit's result depends on something the key cannot capture; the unit is computed, not cached."""


def folder() -> Path | None:
    """Where entries live, or None when the cache is off ($SPARSEPROBE_RESULTS=off). The variable holds
    off / on (or 0 / 1, no / yes, false / true) or a folder, relative to the repository when not absolute."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in {"off", "0", "no", "false"}:
        return None
    on = not value or value.lower() in {"on", "1", "yes", "true"}
    return paths.ROOT / ".cache" / "results" if on else paths.ROOT / value


# -- what every key shares: the environment and the core's code ------------------------------------------


@functools.cache
def environment() -> tuple:
    """The interpreter, machine type, every installed distribution's version and GPU visibility."""
    import torch

    dists = sorted({(d.metadata["Name"] or "", d.version) for d in importlib.metadata.distributions()})
    return (FORMAT, sys.version, platform.machine(), tuple(dists), torch.cuda.is_available())


def _core_stamp() -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(_CORE_DIR.glob("*.py"))}


_IMPORTED = _core_stamp()  # the core's files as this process imported them (its modules load together)


@functools.cache
def _code_hash_of_files() -> str:
    from . import manifest

    return hashlib.sha256(repr(sorted(manifest.core_hashes().items())).encode()).hexdigest()


_imported_hash: list[str] = []  # the core's hash while its files are as imported, computed on first use


def core_code() -> str:
    """Hash of the core's code as this process imported it; `Unkeyable` once the files changed since
    (an edit during a run: results of the old code must not be stored under the new code's key)."""
    changed = _core_stamp() != _IMPORTED
    if not _imported_hash:
        if changed:
            raise Unkeyable("the core's files changed since this process imported them; restart to cache again")
        _imported_hash.append(_code_hash_of_files())
    elif changed:
        _code_hash_of_files.cache_clear()
        if _code_hash_of_files() != _imported_hash[0]:
            raise Unkeyable("the core's files changed since this process imported them; restart to cache again")
        _IMPORTED.update(_core_stamp())  # touched, not edited (e.g. a checkout of the same content)
    return _imported_hash[0]


# -- fingerprints of code ----------------------------------------------------------------------------------


def _token(kind: str, digest: str) -> tuple[str, str]:
    """What a function, class, module or RunConfig is pickled as inside a key."""
    return kind, digest


def _accounted(module: str) -> bool:
    """Whether code from `module` is accounted for by its name: the core (`core_code`), the standard
    library or an installed package (`environment`); anything else is keyed by its source."""
    top = module.partition(".")[0]
    return top == _CORE or top in sys.stdlib_module_names or top in _installed()


def _importable(obj) -> bool:
    return _accounted(getattr(obj, "__module__", None) or "")


@functools.cache
def _installed() -> frozenset[str]:
    return frozenset(importlib.metadata.packages_distributions())


def _globals_loaded(code: types.CodeType) -> set[str]:
    """The global names a code object (and every function or comprehension nested in it) loads; attribute
    names (``cfg.seed``'s ``seed``) are not globals and are left out."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _globals_loaded(const)
    return names


def _reads(fn: types.FunctionType) -> tuple:
    """The values a function's code can read besides its arguments: loaded globals, defaults, closure."""
    glob = fn.__globals__
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # a cell not yet assigned
            cells.append("<empty cell>")
    loaded = tuple((n, glob[n]) for n in sorted(_globals_loaded(fn.__code__)) if n in glob)
    return loaded, fn.__defaults__, fn.__kwdefaults__, tuple(cells)


def _bytecode(code: types.CodeType) -> tuple:
    """What a code object computes, without where it was written (file, line numbers): its instructions,
    names and constants, nested functions and comprehensions included. Comments and layout do not count."""
    consts = tuple(_bytecode(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars, code.co_argcount,
            code.co_kwonlyargcount, code.co_flags, consts)  # fmt: skip


_CLASS_BOOKKEEPING = {"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__"}


def _code_digest(obj, seen: dict[int, str]) -> str:
    """A function or class defined outside importable code: what its code computes and what it reads (for a
    class: its bases and every attribute, methods included)."""
    if id(obj) in seen:  # a function that calls itself, two that call each other
        return seen[id(obj)]
    seen[id(obj)] = f"<recursion into {obj.__qualname__}>"
    if isinstance(obj, type):
        attrs = []
        for name, value in sorted(vars(obj).items()):
            if name in _CLASS_BOOKKEEPING:
                continue
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            elif isinstance(value, property):
                value = (value.fget, value.fset, value.fdel)
            attrs.append((name, value))
        parts = ("class", obj.__qualname__, obj.__bases__, tuple(attrs))
    else:
        parts = ("function", obj.__qualname__, _bytecode(obj.__code__), _reads(obj))
    digest = _digest(parts, seen)
    seen[id(obj)] = digest
    return digest


def _module_digest(module: types.ModuleType) -> str:
    """A module by its name when its code is accounted for (core, standard library, installed), else by
    its file's content."""
    if _accounted(module.__name__):
        return module.__name__
    try:
        return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()
    except (OSError, TypeError) as err:
        raise Unkeyable(f"module {module.__name__} has no source to key it by ({err})") from None


class _KeyHasher(NumpyHasher):
    """joblib's hasher (arrays by content), with code replaced by its fingerprint wherever it occurs."""

    def __init__(self, seen: dict[int, str]):
        super().__init__(hash_name="sha256")
        self.seen = seen

    def reducer_override(self, obj):
        if isinstance(obj, config.RunConfig):
            return _token, ("RunConfig", _digest(obj.record(), self.seen))
        if isinstance(obj, types.ModuleType):
            return _token, ("module", _module_digest(obj))
        if isinstance(obj, types.FunctionType | type) and not _importable(obj):
            return _token, ("code", _code_digest(obj, self.seen))
        return NotImplemented


def _digest(obj, seen: dict[int, str]) -> str:
    try:
        return _KeyHasher(seen).hash(obj)
    except Unkeyable:
        raise
    except Exception as err:  # anything pickle refuses (a lock, an open file, a model with hooks, ...)
        raise Unkeyable(f"a value the unit reads cannot be hashed ({type(err).__name__}: {err})") from None


def function_key(fn: Callable) -> str:
    """The part of every unit's key that `fn` contributes (raises `Unkeyable`)."""
    return _digest((environment(), core_code(), fn), {})


def unit_key(fn_key: str, unit: tuple) -> str:
    """The key of one unit of the function whose `function_key` is `fn_key` (raises `Unkeyable`)."""
    return _digest((fn_key, unit), {})


# -- entries -----------------------------------------------------------------------------------------------

MISSING = object()


def _path(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.pkl"


def load(root: Path, key: str):
    """The stored ``(result, warnings)`` of the unit `key`, or MISSING."""
    path = _path(root, key)
    if not path.exists():
        return MISSING
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as err:  # truncated or unreadable: compute it again
        warnings.warn(f"results cache entry {path.name} is unreadable ({err}); recomputing it", stacklevel=2)
        return MISSING


def save(root: Path, key: str, result, caught: tuple = ()) -> bool:
    """Store a unit's result and the warnings it raised atomically; False (nothing stored) when pickle
    refuses them or the core's files changed since the key was made."""
    try:
        core_code()
        data = pickle.dumps((result, caught), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
    paths.atomic_write(_path(root, key), lambda tmp: tmp.write_bytes(data))
    return True


# -- warnings: what the units raised, reported the same whether computed or read back ----------------------


def capture(fn: Callable, *unit) -> tuple:
    """``fn(*unit)`` and the warnings it raised under the filters in force (each shown once per place, as
    Python's default does; an "error" filter still raises), as (category name, message) pairs, so that a
    unit's warnings travel with its result out of a worker process or the cache."""
    with warnings.catch_warnings(record=True) as caught:
        result = fn(*unit)
    return result, tuple((f"{w.category.__module__}.{w.category.__qualname__}", str(w.message)) for w in caught)


def warning_summary(caught: list[tuple]) -> list[str]:
    """One line per distinct warning of a loop's units, with how many times they raised it, in order of
    first appearance. Read from the stored entries as well as from computed units, so a warm run reports
    what the cold run did."""
    counts: dict[tuple[str, str], int] = {}
    for unit in caught:
        for category, message in unit:
            counts[category, message] = counts.get((category, message), 0) + 1
    return [f"{n} x {category}: {message}" for (category, message), n in counts.items()]
