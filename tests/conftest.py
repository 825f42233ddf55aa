"""Shared fixtures. Each embedded model is loaded once per test session (about 5-20 s each from its
cached copy). Tests that use `bridge` run once per model of the registry and are marked `model`
automatically, so `pytest -m "not model"` is the fast loop; tests that load a model in a subprocess
carry the mark explicitly.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from sparseprobe_core.models import EMBEDDED

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist each worker runs torch's and BLAS's threads on its share of the cores, and so do
    the processes its tests start (run_all.sh's notebooks, a killed collection: their threads, not their
    worker processes). Left at their defaults, every worker runs one busy-waiting OpenMP thread per core:
    on the 2-core machine, 2 workers x 2 threads took the unit tests from 3 min 34 s to 7 min 18 s (the same
    tests, `pytest -n 2 --dist loadfile` with and without OMP_NUM_THREADS=1), one test from 17 s to 154 s.
    A serial run, and a user's own thread settings, are left alone."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1 or any(v in os.environ for v in _THREAD_VARIABLES):
        return
    import torch
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    # read by the processes tests start and by the libraries this worker loads later (scipy's, sklearn's)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    threadpool_limits(threads)  # the BLAS and OpenMP already loaded (numpy's, torch's)
    torch.set_num_threads(threads)


_share_the_cores_between_workers()
# Tests compute every unit (the results cache would replay a fit that a test means to exercise); the
# kernels nbval starts and the run_all.sh runs tests start inherit this. tests/test_results.py turns it on.
os.environ.setdefault("SPARSEPROBE_RESULTS", "off")


def pytest_addoption(parser):
    """`--device cuda` runs the model tests (identity, equivalence, ...) with the models on that device."""
    parser.addoption("--device", default="cpu", help="torch device of the models under test (default: cpu)")


@pytest.fixture(scope="session")
def device(request) -> str:
    """The device the `bridge` models run on (pytest --device; cpu unless told)."""
    return request.config.getoption("--device")


@pytest.fixture(scope="session", params=list(EMBEDDED))
def model_name(request) -> str:
    """The name of an embedded model (`models.EMBEDDED`), as notebooks and the CLI take it."""
    return request.param


@functools.cache
def _loaded(model_name: str, device: str):
    from sparseprobe_core.models import load_model

    return load_model(model_name, device=device)


@pytest.fixture(scope="session")
def bridge(model_name, device):
    """The embedded model `model_name` as a TransformerBridge, on `device`: loaded once per test process.
    pytest tears a parametrized session fixture down whenever the next test wants the other parameter, which
    the test files do in turn: cached here, each model loads once, not once per file (five times each in a
    serial run, 3-9 s a load)."""
    return _loaded(model_name, device)


@pytest.fixture
def no_logits(bridge):
    """While a test runs, any call of the model's LM head fails: only the residual may be computed."""

    def fail(module, args):
        raise AssertionError("the LM head ran: logits were computed that nothing reads")

    handle = bridge.original_model.get_output_embeddings().register_forward_pre_hook(fail)
    yield
    handle.remove()


# The longest files, longest first (summed test times of `./run_tests.sh --durations=0` on the 2-core
# machine: about 116, 98, 54, 30 and 22 s of some 398 s; test_new_concept.py now runs Gemma 3, 135 s):
# dealt first, none of them runs alone at the end.
# run_tests.sh passes --no-loadscope-reorder: by default pytest-xdist deals files by their number of tests.
LONGEST_FIRST = ("test_new_concept.py", "test_cli.py", "test_ablation.py", "test_devices.py", "test_causal.py")


def pytest_collection_modifyitems(items):
    """A test that uses a loaded model is a `model` test (select with -m model, skip with -m 'not model').
    The longest test files go first: run_tests.sh deals whole files to two worker processes
    (pytest-xdist, --dist loadfile --no-loadscope-reorder) in collection order."""
    for item in items:
        if "bridge" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)
    first = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test writes activations to its own cache folder, never the repository's."""
    monkeypatch.setenv("SPARSEPROBE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("SPARSEPROBE_OUT_DIR", str(tmp_path_factory.mktemp("figures")))


@pytest.fixture
def rng():
    """A seeded generator for synthetic data."""
    return np.random.default_rng(0)
