"""The embedded model loads offline, W_out is oriented as m = a W_out + b_out, batching never changes
the probed token's activations, and the cache survives corruption."""

import numpy as np
import pytest

from sparseprobe_core import activations, models

TEXTS = [
    "The capital of France is",
    "x",
    "def f(x):\n    return 'a string with words",
    "Bonjour, je suis très content de vous voir aujourd'hui, mon ami",
    "for i in range(10",
]


def test_embedded_model_sizes(bridge):
    info = models.model_info(bridge, models.DEFAULT_MODEL)
    assert (info.n_layers, info.d_mlp, info.d_model) == (30, 1536, 576)
    w, b = models.writing_vectors(bridge, 3)
    assert w.shape == (1536, 576) and b.shape == (576,)


@pytest.mark.parametrize("layer", [0, 17, 29])
def test_w_out_reproduces_mlp_out(bridge, layer):
    acts = activations.layer_activations(bridge, "smollm2-135m", TEXTS, [layer])
    a, m = acts[layer]
    w, b = models.writing_vectors(bridge, layer)
    assert np.abs(a @ w + b - m).max() < 1e-4 * max(1.0, np.abs(m).max())


def test_batched_equals_unbatched(bridge):
    hook = activations.HIDDEN.format(layer=12)
    ids = activations.tokenize_last(bridge, TEXTS, 128)
    batched = activations.run_last_token(bridge, ids, [hook], batch_size=5)[hook]
    single = np.stack([activations.run_last_token(bridge, [x], [hook])[hook][0] for x in ids])
    assert np.abs(batched - single).max() < 1e-3
    assert not np.allclose(batched[0], batched[1])


def test_long_text_keeps_last_tokens_with_warning(bridge):
    with pytest.warns(UserWarning, match="kept their last 8 tokens"):
        ids = activations.tokenize_last(bridge, ["one two three four five six seven eight nine ten eleven"], 8)
    assert len(ids[0]) == 8


def test_cache_hit_and_corruption_recovery(bridge, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEPROBE_CACHE", str(tmp_path))
    first = activations.layer_activations(bridge, "smollm2-135m", TEXTS, [2])[2][0]
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 2 and not list(tmp_path.glob("*.tmp"))
    files[0].write_bytes(files[0].read_bytes()[:100])
    for f in files[1:]:
        f.unlink()
    with pytest.warns(UserWarning, match="corrupted"):
        again = activations.layer_activations(bridge, "smollm2-135m", TEXTS, [2])[2][0]
    np.testing.assert_allclose(again, first, atol=1e-5)


def test_unknown_model_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelLoadError, match="cannot be fetched offline") as err:
        models.load_model("no-such-org/no-such-model-xyz")
    assert "\n" not in str(err.value)


def test_layer_out_of_range():
    info = models.ModelInfo("m", 4, 8, 2)
    with pytest.raises(ValueError, match=r"layers 0\.\.3"):
        models.check_layer(info, 4)
