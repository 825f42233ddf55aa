"""The reduction identity on a real middle layer of each embedded model: an output-space probe fitted
on the MLP output (mlp.hook_out) scores held-out rows exactly as the neuron-space probe beta = W_out w
does on mlp.hook_post, up to float32 rounding (the two sides come from different float32 kernels).
On a post-norm model (Gemma 3) it also holds for what the block writes, up to the per-example gain."""

import numpy as np
import pytest

from sparseprobe_core import activations, concepts, models, theory

TOLERANCE = 1e-4  # float32 data: agreement to about 1e-6 relative is expected; 1e-4 leaves a margin


def _layer(bridge) -> int:
    """A middle layer: early enough to stop the forward pass soon, deep enough to be non-trivial."""
    return bridge.cfg.n_layers // 3


@pytest.mark.parametrize("concept", ["python_number"])
def test_output_probe_score_equals_neuron_score_on_real_layer(bridge, model_name, concept):
    layer = _layer(bridge)
    c = concepts.subsample(concepts.load_concept(concept), 10, seed=0)  # 20 texts
    A, M = activations.layer_activations(bridge, model_name, c.texts, [layer])[layer]
    assert A.dtype == np.float32 and M.dtype == np.float32
    W_out, b_out = models.writing_vectors(bridge, layer)
    split = concepts.make_split(c.labels, seed=0, test_size=0.4)

    w, c0 = theory.fit_output_probe(M[split.train], c.labels[split.train])
    s_out = M[split.test] @ w + c0
    s_neuron = theory.output_to_neuron_score(A[split.test], W_out, b_out, w, c0)
    rel = theory.max_relative_difference(s_out, s_neuron)
    print(f"{model_name} layer {layer}, {concept}: max relative difference {rel:.2e} on {len(split.test)} test rows")
    assert rel < TOLERANCE, f"output-space and neuron-space scores differ by {rel:.2e} (relative) at layer {layer}"

    # the same score as a sum of per-neuron contributions c_i = a_i beta_i plus the constant w . b_out + c
    contributions = theory.neuron_contributions(A[split.test], theory.effective_neuron_weights(W_out, w))
    assert theory.max_relative_difference(s_out, contributions.sum(axis=1) + w @ b_out + c0) < TOLERANCE


def test_post_norm_reduction_on_real_layer(bridge, model_name):
    """Gemma 3: a probe on what the block writes is r(x) (a . beta^g + const) + c, exactly."""
    layer = _layer(bridge)
    norm = models.mlp_post_norm(bridge, layer)
    if norm is None:
        pytest.skip(f"{model_name} adds its MLP output to the residual without a norm")
    c = concepts.subsample(concepts.load_concept("python_number"), 20, seed=0)  # 40 texts
    A, M, P = activations.post_norm_activations(bridge, model_name, c.texts, [layer])[layer]
    W_out, b_out = models.writing_vectors(bridge, layer)
    split = concepts.make_split(c.labels, seed=0, test_size=0.5)
    r = theory.compare_post_norm_probe(A, M, P, c.labels, split.train, split.test, W_out, b_out, *norm)
    print(f"{model_name} layer {layer}: {r}")
    assert r.identity_pre < TOLERANCE and r.identity_post < TOLERANCE
    assert np.all(r.gain > 0) and r.gain.max() > 1.1 * r.gain.min()
