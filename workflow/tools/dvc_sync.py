"""Write (or --check) dvc.yaml from the Snakemake DAG of the default study.

    python workflow/tools/dvc_sync.py          # rewrite dvc.yaml
    python workflow/tools/dvc_sync.py --check  # exit 1 if dvc.yaml differs from the DAG
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import DAGSettings, OutputSettings, ResourceSettings

from pipeline_lib.io.atomic import write_text
from pipeline_lib.provenance.dvc_yaml import Job, dump, render

ROOT = Path(__file__).resolve().parents[2]


def job_code_files(job, root: Path) -> list[str]:
    """The job's code files (its ``code`` params entry), checked against the rule's own script."""
    code = dict(job.params.get("code", {})) if hasattr(job.params, "get") else {}
    if job.rule.script:
        script = (Path(job.rule.snakefile).parent / job.rule.script).resolve().relative_to(root).as_posix()
        if script not in code:
            raise SystemExit(f"ERROR: rule {job.rule.name}: params code=code_of(...) does not name its script {script}")
    return sorted(code)


def read_jobs(root: Path = ROOT) -> list[Job]:
    """Every job of the full DAG (as if nothing had run yet), with its I/O and params keys."""
    with contextlib.redirect_stderr(io.StringIO()), SnakemakeApi(OutputSettings()) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1), snakefile=root / "Snakefile", workdir=root
        )
        workflow_api.dag(dag_settings=DAGSettings(forceall=True))
        workflow = workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        jobs = []
        for job in workflow.dag.jobs:
            if not job.output:  # the `all` target
                continue
            params = job.params.get("cfg", {}) if hasattr(job.params, "get") else {}
            # the same files that Snakemake's `code` params entry hashes (pipeline_lib.provenance.codedeps)
            code = job_code_files(job, root)
            jobs.append(
                Job(
                    rule=job.rule.name,
                    wildcards=dict(job.wildcards_dict),
                    inputs=[str(f) for f in job.input],
                    outputs=[str(f) for f in job.output],
                    params=list(params),
                    code=code,
                )
            )
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    expected = dump(render(read_jobs()))
    target = ROOT / "dvc.yaml"
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != expected:
            diff = difflib.unified_diff(current.splitlines(), expected.splitlines(), "dvc.yaml", "from Snakefile", lineterm="")
            print("\n".join(diff))
            print("ERROR: dvc.yaml differs from the Snakemake DAG; run `python workflow/tools/dvc_sync.py`", file=sys.stderr)
            return 1
        print("dvc.yaml matches the Snakemake DAG")
        return 0
    write_text(target, expected)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
