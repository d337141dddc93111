"""data.builtin: bench's generate → ingest → split through the rules' configs, on a moved data root."""

import copy
from pathlib import Path

import pandas as pd
import yaml

from pipeline_lib.data.builtin import built_in_split

ROOT = Path(__file__).resolve().parents[2]


def test_built_in_split_reads_the_moved_root_and_its_test_labels(tmp_path):
    params = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params["generate"].update(n_train=40, n_test=10, image_size=32)
    params["split"].update(val_good=5, val_bad=4)
    split = built_in_split(params, tmp_path / "chips")
    assert split["path"].str.startswith((tmp_path / "chips").as_posix() + "/").all()
    assert split["split"].value_counts().to_dict() == {"train": 31, "test": 10, "val": 9}
    assert split.groupby(["split", "label"]).size()[("val", 1)] == 4
    labels = pd.read_csv(tmp_path / "chips" / "test_labels.csv", dtype={"id": str}).set_index("id")["label"]
    test = split[split["split"] == "test"].set_index("id")["label"]
    assert test.sort_index().tolist() == labels.sort_index().tolist()  # from the file, not -1
