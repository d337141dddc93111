"""params.yaml is validated against the schema; every violation names its key."""

import copy
from pathlib import Path

import pytest
import yaml

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.params import load_schema, lookup, validate_params

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow/schemas/params.schema.yaml")


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _merged(*override_files: str) -> dict:
    from snakemake.utils import update_config

    config = _params()
    for name in override_files:
        update_config(config, yaml.safe_load((ROOT / name).read_text()))
    return config


@pytest.mark.parametrize("overrides", [(), ("config/full.yaml",), (".test/params.yaml",)])
def test_shipped_params_are_valid(overrides):
    validate_params(_merged(*overrides), SCHEMA)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("features.batch_size", "32", "features.batch_size: '32' is not of type 'integer'"),
        ("features.arch", "vgg16", "features.arch: 'vgg16' is not one of"),
        ("split.val_good", 0, "split.val_good: 0 is less than the minimum of 1"),
        ("generate.bad_fraction", 1.5, "generate.bad_fraction"),
        ("ingest.bad_images", "ignore", "ingest.bad_images"),
    ],
)
def test_wrong_value_names_the_key(key, value, expected):
    params = _params()
    section, name = key.split(".")
    params[section][name] = value
    with pytest.raises(PipelineError, match="params.yaml: ") as info:
        validate_params(params, SCHEMA)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_is_named():
    params = _params()
    params["features"]["batchsize"] = 32
    with pytest.raises(PipelineError, match=r"features\.batchsize: unknown key"):
        validate_params(params, SCHEMA)


def test_unknown_section_is_named():
    params = _params()
    params["featurez"] = {}
    with pytest.raises(PipelineError, match=r"featurez: unknown key"):
        validate_params(params, SCHEMA)


def test_missing_key_is_named():
    params = copy.deepcopy(_params())
    del params["split"]["seed"]
    with pytest.raises(PipelineError, match=r"split\.seed: missing key"):
        validate_params(params, SCHEMA)


def test_lookup_dotted_keys():
    params = _params()
    assert lookup(params, "classical.rf") == params["classical"]["rf"]
    with pytest.raises(PipelineError, match="classical.knn: missing key"):
        lookup(params, "classical.knn")


def test_a_valid_config_is_kept_and_any_other_is_checked(tmp_path, monkeypatch):
    """With ``cache_dir`` a config found valid is not checked again (every Snakemake start validates
    the same params.yaml); a changed config, valid or not, is."""
    from pipeline_lib import params as params_module

    cache = tmp_path / "valid"
    validate_params(_params(), SCHEMA, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1

    def no_check():
        raise AssertionError("validated again")

    monkeypatch.setattr(params_module, "_validator_class", no_check)
    validate_params(_params(), SCHEMA, cache_dir=cache)  # kept: the validator is not reached
    bad = _params()
    bad["features"]["batch_size"] = "32"
    with pytest.raises(AssertionError, match="validated again"):
        validate_params(bad, SCHEMA, cache_dir=cache)
    monkeypatch.undo()
    with pytest.raises(PipelineError, match="features.batch_size: '32' is not of type 'integer'"):
        validate_params(bad, SCHEMA, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1  # an invalid config leaves no marker
