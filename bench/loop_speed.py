"""Training loop speed: the project's loop against a bare training step of the same model.

    PYTHONPATH=src python bench/loop_speed.py [--models cnn2,resnet_fbp,darts] [--epochs 3]
        [--fraction 1.0] [--threads 1] [--no-mallopt] [--data DIR] [--compare eff50c8[,COMMIT]] [--check --target 0.8]

For every model, at the default params (params.yaml: image size, batch size, augmentations;
one thread as the workflow's jobs; glibc's allocator set as
every job sets it, ``runtime.allocator``), in one run:

* **bare**: forward + class-weighted cross-entropy (+ auxiliary loss, gradient clipping where
  the params set them) + backward + optimizer step on random tensors already in memory, same
  batch size, threads and memory format (``loop.channels_last``), the model and optimizer
  built as the job builds them;
* **loop**: ``pipeline_lib.training.train.fit`` on the built-in data (generated, ingested and split
  into a temporary folder by ``data.builtin.built_in_split``, as the rules do), the datasets made as
  ``deep.train_and_evaluate`` makes them: training images / wall time of ``fit`` (validation
  every epoch, checkpoint, history and setup included);
* **phases**: what the loop does besides the bare steps, timed alone: one pass over the
  training loader (decode + augment + collate), one validation pass, one checkpoint save.

The bare pass runs right before every epoch (``fit``'s ``on_epoch_start``), since a shared
machine's speed drifts; the verdict is the median of the paired per-epoch ratios, in wall and
in CPU time. ``--compare COMMIT`` also runs the cnn2 training *job*
(``deep.train_and_evaluate``) of that commit and of this tree, each in a fresh subprocess with
its own ``PYTHONPATH`` (the commit is ``git archive``d into a temporary folder), and prints the
seconds per epoch of both. Results are in bench/README.md ("Training loop speed").
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
GENOTYPE = ROOT / "bench" / "tune" / "genotypes" / "darts.json"


def load_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def network_for(model_name: str, params: dict):
    """(NetworkConfig, BackboneConfig | None, genotype | None) as the train / nas_retrain rules build them."""
    from pipeline_lib.models.end_to_end import BackboneConfig, NetworkConfig
    from pipeline_lib.study.registry import spec

    if spec(model_name).family == "nas":
        network = NetworkConfig.from_params({**params["nas_retrain"], "seed": params["study"]["seeds"][0]},
                                            where="params.yaml: nas_retrain")
        return network, None, json.loads(GENOTYPE.read_text())
    section = params["train"]
    seed = params["study"]["seeds"][0]  # the study's first training seed (train.seed before seeds were a DAG dimension)
    network = NetworkConfig.from_params({"image_size": section["image_size"], "seed": seed, **section[model_name]},
                                        where=f"params.yaml: train.{model_name}")
    backbone = None
    if spec(model_name).uses_backbone:
        backbone = BackboneConfig.from_params({k: params["features"][k] for k in ("arch", "weights", "weights_file", "seed")})
    return network, backbone, None


def build(model_name: str, params: dict):
    from pipeline_lib.models.end_to_end import _build_network
    from pipeline_lib.nas.genotypes import Genotype

    network, backbone, genotype = network_for(model_name, params)
    if genotype is not None:
        genotype = Genotype.from_dict(genotype).to_dict()
    model, _, _ = _build_network(model_name, network, backbone, genotype)
    return model, network


def bare_rate(model, model_name: str, network, steps: int) -> tuple[float, float]:
    """(wall, CPU) images/s of forward + loss + backward + optimizer step on tensors already in memory."""
    from pipeline_lib.training.evaluation import split_logits
    from pipeline_lib.models.networks import param_groups
    from pipeline_lib.training.train import _backward_step
    from pipeline_lib.training.config import make_optimizer

    from pipeline_lib.runtime.devices import precision

    loop, size = network.loop, network.image_size
    # the memory format the loop trains in (``fit`` converts model and batches the same way)
    prec = precision(torch.device("cpu"), amp=False, channels_last=loop.channels_last)
    model = prec.prepare_model(copy.deepcopy(model)).train()
    optimizer = make_optimizer(param_groups(model, model_name, loop.lr, loop.backbone_lr), loop)
    generator = torch.Generator().manual_seed(0)
    batches = [(prec.to_input(torch.randn(loop.batch_size, 3, size, size, generator=generator)),
                torch.randint(0, 2, (loop.batch_size,), generator=generator)) for _ in range(4)]
    weights = torch.tensor([0.77, 1.43])  # the balanced weights of a 65/35 training set

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        logits, aux = split_logits(model(images))
        loss = F.cross_entropy(logits, labels, weight=weights)
        if aux is not None and loop.aux_weight > 0:
            loss = loss + loop.aux_weight * F.cross_entropy(aux, labels, weight=weights)
        _backward_step(loss, optimizer, None, loop.grad_clip)

    step(*batches[0])  # warm-up (allocator, first-call dispatch)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        step(*batches[i % len(batches)])
    images = steps * loop.batch_size
    return images / (time.perf_counter() - started), images / (time.process_time() - cpu)


def datasets(model_name: str, frame: pd.DataFrame, network):
    """Train and val datasets exactly as ``deep.train_and_evaluate`` makes them."""
    from pipeline_lib.models import end_to_end as deep

    parts = {name: frame[frame["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}
    maker = getattr(deep, "make_datasets", None)
    if maker is not None:
        train_set, val_set, _ = maker(parts["train"], parts["val"], parts["test"], network)
        return train_set, val_set
    from pipeline_lib.data.datasets import ChipImages, eval_transform, train_transform_for

    size = network.image_size
    return (ChipImages(parts["train"], train_transform_for(size, network.loop.augment)),
            ChipImages(parts["val"], eval_transform(size)))


def phases(model, model_name: str, frame: pd.DataFrame, network, state) -> dict:
    """Seconds of one data-only training pass, one validation pass and one checkpoint save."""
    from pipeline_lib.runtime.devices import loader_generator, precision
    from pipeline_lib.training.evaluation import evaluate_loader
    from pipeline_lib.training.loop import Checkpoint
    from pipeline_lib.training.train import make_loaders

    train_set, val_set = datasets(model_name, frame, network)
    device = torch.device("cpu")
    train_loader, val_loader = make_loaders(train_set, val_set, network.loop, device, loader_generator(0))
    out = {}
    started = time.perf_counter()
    for _ in train_loader:
        pass
    out["data_s"] = time.perf_counter() - started
    started = time.perf_counter()
    evaluate_loader(model, val_loader, precision(device, amp=False))
    out["val_s"] = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        Checkpoint(tmp).save("fp", {"state": state.state_dict(), "history": []})
        out["ckpt_s"] = time.perf_counter() - started
        out["ckpt_mb"] = (Path(tmp) / "checkpoint.pt").stat().st_size / 2**20
    return out


class PairedClock:
    """``on_epoch_start`` hook of ``fit``: times a bare pass of the same model right before every
    epoch, so each epoch's loop rate has a bare rate measured seconds earlier (a shared machine's
    speed drifts by minutes). Loop time of epoch e: from the end of its bare pass to the start of
    the next (validation, checkpoint and history of epoch e included)."""

    def __init__(self, model_name: str, network, bare_steps: int, inner=None):
        self.model_name, self.network, self.bare_steps, self.inner = model_name, network, bare_steps, inner
        self.bare: list[tuple[float, float]] = []  # (wall img/s, cpu img/s)
        self.marks: list[tuple[float, float]] = []  # (wall, cpu) at the end of each bare pass
        self.starts: list[tuple[float, float]] = []  # (wall, cpu) at each hook entry

    def __call__(self, model, epoch: int, epochs: int) -> None:
        self.starts.append((time.perf_counter(), time.process_time()))
        self.bare.append(bare_rate(model, self.model_name, self.network, self.bare_steps))
        if self.inner is not None:
            self.inner(model, epoch, epochs)
        model.train()
        self.marks.append((time.perf_counter(), time.process_time()))

    def epochs(self, end: tuple[float, float], n_train: int) -> list[dict]:
        ends = self.starts[1:] + [end]
        return [{"bare_img_s": bare[0], "bare_cpu_img_s": bare[1], "loop_img_s": n_train / (stop[0] - mark[0]),
                 "loop_cpu_img_s": n_train / (stop[1] - mark[1]), "loop_s": stop[0] - mark[0]}
                for bare, mark, stop in zip(self.bare, self.marks, ends)]


def measure_model(model_name: str, frame: pd.DataFrame, params: dict, epochs: int, bare_steps: int) -> dict:
    """Per epoch: bare rate, then one epoch of ``fit``; the median of the paired ratios."""
    from pipeline_lib.models.networks import param_groups
    from pipeline_lib.training.train import TrainState, fit
    from pipeline_lib.training.config import make_optimizer, make_scheduler

    model, network = build(model_name, params)
    loop = copy.deepcopy(network.loop)
    loop.epochs, loop.patience = epochs, 0
    started = time.perf_counter()
    train_set, val_set = datasets(model_name, frame, network)
    setup_s = time.perf_counter() - started
    inner = (lambda m, e, n: m.on_epoch_start(e, n)) if hasattr(model, "on_epoch_start") else None
    clock = PairedClock(model_name, network, bare_steps, inner)
    with tempfile.TemporaryDirectory() as tmp:
        fit(model, train_set, val_set, loop, device="cpu", state_dir=tmp, history_csv=Path(tmp) / "h.csv",
            param_groups=param_groups(model, model_name, loop.lr, loop.backbone_lr), progress=False, on_epoch_start=clock)
        end = (time.perf_counter(), time.process_time())
    per_epoch = clock.epochs(end, len(train_set))
    optimizer = make_optimizer(param_groups(model, model_name, loop.lr, loop.backbone_lr), loop)
    state = TrainState(model, optimizer, make_scheduler(optimizer, loop), None, torch.Generator())
    state.best_state = {k: v.clone() for k, v in model.state_dict().items()}
    extra = phases(model, model_name, frame, network, state)
    ratio = statistics.median(e["loop_img_s"] / e["bare_img_s"] for e in per_epoch)
    cpu_ratio = statistics.median(e["loop_cpu_img_s"] / e["bare_cpu_img_s"] for e in per_epoch)
    bare = statistics.median(e["bare_img_s"] for e in per_epoch)
    return {"model": model_name, "n_train": len(train_set), "n_val": len(val_set), "bare_img_s": bare,
            "loop_img_s": statistics.median(e["loop_img_s"] for e in per_epoch), "ratio": ratio, "cpu_ratio": cpu_ratio,
            "bare_epoch_s": len(train_set) / bare, "loop_epoch_s": statistics.median(e["loop_s"] for e in per_epoch),
            "dataset_setup_s": setup_s, "epochs": per_epoch, **extra}


CHILD = r"""
import json, sys, tempfile, time, inspect
from pathlib import Path
import pandas as pd, torch, yaml
torch.set_num_threads(int(sys.argv[3]))
from pipeline_lib.models import end_to_end as deep
from pipeline_lib.training.config import TrainConfig
params = yaml.safe_load(open(sys.argv[1]))
frame = pd.read_parquet(sys.argv[2])
epochs = int(sys.argv[4])
section = params["train"]
spec = section["cnn2"]
seed = params["study"]["seeds"][0]
loop = dict(spec["loop"], seed=seed, epochs=epochs, patience=0)
with tempfile.TemporaryDirectory() as tmp:
    out = {k: str(Path(tmp) / k) for k in ("model", "metrics", "predictions", "roc", "state_dir", "history")}
    started, cpu = time.perf_counter(), time.process_time()
    if "network" in inspect.signature(deep.train_and_evaluate).parameters:
        network = deep.NetworkConfig.from_params({"image_size": section["image_size"], "seed": seed,
                                                  "model": spec["model"], "loop": loop})
        deep.train_and_evaluate("cnn2", frame, network, deep.ModelOutputs(**out), progress=False)
    else:
        deep.train_and_evaluate("cnn2", frame, TrainConfig(**loop), image_size=section["image_size"],
                                weights_path=out["model"], metrics_path=out["metrics"], predictions_path=out["predictions"],
                                roc_path=out["roc"], state_dir=out["state_dir"], history_csv=out["history"],
                                model_kwargs=spec["model"], progress=False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    history = pd.read_csv(out["history"])
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "epoch_s": history["seconds"].tolist()}))
"""


def _tree(commit: str, work: Path) -> Path:
    folder = work / f"tree-{commit}"
    if not folder.exists():
        folder.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src", "params.yaml"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def compare_job(commits: list[str], frame: pd.DataFrame, threads: int, epochs: int, rounds: int, work: Path) -> list[dict]:
    """cnn2's training job at each commit and in this tree, in turn, ``rounds`` times, each in a fresh process."""
    trees = [(commit, _tree(commit, work)) for commit in commits] + [("this tree", ROOT)]
    split = work / "split.parquet"
    frame.to_parquet(split)
    rows = []
    for label, tree in trees * rounds:
        env = dict(os.environ, PYTHONPATH=str(tree / "src"))
        proc = subprocess.run([sys.executable, "-c", CHILD, str(tree / "params.yaml"), str(split), str(threads), str(epochs)],
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{label}: the cnn2 job failed:\n{proc.stderr[-3000:]}")
        rows.append({"tree": label, **json.loads(proc.stdout.strip().splitlines()[-1])})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<11}{'bare img/s':>11}{'loop img/s':>11}{'ratio':>7}{'cpu ratio':>10}{'bare s/ep':>10}"
          f"{'loop s/ep':>10}{'data s':>8}{'val s':>7}{'ckpt s':>8}{'ckpt MB':>8}")
    for r in rows:
        print(f"{r['model']:<11}{r['bare_img_s']:>11.1f}{r['loop_img_s']:>11.1f}{r['ratio']:>7.2f}{r['cpu_ratio']:>10.2f}"
              f"{r['bare_epoch_s']:>10.2f}{r['loop_epoch_s']:>10.2f}{r['data_s']:>8.2f}{r['val_s']:>7.2f}"
              f"{r['ckpt_s']:>8.2f}{r['ckpt_mb']:>8.0f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn2,resnet_fbp,darts")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="use this share of the train and val images (both, so their proportion stays)")
    parser.add_argument("--bare-steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the workflow's JOB_THREADS: 1)")
    parser.add_argument("--no-mallopt", action="store_true",
                        help="keep glibc's default allocator settings (jobs run with runtime.allocator's)")
    parser.add_argument("--data", type=Path, help="the built-in data (default: generated into a temporary folder)")
    parser.add_argument("--compare", metavar="COMMIT[,COMMIT]", help="also time cnn2's job at these commits and this tree")
    parser.add_argument("--compare-epochs", type=int, default=3)
    parser.add_argument("--compare-rounds", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="exit 1 when cnn2 or resnet_fbp is below --target")
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.no_mallopt:  # as every job does (step.run_step)
        from pipeline_lib.runtime.allocator import retain_freed_memory

        retain_freed_memory()
    params = load_params()
    print(f"load: {os.getloadavg()}, threads {torch.get_num_threads()}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        from pipeline_lib.data.builtin import built_in_split, folder_split

        if data is None:
            frame = built_in_split(params, Path(tmp) / "builtin")
        else:
            frame = folder_split(params, data)
        if args.fraction < 1:
            frame = frame.groupby(["split", "label"], group_keys=False).sample(frac=args.fraction, random_state=0)
        rows = []
        for name in args.models.split(","):
            rows.append(measure_model(name, frame, params, args.epochs, args.bare_steps))
            print(json.dumps(rows[-1]), flush=True)
        print_table(rows)
        compared = compare_job(args.compare.split(","), frame, args.threads, args.compare_epochs, args.compare_rounds,
                               Path(tmp)) if args.compare else []
        for row in compared:
            print(f"cnn2 job {row['tree']:<10}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU for "
                  f"{len(row['epoch_s'])} epochs, per epoch median {statistics.median(row['epoch_s']):.2f} s "
                  f"({', '.join(f'{s:.2f}' for s in row['epoch_s'])})", flush=True)
    print(f"load after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "compare": compared}, indent=1))
    failed = [r["model"] for r in rows if r["model"] in ("cnn2", "resnet_fbp") and r["ratio"] < args.target]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
