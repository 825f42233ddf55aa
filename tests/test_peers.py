"""The external peers (sparseprobe_core.peers): one signature, their own code, and a clear error."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from test_rankers import CONCEPT, planted

from sparseprobe_core import peers
from sparseprobe_core.rankers import rank


@pytest.fixture(scope="module")
def ctx():
    return planted()


def test_neurox_probeless_matches_ours(ctx):
    pytest.importorskip("neurox.interpretation.probeless")
    theirs = peers.neurox_probeless(ctx.A, ctx.y, seed=0)
    assert spearmanr(np.argsort(theirs), np.argsort(rank("probeless", ctx))).statistic > 0.999


def test_neurox_linear_probe_finds_concept_neurons(ctx):
    pytest.importorskip("neurox.interpretation.linear_probe")
    order = peers.neurox_linear_probe(ctx.A, ctx.y, seed=0)
    assert np.array_equal(np.sort(order), np.arange(ctx.A.shape[1]))
    assert set(order[: len(CONCEPT)]) == set(CONCEPT)


def test_transformer_lens_sparse_probe_order(ctx):
    pytest.importorskip("transformer_lens.tools.analysis.sparse_probing")
    order = peers.tl_sparse_probe(ctx.A, ctx.y, seed=0)
    assert np.array_equal(np.sort(order), np.arange(ctx.A.shape[1]))
    assert set(order[: len(CONCEPT)]) == set(CONCEPT)


def test_every_peer_has_one_signature(ctx):
    for name, peer in peers.PEERS.items():
        order = peer(ctx.A, ctx.y, seed=1)
        assert np.array_equal(np.sort(order), np.arange(ctx.A.shape[1])), name


def test_a_missing_peer_is_an_error_when_required(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_neurox(name, *args, **kwargs):
        if name.startswith("neurox"):
            raise ImportError("No module named 'neurox'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_neurox)
    ok, why = peers.available(require=False)
    assert ok == ["tl_sparse_probe"] and set(why) == {"neurox_probeless", "neurox_linear_probe"}
    assert "pip install --no-deps neurox==1.0.9" in why["neurox_probeless"]
    with pytest.raises(peers.PeerUnavailable, match="neurox_probeless: NeuroX cannot be imported"):
        peers.available(require=True)
