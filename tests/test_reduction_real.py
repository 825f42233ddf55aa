"""The reduction identity on a real layer of the embedded model: an output-space probe fitted on
hook_mlp_out scores held-out rows exactly as the neuron-space probe beta = W_out w does on
mlp.hook_post, up to float32 rounding (the two sides come from different float32 kernels)."""

import numpy as np
import pytest

from sparseprobe_core import activations, concepts, models, theory

LAYER = 10  # a middle layer: early enough to stop the forward pass soon, deep enough to be non-trivial
TOLERANCE = 1e-4  # float32 data: agreement to about 1e-6 relative is expected; 1e-4 leaves a margin


@pytest.mark.parametrize("concept", ["python_number"])
def test_output_probe_score_equals_neuron_score_on_real_layer(bridge, concept):
    c = concepts.subsample(concepts.load_concept(concept), 10, seed=0)  # 20 texts
    A, M = activations.layer_activations(bridge, models.DEFAULT_MODEL, c.texts, [LAYER])[LAYER]
    assert A.dtype == np.float32 and M.dtype == np.float32
    W_out, b_out = models.writing_vectors(bridge, LAYER)
    split = concepts.make_split(c.labels, seed=0, test_size=0.4)

    w, c0 = theory.fit_output_probe(M[split.train], c.labels[split.train])
    s_out = M[split.test] @ w + c0
    s_neuron = theory.output_to_neuron_score(A[split.test], W_out, b_out, w, c0)
    rel = theory.max_relative_difference(s_out, s_neuron)
    print(f"layer {LAYER}, {concept}: max relative difference {rel:.2e} on {len(split.test)} held-out rows")
    assert rel < TOLERANCE, f"output-space and neuron-space scores differ by {rel:.2e} (relative) at layer {LAYER}"

    # the same score as a sum of per-neuron contributions c_i = a_i beta_i plus the constant w . b_out + c
    contributions = theory.neuron_contributions(A[split.test], theory.effective_neuron_weights(W_out, w))
    assert theory.max_relative_difference(s_out, contributions.sum(axis=1) + w @ b_out + c0) < TOLERANCE
