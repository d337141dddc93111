"""Every stage's config type: built from its params.yaml section by StageConfig.from_params,
which names the key of an unknown or wrongly typed value; the real sections round-trip."""

from pathlib import Path

import pytest
import yaml

from pipeline_lib.classical.svm_variants import SvmVariantConfig, split_params
from pipeline_lib.data.chipgen import GenerateConfig
from pipeline_lib.data.ingest import IngestConfig, NearDuplicatesConfig
from pipeline_lib.data.split import SplitConfig
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.report.config import CamConfig, LocalisationConfig, ReportConfig, TsneConfig
from pipeline_lib.results.comparisons import TableConfig

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def section(dotted: str):
    value = PARAMS
    for key in dotted.split("."):
        value = value[key]
    return value


# (config type, params.yaml section, a key of it, a value of the wrong type for that key)
CASES = [
    (GenerateConfig, "generate", "n_train", "1000"),
    (IngestConfig, "ingest", "min_side", 16.5),
    (NearDuplicatesConfig, "ingest.near_duplicates", "flips", "yes"),
    (SplitConfig, "split", "val_bad", 1.5),
    (TableConfig, "table", "confidence", "high"),
    (ReportConfig, "report", "dpi", "100"),
    (TsneConfig, "report.tsne", "pca_components", 50.0),
    (CamConfig, "report.cam", "cam_models", "resnet_fbp"),
    (LocalisationConfig, "report.localisation", "tolerance_px", True),
]
IDS = [c[1] for c in CASES]


def _plain(value):
    """The config's values as YAML writes them: tuples as lists, nested configs as mappings."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("cls, where, key, wrong", CASES, ids=IDS)
def test_the_real_section_round_trips(cls, where, key, wrong):
    config = cls.from_params(section(where))
    as_dict = _plain(config.as_dict())
    assert {k: as_dict[k] for k in section(where)} == section(where)


@pytest.mark.parametrize("cls, where, key, wrong", CASES, ids=IDS)
def test_an_unknown_key_is_named(cls, where, key, wrong):
    with pytest.raises(PipelineError) as info:
        cls.from_params({**section(where), "colour": 1})
    msg = str(info.value)
    assert msg.startswith(f"{where}.colour: unknown key") and "\n" not in msg


@pytest.mark.parametrize("cls, where, key, wrong", CASES, ids=IDS)
def test_a_wrongly_typed_value_is_named(cls, where, key, wrong):
    with pytest.raises(PipelineError) as info:
        cls.from_params({**section(where), key: wrong})
    msg = str(info.value)
    assert f"{where}.{key}" in msg and repr(wrong) in msg and "\n" not in msg


def test_a_nested_section_must_be_a_mapping():
    with pytest.raises(PipelineError, match=r"^ingest\.near_duplicates: 'warn' is invalid; expected a mapping$"):
        IngestConfig.from_params({**section("ingest"), "near_duplicates": "warn"})


def test_a_nested_section_names_its_full_path():
    bad = {**section("report"), "tsne": {**section("report.tsne"), "max_iter": "many"}}
    with pytest.raises(PipelineError, match=r"^report\.tsne\.max_iter: 'many' is invalid; expected an integer$"):
        ReportConfig.from_params(bad)


@pytest.mark.parametrize(
    "cls, where, key, value, expected",
    [
        (IngestConfig, "ingest", "bad_images", "ignore", "ingest.bad_images"),
        (NearDuplicatesConfig, "ingest.near_duplicates", "max_distance", 17, "ingest.near_duplicates.max_distance"),
        (SplitConfig, "split", "seed", -1, "split.seed"),
        (TableConfig, "table", "confidence", 1.0, "table.confidence"),
        (TsneConfig, "report.tsne", "max_iter", 100, "report.tsne.max_iter"),
        (CamConfig, "report.cam", "overlay_alpha", 1.5, "report.cam.overlay_alpha"),
        (GenerateConfig, "generate", "bad_fraction", 1.0, "generate.bad_fraction"),
    ],
)
def test_an_out_of_range_value_is_named(cls, where, key, value, expected):
    with pytest.raises(PipelineError) as info:
        cls.from_params({**section(where), key: value})
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_the_generator_keeps_its_defect_types_in_order_once():
    config = GenerateConfig.from_params({**section("generate"), "defect_types": ["void", "crack", "void"],
                                         "max_defects": 5})
    assert config.defect_types == ("void", "crack") and config.max_defects == 2


def test_the_svm_section_splits_into_the_variant_and_svc_arguments():
    options, svc = split_params(section("classical.svm"))
    assert options == SvmVariantConfig(variant="auto", max_exact_rows=10000, nystroem_components=2000)
    assert svc == {"kernel": "rbf", "C": 1.0, "class_weight": "balanced"}
    with pytest.raises(PipelineError, match=r"classical\.svm\.max_exact_rows.*'many'"):
        split_params({**section("classical.svm"), "max_exact_rows": "many"})
