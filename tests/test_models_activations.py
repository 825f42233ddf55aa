"""Every embedded model loads offline, W_out is oriented as m = a W_out + b_out at the MLP-output hook,
the collection path equals the bridge's own forward without computing logits, batching never
changes the probed token's activations, and the cache survives corruption. Tests that take `bridge`
run once per embedded model."""

import shutil

import numpy as np
import pytest
import torch

from sparseprobe_core import activations, models, theory

# short and long, prose and code; shared with test_devices.py
TEXTS = [
    "The capital of France is",
    "x",
    "def f(x):\n    return 'a string with words",
    "Bonjour, je suis très content de vous voir aujourd'hui, mon ami",
    "for i in range(10",
]


def first_middle_last(bridge) -> list[int]:
    """First, middle and last layer (also used by test_devices.py)."""
    n = bridge.cfg.n_layers
    return [0, n // 2, n - 1]


def test_model_sizes_agree_with_the_hf_config(bridge, model_name):
    info = models.model_info(bridge, model_name)
    hf = bridge.original_model.config
    assert (info.n_layers, info.d_mlp, info.d_model) == (hf.num_hidden_layers, hf.intermediate_size, hf.hidden_size)
    w, b = models.writing_vectors(bridge, 3)
    assert w.shape == (info.d_mlp, info.d_model) and b.shape == (info.d_model,)
    # the sizes the CLI checks --layer and --k against before loading, read from the copy's config alone
    assert models.copy_sizes(model_name) == info and models.copy_sizes("no-org/a-hub-model") is None


@pytest.mark.parametrize("which", [0, 1, 2])
def test_w_out_reproduces_mlp_out(bridge, model_name, which):
    layer = first_middle_last(bridge)[which]
    a, m = activations.layer_activations(bridge, model_name, TEXTS, [layer])[layer]
    w, b = models.writing_vectors(bridge, layer)
    assert np.abs(a @ w + b - m).max() < 1e-4 * max(1.0, np.abs(m).max())


def test_post_norm_output_is_the_normalised_mlp_out(bridge, model_name):
    """hook_mlp_out is what the block writes: m itself (SmolLM2), or (1 + g) m / rms(m) (Gemma 3), where
    the identity with W_out fails."""
    layer = first_middle_last(bridge)[1]
    a, m, p = activations.post_norm_activations(bridge, model_name, TEXTS, [layer])[layer]
    norm = models.mlp_post_norm(bridge, layer)
    if norm is None:
        np.testing.assert_array_equal(p, m)
        return
    scale, eps = norm
    assert theory.max_relative_difference(p.ravel(), theory.post_norm(m, scale, eps).ravel()) < 1e-5
    w, b = models.writing_vectors(bridge, layer)
    assert np.abs(a @ w + b - p).max() > 0.5 * np.abs(p).max()  # the reduction does not hold after the norm
    gain = theory.post_norm_gain(m, eps)
    assert np.all(gain > 0) and np.ptp(gain) > 0.1 * gain.mean()  # a per-text factor, not a constant


def test_collection_equals_the_bridge_forward_and_computes_no_logits(bridge, device, request):
    """run_last_token runs the decoder without its LM head, even for the last block's residual, and
    gives exactly the bridge's run_with_cache values (on the CPU; within float32 rounding elsewhere)."""
    last = bridge.cfg.n_layers - 1
    hooks = [
        activations.HIDDEN.format(layer=0),
        activations.MLP_OUT.format(layer=last),
        activations.MLP_POST_NORM.format(layer=last),
        activations.RESID_POST.format(layer=last),
    ]
    ids = activations.tokenize_last(bridge, TEXTS, 128)
    inputs = {
        k: v.to(models.input_device(bridge)) for k, v in activations.left_pad(ids, activations.pad_id(bridge)).items()
    }
    with torch.no_grad():
        _, cache = bridge.run_with_cache(
            inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            position_ids=inputs["position_ids"],
            names_filter=lambda n: n in hooks,
        )
    request.getfixturevalue("no_logits")  # from here on, the LM head must not run
    got = activations.run_last_token(bridge, ids, hooks, batch_size=len(ids))
    for h in hooks:
        want = models.to_numpy(cache[h][:, -1])
        assert got[h].dtype == np.float32
        np.testing.assert_allclose(
            got[h], want, rtol=0, atol=0 if device == "cpu" else 1e-5 * np.abs(want).max(), err_msg=h
        )


def test_unknown_hook_is_one_line(bridge):
    ids = activations.tokenize_last(bridge, TEXTS[:1], 16)
    with pytest.raises(Exception) as err:
        activations.run_last_token(bridge, ids, ["blocks.0.hook_no_such_thing"])
    assert "\n" not in str(err.value)


def test_batched_equals_unbatched(bridge):
    hook = activations.HIDDEN.format(layer=first_middle_last(bridge)[1])
    ids = activations.tokenize_last(bridge, TEXTS, 128)
    batched = activations.run_last_token(bridge, ids, [hook], batch_size=5)[hook]
    single = np.stack([activations.run_last_token(bridge, [x], [hook])[hook][0] for x in ids])
    assert np.abs(batched - single).max() < 1e-3 * max(1.0, np.abs(single).max())
    assert not np.allclose(batched[0], batched[1])


def test_long_text_keeps_last_tokens_with_warning(bridge):
    with pytest.warns(UserWarning, match="kept their last 8 tokens"):
        ids = activations.tokenize_last(bridge, ["one two three four five six seven eight nine ten eleven"], 8)
    assert len(ids[0]) == 8


def test_cache_hit_and_corruption_recovery(bridge, model_name, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEPROBE_CACHE", str(tmp_path))
    first = activations.layer_activations(bridge, model_name, TEXTS, [2])[2][0]
    entries = sorted(tmp_path.glob("*" + activations.ENTRY_SUFFIX))
    assert len(entries) == 2 and not list(tmp_path.glob(".*"))  # no partial store, lock or temporary left
    hit = activations.layer_activations(bridge, model_name, TEXTS, [2])[2][0]
    np.testing.assert_array_equal(hit, first)
    (entries[0] / "acts.npy").write_bytes((entries[0] / "acts.npy").read_bytes()[:100])
    shutil.rmtree(entries[1])
    with pytest.warns(UserWarning, match="corrupted"):
        again = activations.layer_activations(bridge, model_name, TEXTS, [2])[2][0]
    np.testing.assert_array_equal(again, first)  # the same batches: the same numbers


def test_also_collects_more_hooks_in_the_same_pass(bridge, model_name, tmp_path, monkeypatch):
    """`layer_activations(also=...)` stores the extra hooks from its own forward pass: a later
    `post_norm_activations` of those layers reads everything from the cache and runs no pass."""
    monkeypatch.setenv("SPARSEPROBE_CACHE", str(tmp_path))
    post = activations.MLP_POST_NORM.format(layer=1)
    final = activations.RESID_POST.format(layer=bridge.cfg.n_layers - 1)
    got = activations.layer_activations(bridge, model_name, TEXTS, [1, 2], also=[post, final])
    assert set(got) == {1, 2}  # the extra hooks are not returned
    computed = activations.collect(bridge, model_name, TEXTS, [post], use_cache=False)[post]

    def no_pass(*args, **kwargs):
        raise AssertionError("a forward pass ran for hooks that the first call collected")

    monkeypatch.setattr(activations, "iter_last_token", no_pass)
    a, m, p = activations.post_norm_activations(bridge, model_name, TEXTS, [1])[1]
    assert activations.layer_activations(bridge, model_name, TEXTS, [2], final_resid=True)["final"].shape == (
        len(TEXTS),
        bridge.cfg.d_model,
    )
    np.testing.assert_array_equal(m, got[1][1])
    np.testing.assert_array_equal(a, got[1][0])
    np.testing.assert_allclose(p, computed, rtol=1e-5, atol=1e-6)


def test_cache_entries_are_keyed_by_hook_name(bridge, model_name, tmp_path, monkeypatch):
    """An entry written under the old MLP-output hook (hook_mlp_out) is never read as MLP_OUT
    (mlp.hook_out): on Gemma 3 they are different tensors. It stays valid for MLP_POST_NORM."""
    monkeypatch.setenv("SPARSEPROBE_CACHE", str(tmp_path))
    ids = activations.tokenize_last(bridge, TEXTS, 128)
    hooks = [activations.MLP_POST_NORM.format(layer=1), activations.MLP_OUT.format(layer=1)]
    post, out = activations.store_entries(models.cache_tag(bridge, model_name), ids, hooks).values()
    assert post != out
    np.save(tmp_path / "planted.npy", np.zeros((len(TEXTS), bridge.cfg.d_model), np.float32))
    activations._publish(post, tmp_path / "planted.npy", hooks[0])
    _, m, p = activations.post_norm_activations(bridge, model_name, TEXTS, [1])[1]
    assert not np.any(p) and np.any(m)  # the planted entry is read for hook_mlp_out only


def test_unknown_model_offline_is_one_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable when first imported; once an earlier test has imported it, only its
    # constant makes this process offline (else the hub is asked, with five retries: about 23 s here)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(models.ModelLoadError, match="cannot be fetched offline") as err:
        models.load_model("no-such-org/no-such-model-xyz")
    assert "\n" not in str(err.value) and "gemma3-270m" in str(err.value)


def test_layer_out_of_range():
    info = models.ModelInfo("m", 4, 8, 2)
    with pytest.raises(ValueError, match=r"layers 0\.\.3"):
        models.check_layer(info, 4)
