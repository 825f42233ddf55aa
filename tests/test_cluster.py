"""parallel.map_units on a Dask cluster (a LocalCluster with two worker processes) gives the local run's
numbers, in input order. Needs the `cluster` extra (dask.distributed); skipped without it."""

import numpy as np
import pytest

from sparseprobe_core import parallel

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install -e '.[cluster]'); cluster path is not tested"
)

from test_parallel import _fit_unit, _units  # noqa: E402 (after the skip: the same units as the local test)


def test_cluster_gives_the_local_results_in_order(monkeypatch):
    units = _units()
    monkeypatch.delenv(parallel.ENV_SCHEDULER, raising=False)
    monkeypatch.setenv(parallel.ENV_JOBS, "2")
    local = parallel.map_units(_fit_unit, units)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv(parallel.ENV_SCHEDULER, cluster.scheduler_address)
        parallel.start_workers()  # nothing to start: the cluster's workers are running
        remote = parallel.map_units(_fit_unit, units, desc="units on the cluster")
        assert len(cluster.workers) == 2
    assert [r[1][0] for r in remote] == [0, 1, 2, 3]  # each unit found its own neuron, in input order
    for (c1, r1), (c2, r2) in zip(local, remote):
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(r1, r2)
