"""environment.yml and pyproject.toml name the same dependencies with the same lower bounds."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # where conda-forge spells a package differently


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    have: dict[str, str] = {}
    pip_section: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        name, spec = _split(dep.replace("=", "==", 1) if re.match(r"^[\w-]+=[^=]", dep) else dep)
        have[name] = spec
    for req in pip_section:
        if not req.startswith("-e"):
            have.update([_split(req)])
    assert "-e .[dev]" in pip_section
    have.pop("python", None)
    have.pop("pip", None)
    assert set(have) == set(wanted), set(have) ^ set(wanted)
    for name, spec in wanted.items():
        assert have[name] == spec, f"{name}: pyproject {spec!r} vs environment.yml {have[name]!r}"
    for name in ("torch", "torchvision", "timm"):  # from PyPI in both install paths
        assert any(_split(r)[0] == name for r in pip_section)


def test_pyproject_names_the_package_explicitly():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["probekit*"]
