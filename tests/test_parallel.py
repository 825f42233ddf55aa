"""parallel.map_units: same results, in the same order, with and without worker processes."""

import sys

import numpy as np
import pytest

from sparseprobe_core import parallel, prober


def _fit_unit(A, y, seed):
    """A unit as the notebooks write them: a seeded solver on arrays, returning arrays."""
    p = prober.SparseProber(weighting="none", k=5, seed=seed).fit(A, y)
    return p.coef_, p.ranking_[:5]


def _units():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    units = []
    for seed in range(4):
        A = rng.normal(size=(120, 40))
        A[:, seed] += 1.5 * y  # a different informative neuron per unit, so results differ by unit
        units.append((A, y, seed))
    return units


def test_workers_give_the_serial_results_in_order(monkeypatch):
    units = _units()
    monkeypatch.setenv(parallel.ENV_JOBS, "1")
    serial = parallel.map_units(_fit_unit, units)
    monkeypatch.setenv(parallel.ENV_JOBS, "2")
    parallel.start_workers()
    pooled = parallel.map_units(_fit_unit, units)
    assert [r[1][0] for r in serial] == [0, 1, 2, 3]  # each unit found its own neuron, in input order
    for (c1, r1), (c2, r2) in zip(serial, pooled):
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_worker_count_is_a_one_line_error(monkeypatch, value):
    monkeypatch.setenv(parallel.ENV_JOBS, value)
    with pytest.raises(ValueError, match="SPARSEPROBE_JOBS") as err:
        parallel.n_workers()
    assert "\n" not in str(err.value)


def test_a_scheduler_without_distributed_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv(parallel.ENV_SCHEDULER, "tcp://127.0.0.1:8786")
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the `cluster` extra were not installed
    with pytest.raises(RuntimeError, match=r"\[cluster\]") as err:
        parallel.map_units(_fit_unit, _units()[:1])
    assert "\n" not in str(err.value)
