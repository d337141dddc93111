"""The no-op check of a finished study against its budget: `snakemake -n` plus `dvc status` <= 5 s.

    python bench/noop_time.py --study STUDY_DIR [--repeat 5] [--pure-yaml]
                              [--compare OTHER_DIR [--compare-pure-yaml]]

STUDY_DIR is a finished study (a git + DVC checkout after ``make study``; its own ``src`` is the
library that runs). Each round runs ``snakemake -n`` and then ``dvc status`` there; both must
report nothing to do, or the numbers would time real work. Printed per command: the median wall
time and the median CPU time (user + sys of the child, less disturbed by other jobs on a shared
machine), then the sum of the medians against the budget, with the load before and after.

``--compare OTHER_DIR``: a second finished study (e.g. a copy on an older commit), timed in the
same rounds, command by command in alternation, so both see the same load; printed as well: the
median over rounds of STUDY's time / OTHER's time (wall and CPU), the comparison that a busy
shared machine still allows.

``--pure-yaml`` (``--compare-pure-yaml`` for OTHER_DIR) hides ruamel.yaml.clib (a stand-in ``_ruamel_yaml`` that fails to import, first
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


def noop_times(studies: dict[str, tuple[Path, dict[str, str]]], repeat: int) -> dict[str, dict[str, list]]:
    """{study label: {command: [(wall s, CPU s) per round]}}: each round runs every command in every
    study, one after the other, so that the studies share the load of the moment."""
    samples = {label: {name: [] for name in COMMANDS} for label in studies}
    for _ in range(repeat):
        for name, (cmd, idle) in COMMANDS.items():
            for label, (study, env) in studies.items():
                wall, cpu, out = timed_run(cmd, study, env)
                if idle not in out:
                    raise SystemExit(f"{name} in {study} is not a no-op (no {idle!r}):\n{out[-2000:]}")
                samples[label][name].append((wall, cpu))
    return samples


def report(label: str, runs: dict[str, list]) -> float:
    """Prints the medians of one study; returns the sum of the commands' median walls."""
    print(f"{label}:")
    total_wall = total_cpu = 0.0
    for name, pairs in runs.items():
        wall, cpu = statistics.median(w for w, _ in pairs), statistics.median(c for _, c in pairs)
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        print(f"  {name}: median {wall:.2f} s wall, {cpu:.2f} s CPU (walls {[round(w, 2) for w, _ in pairs]})")
    verdict = "within" if total_wall <= BUDGET_S else "OVER"
    print(f"  sum: {total_wall:.2f} s wall ({total_cpu:.2f} s CPU) -- {verdict} the {BUDGET_S:.0f} s budget")
    return total_wall


def report_ratios(runs: dict[str, list], other: dict[str, list]) -> None:
    """Per command and for the sum: the median over rounds of this study's time / the other's."""
    for name in runs:
        walls = [a[0] / b[0] for a, b in zip(runs[name], other[name])]
        cpus = [a[1] / b[1] for a, b in zip(runs[name], other[name])]
        print(f"  {name}: study / compare = {statistics.median(walls):.2f} wall, {statistics.median(cpus):.2f} CPU "
              "(median of the rounds' ratios)")
    rounds = range(len(next(iter(runs.values()))))
    sums = [sum(runs[n][i][0] for n in runs) / sum(other[n][i][0] for n in runs) for i in rounds]
    print(f"  sum of both: study / compare = {statistics.median(sums):.2f} wall")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pure-yaml", action="store_true", help="hide ruamel.yaml.clib (as before its pin)")
    parser.add_argument("--compare", type=Path, help="a second finished study, timed in the same rounds")
    parser.add_argument("--compare-pure-yaml", action="store_true", help="--pure-yaml for the --compare study")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="noop-") as shadow:
        Path(shadow, "_ruamel_yaml.py").write_text("raise ImportError('hidden by bench/noop_time.py --pure-yaml')\n")
        studies = {}
        for label, study, pure in (("study", args.study, args.pure_yaml), ("compare", args.compare, args.compare_pure_yaml)):
            if study:
                study = study.resolve()
                studies[label] = (study, study_env(study, Path(shadow) if pure else None))
                print(f"{label}: {study}{' (pure-Python YAML)' if pure else ''}")
        print(f"{args.repeat} rounds; {load()}")
        samples = noop_times(studies, args.repeat)
    for label, runs in samples.items():
        report(label, runs)
    if args.compare:
        report_ratios(samples["study"], samples["compare"])
    print(f"done; {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
