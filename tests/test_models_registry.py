"""The registry of embedded models: one frozen entry per model, installed by run_all.sh, documented
in the README, and each GGUF file found (or assembled) offline from its packages."""

import dataclasses
import re

import pytest

from sparseprobe_core import models, paths


def _no_deps() -> list[str]:
    """The requirement specifiers of run_all.sh's NO_DEPS variable."""
    match = re.search(r'^NO_DEPS="([^"]*)"', (paths.ROOT / "run_all.sh").read_text(), re.MULTILINE)
    assert match, 'run_all.sh has no NO_DEPS="..." line'
    return match.group(1).split()


def test_registry_entries_are_frozen_and_pinned():
    assert models.DEFAULT_MODEL == "smollm2-135m" and models.DEFAULT_MODEL in models.EMBEDDED
    for name, model in models.EMBEDDED.items():
        assert model.name == name and model.licence and model.file.endswith(".gguf") and model.size > 0
        assert all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", p) for p in model.packages), model.packages
        with pytest.raises(dataclasses.FrozenInstanceError):
            model.name = "other"  # type: ignore[misc]


def test_run_all_installs_every_embedded_model_pinned():
    no_deps = _no_deps()
    for model in models.EMBEDDED.values():
        missing = set(model.packages) - set(no_deps)
        assert not missing, f"run_all.sh's NO_DEPS lacks {sorted(missing)} (model {model.name})"


def test_readme_lists_every_embedded_model():
    readme = (paths.ROOT / "README.md").read_text()
    for model in models.EMBEDDED.values():
        assert f"`{model.name}`" in readme and model.packages[0].split("==")[0] in readme, model.name


@pytest.mark.parametrize("name", list(models.EMBEDDED))
def test_gguf_file_is_found_offline(name, tmp_path):
    """The file is in its package, or assembled from the chunk packages (sha256 checked by the glue
    package) into the given folder without leaving a partial file."""
    path = models.embedded_model_path(name, workdir=tmp_path)
    assert path.is_file() and path.stat().st_size == models.EMBEDDED[name].size
    assert not list(tmp_path.glob(".*.part"))
