"""Run the independent units of an analysis (one concept x split, one concept x layer) on worker
processes, so a notebook uses every core the machine gives it.

Results come back in input order and every unit seeds its own estimators, so the numbers do not
depend on the number of workers (tests/test_parallel.py checks 1 vs 2). Processes, not threads:
scikit-learn's liblinear releases the GIL but draws from one process-wide random generator, so two
threads fitting at once would make results depend on timing. joblib's loky workers are reused
between calls and run their BLAS on one thread each. Units must not need the model: pass them
arrays (the model stays in the notebook's process, which runs the forward passes).

On a Dask cluster: when $SPARSEPROBE_SCHEDULER names a `dask.distributed` scheduler (e.g.
tcp://host:8786), the units run on its workers instead (the `cluster` extra), each under one BLAS
thread as on a local worker, results again in input order, so the numbers equal the local run's
(tests/test_cluster.py). Workers need this package and the same versions of its dependencies.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from joblib import Parallel, delayed

from . import progress, results

ENV_JOBS = "SPARSEPROBE_JOBS"
ENV_SCHEDULER = "SPARSEPROBE_SCHEDULER"
_starting = None  # results of start_workers' warm-up units, collected by the next map_units


def n_workers() -> int:
    """Worker processes to use: $SPARSEPROBE_JOBS if set, else the CPUs this process may run on."""
    value = os.environ.get(ENV_JOBS, "").strip()
    if not value:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{ENV_JOBS}={value!r}; set it to a whole number of worker processes >= 1 (1 = no workers)")
    return int(value)


def _import_core() -> None:
    """A unit that only imports the core, so a worker's start-up (about 3 s) is paid early."""
    from . import ablation, prober, rankers, theory  # noqa: F401


def scheduler() -> str:
    """The Dask scheduler's address from $SPARSEPROBE_SCHEDULER, or "" (run locally)."""
    return os.environ.get(ENV_SCHEDULER, "").strip()


def start_workers() -> None:
    """Start the worker processes in the background, e.g. while the notebook loads its model (a Dask
    cluster's workers are already running)."""
    global _starting
    if not scheduler() and n_workers() > 1 and _starting is None:
        _starting = Parallel(n_jobs=n_workers(), return_as="generator_unordered")(
            delayed(_import_core)() for _ in range(n_workers())
        )


def _one_blas_thread(fn: Callable, *unit):
    """`fn(*unit)` with BLAS on one thread, as joblib's local workers run it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return fn(*unit)


def _map_on_cluster(address: str, fn: Callable, units: list[tuple], desc: str) -> list:
    """``[fn(*unit) for unit in units]`` on the workers of the Dask scheduler at `address`, in input order."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RuntimeError(
            f"{ENV_SCHEDULER}={address} but dask.distributed is not installed; pip install -e '.[cluster]' "
            f"(or unset {ENV_SCHEDULER} to run locally)"
        ) from None
    with Client(address, set_as_default=False) as client:
        # Arrays go to the workers once each, by identity (a layer's W_out shared by many units is sent
        # once), rather than inside every task, where Dask repeats them and warns about large graphs.
        sent: dict[int, object] = {}

        def ref(x):
            if not isinstance(x, np.ndarray):
                return x
            if id(x) not in sent:
                sent[id(x)] = client.scatter(x, hash=False)
            return sent[id(x)]

        # pure=False: no hashing of the arguments to name a task; every unit runs
        futures = [client.submit(_one_blas_thread, fn, *map(ref, unit), pure=False) for unit in units]
        if desc:
            for _ in progress.bar(as_completed(futures, loop=client.loop), desc, total=len(futures)):
                pass
        return client.gather(futures)


def map_units(fn: Callable, units: Iterable[tuple], desc: str = "") -> list:
    """``[fn(*unit) for unit in units]``, computed on ``n_workers()`` processes, or on the Dask cluster of
    $SPARSEPROBE_SCHEDULER when it is set; results in input order. Units found in the results cache
    (`results`: same function, arguments, code and libraries) are read from it instead, the others
    computed and stored. The units' warnings (in a worker or here) are counted on the terminal, not raised
    in the caller, so a notebook prints the same whether its units were computed or read back."""
    global _starting
    if _starting is not None:
        list(_starting)  # the warm-up has finished (or finishes now); its workers are reused below
        _starting = None
    units = list(units)
    keys, root = [None] * len(units), results.folder()
    label = desc or getattr(fn, "__name__", "units")
    if root is not None and units:
        try:
            fn_key = results.function_key(fn)
            keys = [results.unit_key(fn_key, unit) for unit in units]
        except results.Unkeyable as why:
            progress.say(f"{label}: not cached, {why}")
    out = [results.MISSING if k is None else results.load(root, k) for k in keys]
    todo = [i for i, r in enumerate(out) if r is results.MISSING]
    if len(todo) < len(units):
        progress.say(
            f"{label}: {len(units) - len(todo)} of {len(units)} units read from the results cache ({root}), "
            f"{len(todo)} to compute"
        )
    store = root is not None and not scheduler()  # a cluster's workers may run other library versions
    computed = _compute(functools.partial(results.capture, fn), [units[i] for i in todo], desc)
    try:
        for i, entry in zip(todo, computed):
            out[i] = entry
            if store and keys[i] is not None:
                results.save(root, keys[i], *entry)  # as each unit finishes: a killed run keeps what it computed
    finally:  # the units' warnings, on the terminal (also when a unit failed: those that finished)
        lines = results.warning_summary([e[1] for e in out if e is not results.MISSING])
        if lines:
            progress.say(f"{label}: warnings raised by the units:\n  " + "\n  ".join(lines))
    return [result for result, _ in out]


def _compute(fn: Callable, units: list[tuple], desc: str) -> Iterator:
    """``fn(*unit)`` for each unit, in input order, on the cluster, the local workers, or in this process."""
    if not units:
        return iter(())
    if scheduler():
        return iter(_map_on_cluster(scheduler(), fn, units, desc))
    n_jobs = min(n_workers(), len(units))

    def shown(it):
        return progress.bar(it, desc, total=len(units)) if desc else it

    if n_jobs <= 1:
        return (fn(*unit) for unit in shown(units))
    return iter(shown(Parallel(n_jobs=n_jobs, return_as="generator")(delayed(fn)(*unit) for unit in units)))
