"""environment.yml (conda) and pyproject.toml (pip) must describe the same environment."""

import re
import tomllib

import yaml

from sparseprobe_core import paths


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ ]", spec, maxsplit=1)[0].strip().lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pip_specs = set(project["dependencies"]).union(*extras.values())
    env = yaml.safe_load((paths.ROOT / "environment.yml").read_text())
    assert env["name"] == "sparseprobe" and env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str) and _name(d) not in ("python", "pip")]
    conda = [re.sub(r"\s+#.*", "", d) for d in conda]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(conda) | set(pip_section) == pip_specs


def test_every_dependency_is_pinned_or_bounded():
    project = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for spec in project["dependencies"] + [spec for specs in extras.values() for spec in specs]:
        assert "==" in spec or "<" in spec, f"{spec} has no upper bound"
    assert "torch==2.13.0" in project["dependencies"], "torch must stay pinned to the CPU build on disk"
