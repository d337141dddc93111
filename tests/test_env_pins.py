"""The conda env file used on clusters pins exactly what pyproject.toml pins."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(dep.split("==") for dep in deps)


def _env_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "workflow/envs/pipeline.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return dict(dep.split("==") for dep in pip)


def test_every_dependency_is_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all("==" in dep for dep in deps), [d for d in deps if "==" not in d]


def test_conda_env_pins_equal_pyproject():
    assert _env_pins() == _pyproject_pins()


def test_dvc_reads_yaml_with_the_c_parser():
    """ruamel.yaml.clib is installed and taken: DVC's safe loader (dvc.yaml, dvc.lock, params.yaml
    once per stage) is then the libyaml parser, which keeps the no-op `dvc status` within budget."""
    from dvc.utils.serialize._yaml import parse_yaml
    from ruamel.yaml import YAML
    from ruamel.yaml.main import CParser

    assert CParser is not None, "ruamel.yaml.clib is missing: pip install -e . (pyproject.toml pins it)"
    assert YAML(typ="safe").Parser is CParser
    assert parse_yaml("a: [1, {b: x}]\n", "t.yaml") == {"a": [1, {"b": "x"}]}
