"""Scale rehearsal: the study's CPU stages at the real dataset's size, run by the real rules.

    PYTHONPATH=src nice -n 5 python bench/scale/rehearse.py --work /tmp/scale [--sizes 1300 10000 33000]
        [--svm-compare 1300 10000] [--cores 2]
    PYTHONPATH=src python bench/scale/rehearse.py --work /tmp/scale --collect bench/scale/results/rows.tsv

For each size n (train + test: 1,000 + 300, 9,091 + 909, 30,000 + 3,000),
a scratch copy of the workflow in ``<work>/n<n>/`` runs ``snakemake --configfile
config/full.yaml rehearsal.yaml``: the full-size configuration (224 px features, the
classical settings that params.yaml + full.yaml give) with three overrides written by this
script -- the built-in generator writes n images at 224 px (ingest reads them), and
``features.weights: none`` (no ImageNet file offline; the same network and cost).

1. ``generate``, ``ingest``, ``split`` (real rules).
2. The networks are not measured here (GPU rules; ``bench/scale/README.md`` plans them).
   The fine-tuned features, the table and the ROC figure need their outputs, so at the
   smallest n the real ``train``/``darts_search``/``enas_search``/``nas_retrain`` rules run
   for one epoch at brief settings (``NETWORKS_BRIEF``); the larger sizes copy those outputs
   (their ``model.pt`` work at any size: global pooling). The fine-tuned features then cost
   what they cost at full size; their values come from a network trained one epoch on 700 images.
3. The measured stages: ``features``, ``features_finetuned``, ``classical`` x 4 x 2,
   ``table``, ``report_tsne``, ``report_roc``, with ``--allowed-rules`` naming only them (no
   network can be retrained by accident).
4. ``--svm-compare``: at those sizes the SVM rule again with ``classical.svm.variant``
   exact, nystroem and linear (metrics and benchmark kept under ``svm_compare/<variant>/``).

Every Snakemake job writes its benchmark TSV (wall ``s``, ``cpu_time``, ``max_rss`` MB);
``--collect`` gathers them, with the load (``uptime``) logged before and after every call in
``<work>/rehearsal.log``, into one raw table.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from e2e_helpers import WORKFLOW_FILES, copy_workflow, workflow_env  # noqa: E402  (the e2e tests' throw-away workflow copy)

NETWORKS = ["cnn2", "resnet_ll", "resnet_fbp", "darts", "enas"]
MEASURED_RULES = ["features", "features_finetuned", "classical", "table", "report_tsne", "report_roc"]
DATA_RULES = ["generate", "ingest", "split"]
VARIANTS = ["exact", "nystroem", "linear"]


def sizes_of(n: int) -> tuple[int, int]:
    """(train, test) images for n in all: params.yaml's 1,000 + 300 at 1,300, else the study's
    ratio (30,000 : 3,000)."""
    if n == 1300:
        return 1000, 300
    n_test = round(n / 11)
    return n - n_test, n_test


SEED = 0  # the rehearsal's one study seed (rehearsal_override)


def rehearsal_override(n: int) -> dict:
    n_train, n_test = sizes_of(n)
    return {
        "generate": {"n_train": n_train, "n_test": n_test, "image_size": 224},
        # warn: among 33,000 distinct generated chips one pair falls within the look-alike
        # threshold (bench/ingest/README.md); `fail` would stop for a person to decide
        "ingest": {"root": "data/raw/builtin", "test_labels": "data/raw/builtin/test_labels.csv",
                   "near_duplicates": {"policy": "warn"}},
        "features": {"weights": "none", "weights_file": None},
        # one study seed: the rehearsal measures each job's cost at size n, and every seed's job
        # of a rule costs the same (the seed changes the draws, not the work)
        "study": {"seeds": [SEED]},
    }


def networks_brief() -> dict:
    """One epoch of every network, the NAS parts at params.yaml's built-in (tiny) settings:
    whole sections, so the recursive merge leaves nothing of full.yaml's search settings."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    brief: dict = {"train": {m: {"loop": {"epochs": 1, "patience": 0}} for m in ("cnn2", "resnet_ll", "resnet_fbp")}}
    for section in ("darts_search", "enas_search", "nas_retrain"):
        brief[section] = copy.deepcopy(params[section])
    brief["darts_search"]["epochs"] = brief["enas_search"]["epochs"] = 1
    brief["nas_retrain"]["loop"]["epochs"] = 1
    return brief


class Rehearsal:
    def __init__(self, work: Path, cores: int):
        self.work = work
        self.cores = cores
        self.log = work / "rehearsal.log"

    def note(self, text: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
        print(line, flush=True)
        with self.log.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def uptime(self) -> str:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    def snakemake(self, wd: Path, configs: list[str], targets: list[str], rules: list[str] | None = None,
                  force: list[str] | None = None) -> None:
        """Run ``targets``; only ``rules`` may run. Generated images and networks made once are
        kept across code changes (mtime trigger: regenerating 33,000 images costs an hour), while
        every job of the ``force`` rules reruns, so each measured row is this code's."""
        # targets first: every option after them takes a list of values
        cmd = [sys.executable, "-m", "snakemake", *targets, "--cores", str(self.cores), "--configfile", *configs,
               "--rerun-incomplete", "--quiet", "rules"]
        cmd += ["--rerun-triggers", "mtime"] if force is None else ["--rerun-triggers", "mtime", "params", "input"]
        if rules:
            cmd += ["--allowed-rules", *rules]
        if force:
            cmd += ["--forcerun", *force]
        self.note(f"[{wd.name}] {' '.join(cmd[3:])}  | load before: {self.uptime()}")
        t0 = time.perf_counter()
        # On a machine shared with other jobs, OpenMP threads that spin while waiting for a
        # descheduled sibling burn CPU time and stall (bench/README.md, --passive): sleep instead,
        # so cpu_time is the work done.
        env = dict(workflow_env(wd), OMP_WAIT_POLICY="PASSIVE")  # the copy's own src/ on PYTHONPATH
        out = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=env)
        (wd / "snakemake_calls.log").open("a").write(out.stdout + out.stderr)
        self.note(f"[{wd.name}] rc {out.returncode} in {time.perf_counter() - t0:.0f} s | load after: {self.uptime()}")
        if out.returncode != 0:
            raise SystemExit(f"snakemake failed in {wd}; see {wd / 'snakemake_calls.log'}")

    def prepare(self, n: int) -> Path:
        wd = self.work / f"n{n}"
        wd.mkdir(parents=True, exist_ok=True)
        for name in WORKFLOW_FILES:  # fresh code, results kept
            target = wd / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        copy_workflow(wd)
        (wd / "rehearsal.yaml").write_text(yaml.safe_dump(rehearsal_override(n), sort_keys=False))
        (wd / "networks_brief.yaml").write_text(yaml.safe_dump(networks_brief(), sort_keys=False))
        return wd

    def run_size(self, n: int, smallest: int, data_only: bool = False) -> None:
        wd = self.prepare(n)
        configs = ["config/full.yaml", "rehearsal.yaml"]
        # the images again only when the generator's code or settings changed; then ingest and
        # split always (two calls: one that also forces would leave them out after a regeneration)
        self.snakemake(wd, configs, ["data/raw/builtin"], ["generate"], force=[])
        self.snakemake(wd, configs, ["results/split/split.parquet"], ["ingest", "split"], force=["ingest", "split"])
        if data_only:
            return
        if n == smallest:
            self.snakemake(wd, [*configs, "networks_brief.yaml"],
                           [f"results/models/{m}/seed{SEED}/metrics.json" for m in NETWORKS],
                           ["train", "darts_search", "enas_search", "nas_retrain"])
        else:  # copies, newer than this size's split (copyfile: fresh file times)
            src = self.work / f"n{smallest}"
            for sub in [f"results/models/{m}" for m in NETWORKS] + ["results/nas"]:
                shutil.rmtree(wd / sub, ignore_errors=True)
                shutil.copytree(src / sub, wd / sub, copy_function=shutil.copyfile)
        targets = ["results/table/results.csv", "results/report/figures/tsne.png", "results/report/figures/roc.png"]
        self.snakemake(wd, configs, targets, MEASURED_RULES, force=MEASURED_RULES)

    def svm_compare(self, n: int) -> None:
        wd = self.work / f"n{n}"
        for variant in VARIANTS:
            (wd / f"svm_{variant}.yaml").write_text(yaml.safe_dump({"classical": {"svm": {"variant": variant}}}))
            self.snakemake(wd, ["config/full.yaml", "rehearsal.yaml", f"svm_{variant}.yaml"],
                           [f"results/models/svm_{f}/seed{SEED}/metrics.json" for f in ("pretrained", "finetuned")], ["classical"],
                           force=["classical"])
            keep = wd / "svm_compare" / variant
            keep.mkdir(parents=True, exist_ok=True)
            for f in ("pretrained", "finetuned"):
                shutil.copyfile(wd / f"results/models/svm_{f}/seed{SEED}/metrics.json", keep / f"svm_{f}.metrics.json")
                shutil.copyfile(wd / f"benchmarks/classical/svm_{f}_seed{SEED}.tsv", keep / f"svm_{f}.tsv")
                shutil.copyfile(wd / f"logs/classical/svm_{f}_seed{SEED}.log", keep / f"svm_{f}.log")


def _bench_row(path: Path, log: Path) -> dict:
    """Snakemake's benchmark (sampled: every second for 30 s, then every 30 s) and the job's
    own exact figures from its log line (``scripting.resource_usage``)."""
    with path.open() as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    out = {k: row[k] for k in ("s", "cpu_time", "max_rss", "mean_load")}
    found = re.search(r"finished in ([\d.]+) s \(cpu ([\d.]+) s, peak RSS (\d+) MB", log.read_text()) if log.exists() else None
    if found:
        out.update(log_s=found[1], log_cpu=found[2], log_rss=found[3])
    return out


def _auto_variant(n: int) -> str:
    """The SVM variant that params.yaml's ``classical.svm`` runs at size n (the classifier's own rule)."""
    from pipeline_lib.classical.svm_variants import resolve_variant, split_params

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    n_val = params["split"]["val_good"] + params["split"]["val_bad"]
    return resolve_variant(split_params(params["classical"]["svm"])[0], sizes_of(n)[0] - n_val)


def collect(work: Path, out: Path) -> None:
    """One raw row per (n, job[, variant]) from every benchmark TSV under ``work``."""
    rows = []
    for wd in sorted(work.glob("n*"), key=lambda p: int(p.name[1:])):
        n = int(wd.name[1:])
        compared = (wd / "svm_compare").is_dir()
        for tsv in sorted((wd / "benchmarks").rglob("*.tsv")):
            logged = str(tsv.relative_to(wd / "benchmarks").with_suffix(""))
            job = logged.removesuffix(f"_seed{SEED}")  # the job's name without the one study seed
            if compared and job.startswith("classical/svm_"):
                # the comparison's last variant overwrote these files: the study's own row is the
                # variant that `auto` picks at this size, taken from its kept copy below
                chosen = _auto_variant(n)
                tsv = wd / "svm_compare" / chosen / f"{Path(job).name}.tsv"  # kept without the seed
                rows.append({"n": n, "job": job, "variant": "", **_bench_row(tsv, tsv.with_suffix(".log"))})
                continue
            rows.append({"n": n, "job": job, "variant": "", **_bench_row(tsv, wd / "logs" / f"{logged}.log")})
        for tsv in sorted((wd / "svm_compare").glob("*/*.tsv")):
            metrics = json.loads(tsv.with_suffix(".metrics.json").read_text())
            rows.append({"n": n, "job": f"classical/{tsv.stem}", "variant": tsv.parent.name, **_bench_row(tsv, tsv.with_suffix(".log")),
                         "valid_acc": metrics["valid_acc"], "test_auc": metrics["test_auc"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["n", "job", "variant", "s", "cpu_time", "max_rss", "mean_load", "log_s", "log_cpu", "log_rss", "valid_acc", "test_auc"]
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} rows -> {out}")


CPU_STAGES = ("ingest", "split", "features/pretrained", "features/finetuned", "classical/", "table", "report/tsne", "report/roc")


def summarize(rows_tsv: Path, big: tuple[int, int] = (10000, 33000)) -> str:
    """Markdown: stage x n (wall s, CPU s, peak RSS MB) and the growth exponents between the
    two largest sizes, log(t2 / t1) / log(n2 / n1), of wall and of CPU time; and the SVM
    variants side by side."""
    import math

    import pandas as pd

    rows = pd.read_csv(rows_tsv, sep="\t", dtype={"variant": str}).fillna({"variant": ""})
    # CPU and peak RSS: the larger of Snakemake's sampled figure (the whole process tree, e.g. the
    # SVM's calibration workers) and the job's own exact one (its process and finished children)
    rows["cpu_time"] = rows[["cpu_time", "log_cpu"]].max(axis=1)
    rows["max_rss"] = rows[["max_rss", "log_rss"]].max(axis=1)
    main = rows[(rows["variant"] == "") & rows["job"].map(lambda j: j == "generate" or j.startswith(CPU_STAGES))]
    sizes = sorted(main["n"].unique())
    head = "| stage | " + " | ".join(f"n={n:,}: wall s / CPU s / peak RSS MB" for n in sizes)
    head += f" | exponent {big[0]:,}→{big[1]:,} (wall / CPU) |"
    lines = [head, "| --- |" + " ---: |" * (len(sizes) + 1)]
    by = main.set_index(["job", "n"])
    order = ("generate", *CPU_STAGES)
    for job in sorted(main["job"].unique(), key=lambda j: (next(i for i, s in enumerate(order) if j.startswith(s)), j)):
        cells = []
        for n in sizes:
            r = by.loc[(job, n)] if (job, n) in by.index else None
            cells.append("-" if r is None else f"{r['s']:,.1f} / {r['cpu_time']:,.1f} / {r['max_rss']:,.0f}")
        exp = "-"
        if all((job, n) in by.index for n in big):
            a, b = by.loc[(job, big[0])], by.loc[(job, big[1])]
            k = math.log(big[1] / big[0])
            f = lambda x, y: f"{math.log(y / x) / k:.2f}" if x > 0 and y > 0 else "-"  # noqa: E731
            exp = f"{f(a['s'], b['s'])} / {f(a['cpu_time'], b['cpu_time'])}"
        lines.append(f"| {job} | " + " | ".join(cells) + f" | {exp} |")
    cpu = main[main["job"] != "generate"].groupby("n")[["s", "cpu_time", "max_rss"]].agg({"s": "sum", "cpu_time": "sum", "max_rss": "max"})
    lines.append("| **CPU stages, all** | " + " | ".join(
        f"**{cpu.loc[n, 's'] / 60:,.1f} min / {cpu.loc[n, 'cpu_time'] / 60:,.1f} min / {cpu.loc[n, 'max_rss']:,.0f}**" for n in sizes) + " | |")
    svm = rows[rows["variant"] != ""]
    if len(svm):
        lines += ["", "| n | features | variant | valid acc % | test AUC % | wall s | CPU s | peak RSS MB |",
                  "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in svm.sort_values(["n", "job", "variant"]).itertuples():
            lines.append(f"| {r.n:,} | {r.job.split('_')[-1]} | {r.variant} | {100 * r.valid_acc:.2f} | {100 * r.test_auc:.2f} | "
                         f"{r.s:,.1f} | {r.cpu_time:,.1f} | {r.max_rss:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1300, 10000, 33000])
    ap.add_argument("--svm-compare", type=int, nargs="*", default=[])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--data-only", action="store_true", help="only generate, ingest and split (e.g. ahead of time)")
    ap.add_argument("--collect", type=Path, help="only gather the benchmark rows into this TSV (and print the summary)")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.collect:
        collect(args.work, args.collect)
        print(summarize(args.collect))
        return
    r = Rehearsal(args.work.resolve(), args.cores)
    smallest = min([*args.sizes, *args.svm_compare, 1300])
    for n in args.sizes:
        r.run_size(n, smallest, args.data_only)
    for n in args.svm_compare:
        r.svm_compare(n)


if __name__ == "__main__":
    main()
