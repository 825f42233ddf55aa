"""Models on another device or in another dtype (`models.load_model`), and a collection that resumes.

Run on the CPU here: bfloat16 on the CPU (slow but exact enough to check), and accelerate's device map
"auto" (on a CPU-only machine it places everything on the CPU, through the same loading path). On a GPU
machine the same tests run with the models there: `pytest --device cuda` (benchmarks/device_check.sh).
Whatever the device and dtype, analyses get CPU float32 activations and CPU float64 writing vectors."""

import numpy as np
import pytest
import torch
from test_models_activations import TEXTS, first_middle_last  # the same texts and layers as the CPU float32 tests

from sparseprobe_core import activations, config, models

# bfloat16 keeps 8 bits of mantissa; the activations moved by at most 3.6 % on SmolLM2 (relative Frobenius norm,
# layers 0, 15, 29) and 1.9 % on Gemma 3 (layers 0, 9, 17), the writing vectors by 0.13 % / 0.22 % of their
# largest entry (measured on these texts)
BF16_ACTS_RTOL = 0.08
BF16_WEIGHT_RTOL = 2**-8


@pytest.fixture(scope="module")
def f32(bridge):
    return bridge  # every test here runs on each embedded model (conftest's model_name)


@pytest.fixture(scope="module")
def bf16(model_name, device):
    return models.load_model(model_name, device=device, dtype="bfloat16")


@pytest.mark.model
def test_bfloat16_collects_cpu_float32_close_to_float32(model_name, f32, bf16, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEPROBE_CACHE", str(tmp_path))
    assert next(bf16.original_model.parameters()).dtype == torch.bfloat16 and bf16.cfg.dtype == torch.bfloat16
    want = activations.layer_activations(f32, model_name, TEXTS, first_middle_last(f32))
    got = activations.layer_activations(bf16, model_name, TEXTS, first_middle_last(f32))
    for layer in first_middle_last(f32):
        for x, y in zip(want[layer], got[layer]):
            assert type(y) is np.ndarray and y.dtype == np.float32
            assert np.linalg.norm(y - x) / np.linalg.norm(x) < BF16_ACTS_RTOL, layer
    # each precision has its own cache entries: bfloat16 rows are never read as float32 ones
    tags = {p.name.split("__")[0] for p in tmp_path.glob("*" + activations.ENTRY_SUFFIX)}
    assert tags == {models.cache_tag(b, model_name).replace("@", "-") for b in (f32, bf16)}


@pytest.mark.model
def test_writing_vectors_are_cpu_float64_whatever_the_dtype(model_name, f32, bf16):
    layer = first_middle_last(f32)[1]
    w32, _ = models.writing_vectors(f32, layer)
    w16, b16 = models.writing_vectors(bf16, layer)
    assert w16.dtype == b16.dtype == np.float64 and w16.shape == w32.shape
    assert np.abs(w16 - w32).max() < BF16_WEIGHT_RTOL * np.abs(w32).max()
    # the reduction m = a W_out + b_out holds in bfloat16 to bfloat16 rounding
    a, m = activations.layer_activations(bf16, model_name, TEXTS, [layer], use_cache=False)[layer]
    assert np.abs(a @ w16 + b16 - m).max() < 2e-2 * np.abs(m).max()


@pytest.mark.model
def test_a_device_map_load_gives_the_single_device_activations(model_name, f32, device):
    """device="auto": accelerate's device map over the visible GPUs (here: none, so the CPU), the path that
    splits a model too large for one device."""
    spread = models.load_model(model_name, device="auto")
    ids = activations.tokenize_last(f32, TEXTS, 128)
    hooks = [activations.HIDDEN.format(layer=3), activations.RESID_POST.format(layer=f32.cfg.n_layers - 1)]
    want = activations.run_last_token(f32, ids, hooks)
    got = activations.run_last_token(spread, ids, hooks)
    for h in hooks:
        tol = 0 if device == "cpu" and models.input_device(spread).type == "cpu" else 1e-4 * np.abs(want[h]).max()
        np.testing.assert_allclose(got[h], want[h], rtol=0, atol=tol, err_msg=h)
    np.testing.assert_array_equal(models.writing_vectors(spread, 3)[0], models.writing_vectors(f32, 3)[0])


@pytest.mark.model
def test_an_interrupted_collection_resumes_where_it_stopped(model_name, f32, tmp_path, monkeypatch):
    """Killed after two batches, a collection reruns only the batches it had not finished, and gives the
    numbers of an uninterrupted run exactly (the same batches), here memory-mapped (as large ones are)."""
    monkeypatch.setenv("SPARSEPROBE_CACHE", str(tmp_path))
    monkeypatch.setattr(activations, "CHECKPOINT_S", 0.0)  # every finished batch is listed at once
    monkeypatch.setattr(activations, "MAP_ABOVE_BYTES", 0)
    texts = [f"{t} {i}" for i in range(4) for t in TEXTS]  # 20 texts, 10 batches of 2
    hooks = [activations.HIDDEN.format(layer=1), activations.MLP_OUT.format(layer=2)]
    real, ran = activations.iter_last_token, []

    def interrupted(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield item

    def counted(*args, **kwargs):
        for item in real(*args, **kwargs):
            ran.append(item[0])
            yield item

    monkeypatch.setattr(activations, "iter_last_token", interrupted)
    with pytest.raises(KeyboardInterrupt):
        activations.collect(f32, model_name, texts, hooks, batch_size=2)
    assert len(list(tmp_path.glob(".*.partial"))) == 1 and not list(tmp_path.glob("*" + activations.ENTRY_SUFFIX))
    monkeypatch.setattr(activations, "iter_last_token", counted)
    got = activations.collect(f32, model_name, texts, hooks, batch_size=2)
    assert ran == list(range(2, 10))
    fresh = activations.collect(f32, model_name, texts, hooks, batch_size=2, use_cache=False)
    for h in hooks:
        assert isinstance(got[h].base, np.memmap) and not isinstance(fresh[h].base, np.memmap)
        np.testing.assert_array_equal(got[h], fresh[h], err_msg=h)
    assert not list(tmp_path.glob(".*"))  # the partial store and its lock are gone


def test_unknown_device_or_dtype_is_one_line():
    with pytest.raises(ValueError, match="unknown device 'gpu'") as err:
        models.load_model(models.DEFAULT_MODEL, device="gpu")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        models.load_model(models.DEFAULT_MODEL, dtype="float8")
    with pytest.raises(ValueError, match="unknown dtype 'half'"):
        config.make_config(profile="ci", dtype="half")
    if not torch.cuda.is_available():
        with pytest.raises(models.ModelLoadError, match="sees no CUDA GPU"):
            models.load_model(models.DEFAULT_MODEL, device="cuda")


def test_config_records_device_and_dtype():
    cfg = config.make_config(profile="ci", device="cuda", dtype="bfloat16")
    assert (cfg.device, cfg.dtype) == ("cuda", "bfloat16")
    assert cfg.record()["device"] == "cuda" and config.make_config(profile="ci").record()["dtype"] == "float32"
