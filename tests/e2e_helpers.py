"""Run the real workflow in a throw-away copy of the project (shared by end-to-end tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# src: the copy runs (and fingerprints) its own library; profiles/default: the workflow profile.
WORKFLOW_FILES = ["Snakefile", "params.yaml", "workflow", ".test", "config", "src", "profiles"]


def workflow_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a command run in a copy: this venv's tools first, the copy's library.

    The Snakefile refuses a pipeline_lib other than the checkout's own ``src/`` (its code
    fingerprints would describe other code), so a copy imports its ``src/`` copy.
    """
    pythonpath = os.pathsep.join(filter(None, [str(Path(workdir) / "src"), extra.pop("PYTHONPATH", None)]))
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                PYTHONPATH=pythonpath, **extra)


def copy_workflow(dest: Path) -> Path:
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"}
REPO_FILES = ["dvc.yaml", ".dvcignore", ".gitignore"]


def run(cmd: list[str], cwd: Path, *, check: bool = True, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """A command in a copy (git, dvc, python -m pipeline_lib ...) with the copy's environment."""
    timeout = int(timeout * float(os.environ.get("E2E_TIMEOUT_SCALE", "1")))
    result = subprocess.run(cmd, cwd=cwd, env=workflow_env(cwd, **GIT_ENV, **env), capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_study_repo(dest: Path) -> Path:
    """A checkout as a user has it: the workflow in git, DVC initialised, and the tiny
    configuration as its ``params.yaml`` (so a plain ``snakemake`` is ``make study``)."""
    import yaml
    from snakemake.utils import update_config

    copy_workflow(dest)
    for name in REPO_FILES:
        shutil.copy2(ROOT / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    update_config(params, yaml.safe_load((dest / ".test/params.yaml").read_text()))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # dvc.yaml has a stage per study seed: the tiny study's own (one seed), as a user regenerates it
    run([sys.executable, "workflow/tools/dvc_sync.py"], dest)
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "the study's code, tiny params"], dest)
    return dest


# Markers of the test being set up (set by conftest.py; None outside a test): a test that
# starts Snakemake must say so with one of SNAKEMAKE_MARKERS.
RUNNING_TEST_MARKERS: set[str] | None = None
SNAKEMAKE_MARKERS = {"e2e", "dag", "slurm"}


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """``snakemake`` from this interpreter's environment, run inside ``workdir``."""
    if RUNNING_TEST_MARKERS is not None and not RUNNING_TEST_MARKERS & SNAKEMAKE_MARKERS:
        raise AssertionError(
            f"this test starts Snakemake but has none of the markers {sorted(SNAKEMAKE_MARKERS)}: "
            "mark it e2e (jobs run) or dag (dry run only)"
        )
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    timeout = int(timeout * float(os.environ.get("E2E_TIMEOUT_SCALE", "1")))  # e.g. 3 on a busy machine
    result = subprocess.run(cmd, cwd=workdir, env=workflow_env(workdir), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def job_counts(out: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule → job count from the job-stats table Snakemake prints (empty when there is none)."""
    counts: dict[str, int] = {}
    in_table = False
    for line in (out.stdout + out.stderr).splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


def listed_jobs(out: subprocess.CompletedProcess) -> list[dict]:
    """Every job of a (non-quiet) dry run's listing: ``{"rule", "input": [...], "output": [...]}``."""
    jobs: list[dict] = []
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith(("rule ", "localrule ", "checkpoint ")) and line.endswith(":"):
            jobs.append({"rule": line.split()[1].rstrip(":"), "input": [], "output": []})
        elif jobs and line.startswith(("    input: ", "    output: ")):
            key, files = line.strip().split(":", 1)
            jobs[-1][key] = [p.strip() for p in files.split(",") if p.strip()]
    return jobs


def job_inputs(out: subprocess.CompletedProcess, rule: str) -> list[list[str]]:
    """The ``input:`` files of every job of ``rule`` in a (non-quiet) dry run's listing."""
    return [job["input"] for job in listed_jobs(out) if job["rule"] == rule]


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule → job count of what a dry run would execute (empty when nothing is to be done)."""
    return job_counts(snakemake(workdir, *args, "--dry-run", "--quiet", "rules"))
