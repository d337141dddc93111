"""Cluster execution through the profiles: profiles/local, profiles/slurm, and a real SLURM run.

- The profiles load (profile.yaml for Snakemake 9, config.yaml the same file for 8).
- The real SLURM profile, dry run: the plugin's own sbatch command line asks for a GPU
  (``--gpus``) exactly for the rules that declare ``resources: gpu=1`` (read from the workflow,
  not listed here), so no cluster or GPU is needed to check it.
- ``@pytest.mark.slurm``: a single-node SLURM cluster on localhost (tests/slurm/cluster.sh:
  apt-get install slurm-wlm munge when missing, start, stop) builds the tiny configuration's
  results table through profiles/slurm merged with tests/slurm/overlay.yaml (partition "test",
  gpu=0 for the GPU rules, squeue status checks); every job must have gone through SLURM and
  the table and metrics must equal the local tiny run's (tests/conftest.py::tiny_study).
  Needs root and apt (or slurm-wlm + munge installed): otherwise it skips, but fails under CI=true.
  ``pytest -m "not slurm"`` leaves the cluster out.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from e2e_helpers import ROOT, copy_workflow, snakemake

TINY = ("--configfile", ".test/params.yaml")
# What the SLURM run builds: the results table, which pulls in every model's metrics.json and so
# every GPU rule (features, train, features_finetuned, the NAS searches and retrains; checked
# below). The report figures and cell drawings would add a third more jobs (minutes on a 2-CPU
# CI machine: each SLURM job starts its own Snakemake) and exercise nothing SLURM-specific.
SLURM_TARGETS = ("results/table/results.csv",)
CLUSTER_SH = ROOT / "tests/slurm/cluster.sh"
OVERLAY = ROOT / "tests/slurm/overlay.yaml"
PROFILES = ("local", "slurm")
# Fields that measure the run, not the result.
VOLATILE = {"wall_time_s"}


# --- reading Snakemake's dry run ------------------------------------------------------------

_JOB_HEADER = re.compile(r"^(local)?(rule|checkpoint) (\w+):$")


def _value(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def dry_run_jobs(workdir: Path, *args: str) -> list[dict]:
    """Every job of a dry run: {"rule", "local", "threads", "resources"} as Snakemake resolved them.

    ``local``: a localrule, or a rule without outputs (run by Snakemake itself, never submitted).
    """
    out = snakemake(workdir, "--dry-run", *args)
    jobs: list[dict] = []
    for line in (out.stdout + out.stderr).splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            jobs.append({"rule": header[3], "local": bool(header[1]), "threads": 1, "resources": {}})
        elif jobs and line.startswith("    output: "):
            jobs[-1]["output"] = True
        elif jobs and line.startswith("    threads: "):
            jobs[-1]["threads"] = int(line.split(":", 1)[1])
        elif jobs and line.startswith("    resources: "):
            pairs = (item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", ") if "=" in item)
            jobs[-1]["resources"] = {key: _value(value) for key, value in pairs}
    assert jobs, f"no jobs in the dry run:\n{out.stdout}\n{out.stderr}"
    for job in jobs:  # a rule without outputs (the target rule `all`) never leaves the machine
        job["local"] = job["local"] or not job.pop("output", False)
    return jobs


def gpu_rules(jobs: list[dict]) -> set[str]:
    return {job["rule"] for job in jobs if int(job["resources"].get("gpu", 0) or 0) >= 1}


# --- the plugin's sbatch command line, without a cluster -------------------------------------


class _Resources(dict):
    """Job resources as the plugin reads them: .get(name) and attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Job:
    """The part of a Snakemake job that the plugin's command-line builders read."""

    def __init__(self, job: dict):
        self.name = job["rule"]
        self.threads = job["threads"]
        self.resources = _Resources({k: v for k, v in job["resources"].items() if v != "<TBD>"})

    def is_group(self):
        return False


def sbatch_call(job: dict) -> str:
    """The sbatch command line snakemake-executor-plugin-slurm builds for this job (minus --wrap)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    stub = _Job(job)
    partition = stub.resources.get("slurm_partition")
    params = {
        "run_uuid": "RUN",
        "slurm_logfile": f".snakemake/slurm_logs/rule_{stub.name}/%j.log",
        "comment_str": f"rule_{stub.name}",
        "account": "",
        "partition": f" -p {shlex.quote(str(partition))}" if partition else "",
        "workdir": "/work",
    }
    return get_submit_command(stub, params) + set_gres_string(stub)


# --- profiles ------------------------------------------------------------------------------


def load_profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "profile.yaml").read_text())


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("profiles"))
    return workdir


@pytest.fixture(scope="module")
def tiny_jobs(workflow_copy):
    """The tiny DAG's jobs as the workflow alone declares them (no profile)."""
    return dry_run_jobs(workflow_copy, *TINY)


@pytest.mark.parametrize("name", PROFILES)
def test_profile_yaml_and_config_yaml_are_the_same_file(name):
    # Snakemake 9.27 reads profile.yaml or config.yaml (whichever it lists first when both
    # exist), Snakemake 8 only config.yaml: one content for both.
    directory = ROOT / "profiles" / name
    assert (directory / "config.yaml").read_bytes() == (directory / "profile.yaml").read_bytes()
    assert (directory / "config.yaml").is_symlink() and os.readlink(directory / "config.yaml") == "profile.yaml"


@pytest.mark.dag
def test_local_profile_runs_gpu_rules_one_at_a_time(workflow_copy, tiny_jobs):
    profile = load_profile("local")
    assert profile["resources"]["gpu"] == 1
    assert profile["cores"] == "all"
    jobs = dry_run_jobs(workflow_copy, "--profile", "profiles/local", *TINY)
    assert gpu_rules(jobs) == gpu_rules(tiny_jobs)
    assert all(job["resources"].get("mem_mb") for job in jobs if not job["local"])


@pytest.mark.dag
def test_slurm_profile_names_every_gpu_rule_and_only_real_rules(tiny_jobs):
    profile = load_profile("slurm")
    assert profile["executor"] == "slurm"
    for key in ("jobs", "retries", "latency-wait", "default-resources", "set-resources", "set-threads"):
        assert key in profile, key
    assert {"slurm_partition", "runtime", "mem_mb"} <= set(profile["default-resources"])
    declared = gpu_rules(tiny_jobs)
    assert declared >= {"features", "features_finetuned", "train"}
    set_resources = profile["set-resources"]
    missing = {rule for rule in declared if set_resources.get(rule, {}).get("gpu", 0) < 1}
    assert not missing, f"GPU rules without gpu: 1 in profiles/slurm set-resources: {sorted(missing)}"
    assert {rule for rule, res in set_resources.items() if res.get("gpu")} == declared
    rules = {job["rule"] for job in tiny_jobs}
    assert set(set_resources) <= rules, f"unknown rules in set-resources: {set(set_resources) - rules}"
    assert set(profile["set-threads"]) <= rules
    for rule, res in set_resources.items():  # sbatch -c and the threads the rule uses agree
        if "cpus_per_task" in res:
            assert profile["set-threads"].get(rule) == res["cpus_per_task"], rule


@pytest.mark.dag
def test_real_slurm_profile_asks_for_gpus_exactly_for_gpu_rules(workflow_copy, tiny_jobs):
    """Dry run through profiles/slurm; the plugin's sbatch line per job, built by the plugin's code."""
    declared, profile = gpu_rules(tiny_jobs), load_profile("slurm")
    jobs = [job for job in dry_run_jobs(workflow_copy, "--profile", "profiles/slurm", *TINY) if not job["local"]]
    assert {job["rule"] for job in jobs} == {job["rule"] for job in tiny_jobs if not job["local"]}
    for job in jobs:
        call = sbatch_call(job)
        asks_gpu = bool(re.search(r"--gpus=|--gres=\S*gpu", call))
        assert asks_gpu == (job["rule"] in declared), f"{job['rule']}: {call}"
        if job["rule"] in declared:
            assert re.search(r"--gpus=(\w+:)?1\b", call), call
        wanted = {**profile["default-resources"], **profile["set-resources"].get(job["rule"], {})}
        assert f" -p {wanted['slurm_partition']} " in call, call
        assert f"--cpus-per-task={wanted.get('cpus_per_task', job['threads'])}" in call, call
        assert f" -t {wanted['runtime']} " in call and f" --mem {wanted['mem_mb']} " in call, call


# --- a real single-node SLURM cluster ---------------------------------------------------------


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"SLURM test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"no SLURM test cluster here: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids(directory: Path) -> list[int]:
    pids = []
    for name in ("munged", "slurmctld", "slurmd"):
        path = directory / f"{name}.pid"
        if path.exists() and path.read_text().strip():
            pids.append(int(path.read_text().strip()))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.fixture(scope="module")
def slurm_cluster():
    """Install (when missing) and start the test cluster; yield the env its clients need; stop it."""
    if os.geteuid() != 0:
        _unavailable("needs root (apt-get install, daemons)")
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        _unavailable("neither slurm-wlm nor apt-get is installed")
    started = time.monotonic()
    install = subprocess.run(["bash", str(CLUSTER_SH), "install"], capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        _unavailable(f"install failed:\n{install.stdout}\n{install.stderr}")
    installed = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="nexperia-slurm.", dir="/tmp"))
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}{os.pathsep}/usr/sbin:/sbin",
        SLURM_TEST_CTLD_PORT=str(_free_port()),
        SLURM_TEST_SLURMD_PORT=str(_free_port()),
    )
    try:
        start = subprocess.run(
            ["bash", str(CLUSTER_SH), "start", str(directory)], capture_output=True, text=True, timeout=120, env=env
        )
        if start.returncode != 0:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(directory.rglob("*.log"))
            )
            _unavailable(f"cluster did not start:\n{start.stdout}\n{start.stderr}\n{logs}")
        # DIR/bin: sbatch, srun, squeue, ... bound to this cluster (see tests/slurm/cluster.sh).
        env["PATH"] = f"{directory / 'bin'}{os.pathsep}{env['PATH']}"
        env["SLURM_CONF"] = str(directory / "slurm.conf")
        env.pop("SLURM_JOB_ID", None)
        print(f"SLURM test cluster: install {installed - started:.1f} s, start {time.monotonic() - installed:.1f} s")
        yield {"env": env, "dir": directory}
    finally:
        pids = _pids(directory)
        stop = subprocess.run(["bash", str(CLUSTER_SH), "stop", str(directory)], capture_output=True, text=True)
        left = [pid for pid in pids if _alive(pid)]
        shutil.rmtree(directory, ignore_errors=True)
        assert stop.returncode == 0, stop.stderr
        assert not left, f"cluster daemons still running after stop: {left}"


def merged_test_profile(real: dict, overlay: dict, gpu_rule_names: set[str]) -> dict:
    """profiles/slurm with tests/slurm/overlay.yaml applied (null deletes a key)."""

    def merge(base: dict, changes: dict) -> dict:
        merged = dict(base)
        for key, value in changes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    profile = copy.deepcopy(real)
    profile.update(overlay["options"])
    profile["default-resources"] = merge(profile.get("default-resources", {}), overlay["default-resources"])
    set_resources = profile.setdefault("set-resources", {})
    for rule in sorted(set(set_resources) | gpu_rule_names):
        resources = merge(set_resources.get(rule, {}), overlay["every-rule-resources"])
        if rule in gpu_rule_names:
            resources = merge(resources, overlay["gpu-rule-resources"])
        set_resources[rule] = resources
    return profile


@pytest.fixture(scope="module")
def slurm_jobs(workflow_copy):
    """The jobs the SLURM run has to do (the tiny DAG up to SLURM_TARGETS), as declared."""
    return dry_run_jobs(workflow_copy, *SLURM_TARGETS, *TINY)


@pytest.fixture(scope="module")
def slurm_study(slurm_cluster, tiny_jobs, tmp_path_factory):
    """The tiny configuration through the SLURM profile (+ test overlay) on the test cluster."""
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm_study"))  # profiles included
    profile = merged_test_profile(
        load_profile("slurm"), yaml.safe_load(OVERLAY.read_text()), gpu_rules(tiny_jobs)
    )
    (workdir / "profiles/slurm-test").mkdir()
    (workdir / "profiles/slurm-test/profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", *SLURM_TARGETS, "--profile", "profiles/slurm-test", *TINY]
    started = time.monotonic()
    result = subprocess.run(
        cmd, cwd=workdir, env=dict(slurm_cluster["env"], PYTHONPATH=str(workdir / "src")), capture_output=True,
        text=True, timeout=1200
    )
    wall = time.monotonic() - started
    output = result.stdout + result.stderr
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted((workdir / ".snakemake/slurm_logs").rglob("*.log"))
        )
        pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}):\n{output[-8000:]}\n{logs}", pytrace=False)
    queue = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%k|%b"],
        env=slurm_cluster["env"], capture_output=True, text=True, check=True,
    ).stdout
    print(f"SLURM tiny run: {wall:.1f} s")
    return {"workdir": workdir, "output": output, "queue": queue, "wall_s": wall, "profile": profile}


def _submissions(output: str) -> dict[str, str]:
    """SLURM job id → rule, from Snakemake's 'submitted with SLURM jobid' lines."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)", output)
    return {jobid: re.search(r"/rule_(\w+?)/", log)[1] for jobid, log in found}


@pytest.mark.slurm
@pytest.mark.e2e
def test_every_job_went_through_slurm(slurm_study, slurm_jobs):
    submitted = _submissions(slurm_study["output"])
    remote = sorted(job["rule"] for job in slurm_jobs if not job["local"])
    assert sorted(submitted.values()) == remote
    assert gpu_rules(slurm_jobs) and gpu_rules(slurm_jobs) <= set(submitted.values())
    run_id = re.search(r"SLURM run ID: (\S+)", slurm_study["output"])[1]
    queue = {}
    for line in slurm_study["queue"].splitlines():
        jobid, name, state, comment, gres = line.split("|")
        if name == run_id:
            queue[jobid] = (state, comment, gres)
    assert set(queue) == set(submitted), "squeue and Snakemake disagree on the run's SLURM jobs"
    for jobid, rule in submitted.items():
        state, comment, gres = queue[jobid]
        assert state == "COMPLETED", (jobid, rule, state)
        assert comment.startswith(f"rule_{rule}"), (jobid, rule, comment)
        assert "gpu" not in gres, (jobid, rule, gres)  # the test overlay sets gpu=0
        logs = list((slurm_study["workdir"] / ".snakemake/slurm_logs").glob(f"rule_{rule}/**/{jobid}.log"))
        assert len(logs) == 1, (jobid, rule)


@pytest.mark.slurm
@pytest.mark.e2e
def test_slurm_run_equals_local_run(slurm_study, tiny_study):
    slurm, local = slurm_study["workdir"], tiny_study

    def table(root):
        frame = pd.read_csv(root / "results/table/results.csv")
        return frame.drop(columns=[c for c in frame.columns if c in VOLATILE]).sort_values("model", ignore_index=True)

    pd.testing.assert_frame_equal(table(slurm), table(local))
    metrics = sorted(p.relative_to(local) for p in local.glob("results/models/*/seed*/metrics.json"))
    assert metrics and metrics == sorted(p.relative_to(slurm) for p in slurm.glob("results/models/*/seed*/metrics.json"))
    for path in metrics:
        ours, theirs = (json.loads((root / path).read_text()) for root in (slurm, local))
        for key in VOLATILE:
            ours.pop(key, None), theirs.pop(key, None)
        assert ours == theirs, path


@pytest.mark.slurm
@pytest.mark.e2e
def test_rule_logs_land_under_logs(slurm_study):
    workdir = slurm_study["workdir"]
    assert (workdir / "logs/generate.log").stat().st_size > 0
    assert "rule features finished" in (workdir / "logs/features/pretrained.log").read_text()
    assert (workdir / "benchmarks/table.tsv").exists()
