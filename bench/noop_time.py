"""The no-op check of a finished study against its budget: `snakemake -n` plus `dvc status` <= 5 s.

    python bench/noop_time.py --study STUDY_DIR [--repeat 5] [--pure-yaml]

STUDY_DIR is a finished study (a git + DVC checkout after ``make study``; its own ``src`` is the
library that runs). Each round runs ``snakemake -n`` and then ``dvc status`` there; both must
report nothing to do, or the numbers would time real work. Printed per command: the median wall
time and the median CPU time (user + sys of the child, less disturbed by other jobs on a shared
machine), then the sum of the medians against the budget, with the load before and after.

``--pure-yaml`` hides ruamel.yaml.clib (a stand-in ``_ruamel_yaml`` that fails to import, first
on PYTHONPATH), so DVC parses its YAML in pure Python as it did before the clib pin: the
"before" column of bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 5.0
COMMANDS = {
    "snakemake -n": (["snakemake", "-n", "--cores", "2"], "Nothing to be done"),
    "dvc status": (["dvc", "status"], "Data and pipelines are up to date."),
}


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout + stderr) of one run of ``cmd``."""
    cpu, started = _children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {out.returncode}) in {cwd}:\n{out.stdout}{out.stderr}")
    return wall, cpu, out.stdout + out.stderr


def study_env(study: Path, shadow: Path | None = None) -> dict[str, str]:
    """The study's own library first on PYTHONPATH (the Snakefile checks that it is the one imported),
    and the venv of this Python on PATH."""
    path = [str(shadow)] if shadow else []
    path.append(str(study / "src"))
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def noop_times(study: Path, repeat: int, env: dict[str, str]) -> dict[str, tuple[float, float]]:
    """{command: (median wall s, median CPU s)} over ``repeat`` alternating rounds; prints each."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    for _ in range(repeat):
        for name, (cmd, idle) in COMMANDS.items():
            wall, cpu, out = timed_run(cmd, study, env)
            if idle not in out:
                raise SystemExit(f"{name} in {study} is not a no-op (no {idle!r}):\n{out[-2000:]}")
            samples[name].append((wall, cpu))
    medians = {}
    for name, runs in samples.items():
        medians[name] = (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        print(f"  {name}: median {medians[name][0]:.2f} s wall, {medians[name][1]:.2f} s CPU "
              f"(walls {[round(w, 2) for w, _ in runs]})")
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pure-yaml", action="store_true", help="hide ruamel.yaml.clib (as before its pin)")
    args = parser.parse_args()
    study = args.study.resolve()
    with tempfile.TemporaryDirectory(prefix="noop-") as shadow:
        if args.pure_yaml:
            Path(shadow, "_ruamel_yaml.py").write_text("raise ImportError('hidden by bench/noop_time.py --pure-yaml')\n")
        print(f"finished study {study}{' (pure-Python YAML)' if args.pure_yaml else ''}; {load()}")
        medians = noop_times(study, args.repeat, study_env(study, Path(shadow) if args.pure_yaml else None))
    wall = sum(w for w, _ in medians.values())
    cpu = sum(c for _, c in medians.values())
    verdict = "within" if wall <= BUDGET_S else "OVER"
    print(f"sum: {wall:.2f} s wall ({cpu:.2f} s CPU) -- {verdict} the {BUDGET_S:.0f} s budget; {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
