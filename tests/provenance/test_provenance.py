"""Provenance that sees every change of code and data, and DVC's record written by the study itself.

Each test starts from a copy of the session's tiny study (tests/conftest.py: a git + DVC
checkout run as `make study` runs it) and checks what Snakemake, DVC and the lineage check
say after one change or one DVC operation. The numbers in the comments are the findings of
the provenance issue these tests pin.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from e2e_helpers import planned_jobs, run, snakemake

pytestmark = pytest.mark.e2e

CLASSICAL_STAGES = sorted(f"classical_{c}_{f}_seed0" for c in ("lda", "rf", "lr", "svm") for f in ("pretrained", "finetuned"))
RF = "results/models/rf_pretrained/seed0/metrics.json"


@pytest.fixture
def study(tiny_study, tmp_path) -> Path:
    """A private copy of the finished tiny study (times, .snakemake metadata, DVC cache and git kept)."""
    work = tmp_path / "study"
    shutil.copytree(tiny_study, work, symlinks=True)
    return work


def dvc_changed(work: Path) -> set[str]:
    """Stages that `dvc status` reports as changed."""
    out = run(["dvc", "status", "--json"], work).stdout
    return set(json.loads(out or "{}"))


def lineage_check(work: Path, artifact: str = RF):
    return run([sys.executable, "-m", "pipeline_lib", "lineage", artifact, "--check"], work, check=False)


def downstream_of_ingest(work: Path) -> dict[str, int]:
    """Every job of the study but `generate` and `random_cell` (its cells come from params alone):
    what a change of the raw data must rerun."""
    everything = planned_jobs(work, "--forceall")
    return {rule: n for rule, n in everything.items() if rule not in ("generate", "random_cell")}


# 1. `make study` leaves DVC with a record --------------------------------------------------------


def test_the_study_command_leaves_dvc_lock_matching_the_workspace(tiny_study):
    lock = yaml.safe_load((tiny_study / "dvc.lock").read_text())
    stages = yaml.safe_load((tiny_study / "dvc.yaml").read_text())["stages"]
    assert set(lock["stages"]) == set(stages)  # every stage of the study is recorded
    assert dvc_changed(tiny_study) == set()
    assert planned_jobs(tiny_study) == {}


# 2. DVC rewriting file times does not make Snakemake rerun ---------------------------------------


def test_dvc_commit_and_sync_leave_nothing_to_do(study):
    run(["dvc", "commit", "--force", "--quiet"], study)
    assert planned_jobs(study) == {}
    assert dvc_changed(study) == set()
    run([sys.executable, "-m", "pipeline_lib", "sync"], study)
    assert planned_jobs(study) == {}
    run([sys.executable, "-m", "pipeline_lib", "restore-mtimes"], study)
    assert planned_jobs(study) == {}


def test_dvc_checkout_of_a_removed_output_leaves_nothing_to_do(study):
    (study / "results/models/cnn2/seed0/roc.csv").unlink()
    (study / "results/features/pretrained.parquet").unlink()
    run(["dvc", "checkout", "--quiet"], study)
    assert planned_jobs(study) == {}
    assert dvc_changed(study) == set()


# 3. A library change that alters results is seen by all three ---------------------------------


def test_a_change_in_classical_py_reruns_exactly_the_classical_jobs_and_their_dependants(study):
    module = study / "src/pipeline_lib/classical/classifiers.py"
    original = module.read_text()
    assert original.count("StandardScaler()") >= 1
    module.write_text(original.replace("StandardScaler()", "StandardScaler(with_mean=False)", 1))

    assert planned_jobs(study) == {"classical": 8, "table": 1, "report_roc": 1, "report": 1, "all": 1}
    assert dvc_changed(study) == set(CLASSICAL_STAGES)  # DVC lists the stages whose own deps changed
    check = lineage_check(study)
    assert check.returncode == 1
    assert "CODE CHANGED: src/pipeline_lib/classical/classifiers.py" in check.stdout

    run(["git", "checkout", "--", "src/pipeline_lib/classical/classifiers.py"], study)
    assert planned_jobs(study) == {}
    assert dvc_changed(study) == set()
    assert lineage_check(study).returncode == 0


def test_a_new_import_is_part_of_the_code_without_a_list_to_keep(study):
    helper = study / "src/pipeline_lib/extra_helper.py"
    helper.write_text("SCALE = 1\n")
    module = study / "src/pipeline_lib/classical/classifiers.py"
    module.write_text("from .extra_helper import SCALE  # noqa: F401\n" + module.read_text())
    assert planned_jobs(study)["classical"] == 8
    run(["git", "checkout", "--", "src/pipeline_lib/classical/classifiers.py"], study)
    assert planned_jobs(study) == {}
    helper.write_text("SCALE = 2\n")  # no longer imported: changing it reruns nothing
    assert planned_jobs(study) == {}


# 4. The machine is in the record ---------------------------------------------------------------


def test_each_record_names_cpu_kernels_libraries_and_threads(tiny_study):
    record = json.loads((tiny_study / "results/.lineage/features.json").read_text())
    machine = record["machine"]
    # each rule's own threads: features has the workflow's JOB_THREADS (1), ingest 2
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1 and machine["job_threads"] == 1
    assert json.loads((tiny_study / "results/.lineage/ingest.json").read_text())["machine"]["job_threads"] == 2
    torch_info = machine["torch"]
    import torch

    assert torch_info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert torch_info["onednn"] and torch_info["num_threads"] >= 1 and torch_info["blas"]
    assert any(lib["user_api"] == "blas" and lib.get("version") for lib in machine["blas_libraries"])
    classical = json.loads((tiny_study / "results/.lineage/classical-rf-pretrained-0.json").read_text())
    assert classical["machine"]["torch"] is None  # a torch-free job is described without importing torch
    text = run([sys.executable, "-m", "pipeline_lib", "lineage", "results/features/pretrained.parquet"], tiny_study).stdout
    assert f"torch {torch_info['cpu_capability']} oneDNN {torch_info['onednn']}" in text


# 5. One compact metrics table ---------------------------------------------------------------------


def test_dvc_metrics_show_prints_one_row_per_model(tiny_study):
    shown = run(["dvc", "metrics", "show", "--json"], tiny_study).stdout
    files = json.loads(shown)[""]["data"]  # "": the workspace
    table = {Path(path).stem: data["data"] for path, data in files.items()}
    models = json.loads((tiny_study / "results/table/results.json").read_text())
    assert set(table) == set(models)  # a row per model of the table, nothing else
    for model, values in table.items():
        assert values == {"valid_acc": models[model]["valid_acc"], "test_auc": models[model]["test_auc"]}
    header = run(["dvc", "metrics", "show"], tiny_study).stdout.splitlines()[0].split()
    assert header == ["Path", "test_auc", "valid_acc"]


# 6. Changes inside the data root -----------------------------------------------------------------


def _flip_first_label_in_place(labels: Path) -> None:
    with open(labels, "r+b") as handle:
        lines = handle.read().split(b"\n")
        key, value = lines[1].rsplit(b",", 1)
        lines[1] = key + b"," + (b"0" if value.strip() == b"1" else b"1")
        handle.seek(0)
        handle.write(b"\n".join(lines))


def _overwrite_in_place(target: Path, source: Path) -> None:
    with open(target, "r+b") as handle:
        handle.write(source.read_bytes())
        handle.truncate()


@pytest.mark.parametrize("edit", ["label flipped in place", "image overwritten in place", "image added", "test image deleted"])
def test_any_change_under_the_data_root_reruns_ingest_and_its_dependants(study, edit):
    root = study / "data/raw/builtin"
    good = sorted((root / "train/good_0").iterdir())[0]
    expected = downstream_of_ingest(study)
    inode = good.stat().st_ino
    if edit == "label flipped in place":
        _flip_first_label_in_place(root / "test_labels.csv")
    elif edit == "image overwritten in place":
        _overwrite_in_place(good, sorted((root / "train/bad_1").iterdir())[0])
        assert good.stat().st_ino == inode
    elif edit == "image added":
        shutil.copy(good, root / "train/good_0/extra.jpg")
    else:
        sorted((root / "test/all_tests").iterdir())[0].unlink()
    planned = planned_jobs(study)
    assert planned == expected and planned["ingest"] == 1


def test_new_file_times_under_the_data_root_are_not_a_change(study):
    import os

    for path in (study / "data/raw/builtin").rglob("*"):
        os.utime(path)
    assert planned_jobs(study) == {}


# 7. A fresh clone gets the study back -----------------------------------------------------------


def test_push_clone_pull_leaves_nothing_to_do_without_forcing_files_into_git(study, tmp_path):
    run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], study)
    run(["dvc", "push", "--quiet"], study)
    run(["git", "add", "dvc.lock", ".dvc/config"], study)
    run(["git", "commit", "-qm", "the study's record"], study)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(study), str(clone)], tmp_path)
    assert not (clone / "results").exists()
    run([sys.executable, "-m", "pipeline_lib", "pull"], clone)
    for metrics in (clone / "results/models").glob("*/metrics.json"):  # once never pushed (cache: false)
        assert metrics.read_bytes() == (study / metrics.relative_to(clone)).read_bytes()
    assert planned_jobs(clone) == {}
    assert dvc_changed(clone) == set()
    # the clone has Snakemake metadata now: a params change reruns exactly the jobs that read it
    _set_rf_trees(clone, 9)
    assert planned_jobs(clone) == {"classical": 2, "table": 1, "report_roc": 1, "report": 1, "all": 1}


# DVC operations listed by the issue --------------------------------------------------------------


def _set_rf_trees(work: Path, n: int) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["classical"]["rf"]["n_estimators"] = n
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_checkout_of_an_older_record_plans_exactly_the_changed_jobs_and_sync_settles_it(study):
    run(["git", "add", "dvc.lock"], study)
    run(["git", "commit", "-qm", "study A"], study)
    _set_rf_trees(study, 7)
    snakemake(study)
    assert dvc_changed(study) == set() and planned_jobs(study) == {}
    run(["git", "commit", "-qam", "rf: 7 trees"], study)
    diff = run(["dvc", "metrics", "diff", "HEAD~1", "--json"], study).stdout
    assert {Path(p).stem for p in json.loads(diff)} <= {"rf_pretrained", "rf_finetuned"}

    run(["git", "checkout", "HEAD~1", "--", "dvc.lock", "params.yaml"], study)
    run(["dvc", "checkout", "--quiet"], study)
    assert dvc_changed(study) == set()
    # Snakemake last ran rf with 7 trees: it plans exactly the jobs whose params differ from that run
    assert planned_jobs(study) == {"classical": 2, "table": 1, "report_roc": 1, "report": 1, "all": 1}
    run([sys.executable, "-m", "pipeline_lib", "sync"], study)
    assert planned_jobs(study) == {}


def test_dvc_experiments_run_and_apply(study):
    run(["git", "add", "dvc.lock"], study)
    run(["git", "commit", "-qm", "baseline"], study)
    ran = run(["dvc", "exp", "run", "-S", "classical.rf.n_estimators=9", "-n", "rf9"], study, timeout=900)
    assert "Running stage 'classical_rf_pretrained_seed0'" in ran.stdout and "Running stage 'features'" not in ran.stdout
    assert dvc_changed(study) == set() and planned_jobs(study) == {}
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], study)
    run(["dvc", "checkout", "--quiet"], study)
    run(["dvc", "exp", "apply", "rf9"], study)
    assert yaml.safe_load((study / "params.yaml").read_text())["classical"]["rf"]["n_estimators"] == 9
    assert dvc_changed(study) == set() and planned_jobs(study) == {}
