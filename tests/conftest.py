"""Shared fixtures. The real model is loaded once per test session (about 5 s from the cached copy).

Every test that uses the `bridge` fixture is marked `model` automatically, so `pytest -m "not model"`
is the fast loop; tests that load a model in a subprocess carry the mark explicitly.
"""

from __future__ import annotations

import numpy as np
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "bridge" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)


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
