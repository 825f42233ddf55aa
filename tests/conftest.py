"""Shared fixtures. The real model is loaded once per test session (about 20 s)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def bridge():
    """The embedded SmolLM2-135M as a TransformerBridge."""
    from sparseprobe_core.models import load_model

    return load_model()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test writes activations to its own cache folder, never the repository's."""
    monkeypatch.setenv("SPARSEPROBE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("SPARSEPROBE_OUT_DIR", str(tmp_path_factory.mktemp("figures")))


@pytest.fixture
def rng():
    """A seeded generator for synthetic data."""
    return np.random.default_rng(0)
