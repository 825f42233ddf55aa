"""The results cache: what a unit of analysis returned, kept on disk under a key of everything it read.

`parallel.map_units` looks every unit up here before it runs it, so a rerun whose code, data and
settings are unchanged (the warm ``./run_all.sh``) replays the fits instead of redoing them, and a
change anywhere recomputes exactly the units it can affect. A unit's key is the sha256 of

- the unit's arguments (arrays by content, with joblib's hashing);
- the unit function: a core function by the syntax-tree hash of every core module (as in the
  manifest; any edit of the core invalidates every entry), a function defined elsewhere (a
  notebook's cell) by its source text and, recursively, the value of every global name, default and
  closure variable its code reads (a notebook's ``cfg`` by its recorded parameters, ``METHODS``, helper
  functions, ...);
- the interpreter and the versions of the numerical libraries (a new scikit-learn may fit differently).

A unit that cannot be keyed (its function's source is not available, or a value it reads cannot be
pickled) is always computed. Entries are pickles written atomically (a killed run leaves none half
written); an unreadable entry is recomputed with a warning. The cache lives in ``.cache/results``;
$SPARSEPROBE_RESULTS names another folder, or ``off`` to compute everything (``run_tests.sh`` sets it,
so the tests always exercise the fits). Entries are small (kilobytes to a few megabytes per unit);
``rm -rf .cache/results`` forgets them.
"""

from __future__ import annotations

import functools
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

import joblib

from . import config, paths

ENV = "SPARSEPROBE_RESULTS"
FORMAT = 1  # bump when the key or the entry format changes
LIBRARIES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "joblib",
    "torch",
    "transformers",
    "transformer-lens",
    "neurox",
    "statsmodels",
)
_CORE = __name__.rpartition(".")[0]


class Unkeyable(Exception):
    """A unit's result depends on something the key cannot capture; the unit is computed, not cached."""


def folder() -> Path | None:
    """Where entries live, or None when the cache is off ($SPARSEPROBE_RESULTS=off)."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in {"off", "0", "no", "false"}:
        return None
    return Path(value) if value else paths.ROOT / ".cache" / "results"


@functools.cache
def environment() -> tuple:
    """The interpreter, machine type and library versions that a unit's numbers can depend on."""

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    return (FORMAT, sys.version, platform.machine(), tuple(version(d) for d in LIBRARIES))


@functools.cache
def core_code() -> str:
    """Hash of the core's code as this process imported it (computed once per process)."""
    from . import manifest

    return joblib.hash(manifest.core_hashes())


def _names_read(code: types.CodeType) -> set[str]:
    """Every global (or attribute) name a code object and the functions nested in it refer to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_read(const)
    return names


def _fingerprint(value, seen: dict[int, object]) -> object:
    """A picklable stand-in for `value` that changes whenever what a unit computes with it can change."""
    if isinstance(value, types.ModuleType):
        return ("module", value.__name__)
    if isinstance(value, functools.partial):
        return (
            "partial",
            _fingerprint(value.func, seen),
            _fingerprint(value.args, seen),
            _fingerprint(value.keywords, seen),
        )
    if isinstance(value, types.FunctionType | type) and not _importable(value):
        return _code_fingerprint(value, seen)
    if isinstance(value, types.FunctionType | types.BuiltinFunctionType | type):
        return ("ref", value.__module__, value.__qualname__)
    if isinstance(value, config.RunConfig):  # by its parameters: where a run stages its figures does not matter
        return ("RunConfig", joblib.hash(value.record()))
    if isinstance(value, tuple | list):
        return (type(value).__name__, tuple(_fingerprint(v, seen) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((_fingerprint(k, seen), _fingerprint(v, seen)) for k, v in value.items()))
    try:
        return ("value", joblib.hash(value))
    except Exception as err:  # anything pickle refuses (an open file, a model with hooks attached, ...)
        raise Unkeyable(f"{type(value).__name__} cannot be hashed ({err})") from None


def _importable(obj) -> bool:
    """Whether `obj` comes from the core, the standard library or an installed package, so that its name
    stands for its code (the core's through `core_code`, the numerical libraries' through `environment`);
    anything else (a notebook cell, a script) is keyed by its source."""
    module = getattr(obj, "__module__", None) or ""
    top = module.partition(".")[0]
    return top == _CORE or top in sys.stdlib_module_names or top in _installed()


@functools.cache
def _installed() -> frozenset[str]:
    return frozenset(importlib.metadata.packages_distributions())


def _code_fingerprint(obj, seen: dict[int, object]) -> object:
    """A function or class defined outside an importable module (a notebook cell): its source, and the
    fingerprint of each value its code reads."""
    if id(obj) in seen:  # recursion (a function that calls itself, two that call each other)
        return ("seen", obj.__qualname__)
    seen[id(obj)] = obj
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError) as err:
        raise Unkeyable(f"the source of {obj.__qualname__} is not available ({err})") from None
    if isinstance(obj, type):
        return ("class", source)
    glob = obj.__globals__
    read = sorted(n for n in _names_read(obj.__code__) if n in glob)
    cells = [c.cell_contents for c in obj.__closure__ or ()]
    return (
        "function",
        source,
        tuple((n, _fingerprint(glob[n], seen)) for n in read),
        _fingerprint(obj.__defaults__, seen),
        _fingerprint(obj.__kwdefaults__, seen),
        _fingerprint(cells, seen),
    )


def function_key(fn: Callable) -> str:
    """The part of every unit's key that `fn` contributes (raises `Unkeyable`)."""
    return joblib.hash((environment(), core_code(), _fingerprint(fn, {})))


def unit_key(fn_key: str, unit: tuple) -> str:
    """The key of one unit of `fn` (whose `function_key` is `fn_key`)."""
    try:
        return joblib.hash((fn_key, unit))
    except Exception as err:
        raise Unkeyable(f"a unit's arguments cannot be hashed ({err})") from None


def _path(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.pkl"


MISSING = object()


def load(root: Path, key: str):
    """The stored result of the unit `key`, or MISSING."""
    path = _path(root, key)
    if not path.exists():
        return MISSING
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as err:  # truncated or unreadable: compute it again
        warnings.warn(f"results cache entry {path.name} is unreadable ({err}); recomputing it", stacklevel=2)
        return MISSING


def save(root: Path, key: str, result) -> None:
    """Store a unit's result atomically (results that pickle refuses are not stored)."""
    try:
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return
    paths.atomic_write(_path(root, key), lambda tmp: tmp.write_bytes(data))
