"""Remote round trip: repro + push in one clone, pull in a fresh one, and Snakemake has nothing to do.

Also `dvc params diff` / `dvc metrics diff` across two commits show a parameter change and its
effect, and the lineage records travelling with git agree with the pulled files and dvc.lock.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e_helpers import ROOT, copy_workflow, planned_jobs

BIN = Path(sys.executable).parent
LDA = "results/models/lda_pretrained/metrics.json"
RF = "results/models/rf_pretrained/metrics.json"
GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"}


def _run(cmd, cwd, check=True, timeout=600):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **GIT_ENV)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result


def _set_rf_trees(work: Path, n: int) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["classical"]["rf"]["n_estimators"] = n
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.e2e
def test_push_then_pull_in_a_fresh_clone_leaves_nothing_to_do(tmp_path):
    (tmp_path / "origin").mkdir()
    origin = copy_workflow(tmp_path / "origin")
    (origin / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    from snakemake.utils import update_config

    params = yaml.safe_load((origin / "params.yaml").read_text())
    update_config(params, yaml.safe_load((origin / ".test/params.yaml").read_text()))
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (origin / ".gitignore").write_text("/.snakemake/\n/logs/\n/benchmarks/\n/.state/\n__pycache__/\n")
    _run(["git", "init", "-q"], origin)
    _run(["dvc", "init", "-q"], origin)
    _run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], origin)

    _run(["dvc", "repro", "classical_lda_pretrained", "classical_rf_pretrained"], origin)
    _run(["dvc", "push"], origin)
    _run(["git", "add", "-A"], origin)
    _run(["git", "commit", "-qm", "tiny study: lda and rf"], origin)

    # a parameter change and its effect, commit to commit
    _set_rf_trees(origin, 7)
    again = _run(["dvc", "repro", "classical_rf_pretrained"], origin)
    assert "Running stage 'classical_rf_pretrained'" in again.stdout
    assert "Running stage 'features'" not in again.stdout
    _run(["dvc", "push"], origin)
    _run(["git", "add", "-A"], origin)
    _run(["git", "commit", "-qm", "rf: 7 trees"], origin)
    params_diff = _run(["dvc", "params", "diff", "HEAD~1", "--md"], origin).stdout
    assert "classical.rf.n_estimators" in params_diff and "20" in params_diff and "7" in params_diff
    metrics_diff = _run(["dvc", "metrics", "diff", "HEAD~1", "--all", "--md"], origin).stdout
    assert RF in metrics_diff and "valid_acc" in metrics_diff
    assert LDA not in _run(["dvc", "metrics", "diff", "HEAD~1", "--md"], origin).stdout.replace("wall_time_s", "")

    # a fresh clone: no DVC-tracked outputs, no .snakemake metadata
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "results/features/pretrained.parquet").exists() and not (clone / ".snakemake").exists()
    pulled = _run([sys.executable, "-m", "pipeline_lib", "pull"], clone)
    assert "file times restored" in pulled.stdout
    assert (clone / "results/features/pretrained.parquet").exists()
    assert "Snakemake metadata recorded" in pulled.stdout
    dry = _run([sys.executable, "-m", "snakemake", "--cores", "1", "-n", LDA, RF], clone)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout + dry.stderr
    assert "missing provenance/metadata" not in dry.stdout + dry.stderr
    # the clone has Snakemake metadata now: a params change reruns exactly the job that reads it
    _set_rf_trees(clone, 9)
    assert planned_jobs(clone, LDA, RF) == {"classical": 1}
    _set_rf_trees(clone, 7)
    assert json.loads((clone / RF).read_text()) == json.loads((origin / RF).read_text())

    # Without .snakemake/ metadata (a clone pulled with plain `dvc pull`), file times out of DAG
    # order (what `dvc pull`/`checkout` leave) make Snakemake want to rerun; restoring them from
    # dvc.lock's stage order fixes it. (With metadata, Snakemake also compares small inputs'
    # checksums and ignores a mere mtime change.)
    shutil.rmtree(clone / ".snakemake")
    os.utime(clone / "results/split/split.parquet", None)
    os.utime(clone / "results/ingest/manifest.parquet", None)
    assert planned_jobs(clone, LDA, RF) != {}
    _run([sys.executable, "-m", "pipeline_lib", "restore-mtimes"], clone)
    assert planned_jobs(clone, LDA, RF) == {}

    # the lineage records came with git and agree with the pulled files and dvc.lock
    lin = _run([sys.executable, "-m", "pipeline_lib", "lineage", RF, "--json", "--check"], clone)
    report = json.loads(lin.stdout)
    assert report["stages"]["classical-rf-pretrained"]["params"]["classical.rf"]["n_estimators"] == 7
    checked = [e for s in report["stages"].values() for e in s["inputs"] + s["outputs"]]
    assert {e["dvc_lock"] for e in checked} == {"agrees"}
    assert {"results/split/split.parquet", "data/raw/builtin"} <= {e["path"] for e in checked}
