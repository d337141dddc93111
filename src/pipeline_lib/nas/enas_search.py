"""ENAS micro search: alternate shared-weight child epochs and REINFORCE controller steps.

``search(child_train, reward_data, ...)`` runs, per epoch (as in the official code):

1. ``max_child_steps`` child minibatches (default one pass over ``child_train``): SGD with
   Nesterov momentum (or Adam, ``optimizer``), cosine learning rate fixed within an epoch,
   gradient clipping, a fresh architecture sampled from the controller for every minibatch;
2. after ``warmup_epochs``, ``controller_steps`` REINFORCE steps of ``controller_samples``
   samples each; a sample's reward is the child's accuracy (dropout off, BN on batch
   statistics) on the next minibatch of ``reward_data`` plus ``entropy_weight`` x its entropy,
   against a moving-average baseline; Adam (beta1 = 0, eps = 1e-3) on the controller;
3. the diagnostics: the greedy cell's reward and its held-out score (``search_eval``).

``reward_data`` must be held out of the *training* split (never validation, never test).
After the last epoch, ``n_candidates`` samples are scored on the same ``candidate_batches``
reward minibatches; the best becomes a ``Genotype(source="enas")``.

Every epoch ends with an atomic checkpoint in ``state_dir`` (child weights, controller,
both optimizers, baseline, epoch, history, the controller's generator); a rerun resumes
from it. All randomness of an epoch is derived from (seed, epoch) — global torch RNG
(dropout), the controller's sampling generator and the data order — inside
``torch.random.fork_rng``, so a resumed search equals an uninterrupted one (same device
and thread count) and the caller's global RNG is left alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..runtime.devices import loader_options
from ..io.errors import PipelineError
from ..training.loop import Checkpoint, Progress, Run, fingerprint, run_epochs
from ..training.schedules import cosine_lr, set_lr
from .enas_child import SharedChild
from .enas_config import EnasConfig
from .enas_controller import Arch, Controller, make_optimizer, reinforce_step
from .genotypes import Genotype
from .search_eval import enas_heldout, sampling

STATE_FILE = "enas_search.pt"


# ---------------------------------------------------------------------- helpers
def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, purpose, epoch, ...), stable across runs."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def _as_dataset(data: Any, name: str) -> Dataset:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        data = TensorDataset(data[0], data[1])
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise PipelineError(f"enas {name}: expected a map-style Dataset of (image, label) or an (X, y) tensor pair")
    if len(data) < 2:
        raise PipelineError(f"enas {name}: needs at least 2 images, got {len(data)}")
    return data


def _loader(ds: Dataset, batch_size: int, seed: int, cfg: EnasConfig, device: torch.device) -> DataLoader:
    bs = min(batch_size, len(ds))
    # no tiny last batch (BN on batch statistics); in-memory tensors: 0 workers unless params say
    return DataLoader(ds, batch_size=bs, drop_last=len(ds) > bs, **sampling(ds, torch.Generator().manual_seed(seed),
                      cfg.balance_classes), **loader_options(device, cfg.num_workers))


def _cycle(ds: Dataset, batch_size: int, seed: int, cfg: EnasConfig, device: torch.device) -> Iterator:
    cycle = 0
    while True:
        for batch in _loader(ds, batch_size, derive_seed(seed, cycle), cfg, device):
            yield batch
        cycle += 1


def _to(batch, device: torch.device, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch[0], batch[1]
    fmt = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
    return x, torch.as_tensor(y).to(device, non_blocking=True).long()


@torch.no_grad()
def batch_accuracy(child: SharedChild, arch: Arch, x: torch.Tensor, y: torch.Tensor) -> float:
    child.eval()
    return float((child(x, arch).argmax(1) == y).float().mean())


def _fmt(v: float | None, digits: int = 3) -> str:  # a statistic that a warm-up epoch has none of
    return "n/a" if v is None else f"{v:.{digits}f}"


def _rng_devices(device: torch.device) -> list[int]:
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def build_models(num_classes: int, cfg: EnasConfig, seed: int) -> tuple[SharedChild, Controller]:
    """The shared child and the controller, initialised from ``seed`` only (CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 0))
        child = SharedChild(
            num_classes,
            num_nodes=cfg.num_nodes,
            channels=cfg.channels,
            num_layers=cfg.num_layers,
            num_reductions=cfg.num_reductions,
            stem_stride=cfg.stem_stride,
            dropout=cfg.dropout,
        )
        controller = Controller(
            cfg.num_nodes,
            cfg.controller_hidden,
            tanh_constant=cfg.tanh_constant,
            op_tanh_reduce=cfg.op_tanh_reduce,
            temperature=cfg.temperature,
            seed=derive_seed(seed, 1),
        )
    return child, controller


def child_optimizer(child: SharedChild, cfg: EnasConfig) -> torch.optim.Optimizer:
    """ENAS's SGD (Nesterov momentum, L2 as weight decay) or Adam (``enas.optimizer``); the cosine
    schedule sets the learning rate of either every epoch."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(child.parameters(), lr=cfg.lr_max, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(child.parameters(), lr=cfg.lr_max, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


# ---------------------------------------------------------------------- choose
def choose(
    child: SharedChild,
    controller: Controller,
    reward_data: Dataset,
    *,
    n_candidates: int,
    batches: int,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    cfg: EnasConfig | None = None,
) -> tuple[Arch, float, list[dict]]:
    """Sample candidates from the controller, score each on the same reward minibatches."""
    device = torch.device(device)
    cfg = cfg or EnasConfig()
    gen = torch.Generator().manual_seed(derive_seed(seed, 8))
    with torch.no_grad():
        archs = [controller.sample(generator=gen).arch for _ in range(n_candidates)]
    stream = _cycle(reward_data, batch_size, derive_seed(seed, 9), cfg, device)
    fixed = [_to(next(stream), device, cfg.channels_last) for _ in range(batches)]
    scored: dict[Arch, float] = {}
    rows = []
    for arch in archs:
        if arch not in scored:
            n = sum(len(y) for _, y in fixed)
            scored[arch] = sum(batch_accuracy(child, arch, x, y) * len(y) for x, y in fixed) / n
        rows.append({"arch": str(arch), "reward": scored[arch]})
    best = max(range(len(archs)), key=lambda i: (scored[archs[i]], -i))
    return archs[best], scored[archs[best]], rows


# ---------------------------------------------------------------------- search
class EnasState:
    """Everything an ENAS search resumes from (``loop.Resumable``)."""

    def __init__(self, child: SharedChild, controller: Controller, child_opt: torch.optim.Optimizer,
                 ctrl_opt: torch.optim.Optimizer, baseline: float):
        self.child, self.controller, self.child_opt, self.ctrl_opt = child, controller, child_opt, ctrl_opt
        self.baseline = baseline

    def state_dict(self) -> dict[str, Any]:
        return {"child": self.child.state_dict(), "controller": self.controller.state_dict(),
                "child_optimizer": self.child_opt.state_dict(), "controller_optimizer": self.ctrl_opt.state_dict(),
                "controller_generator": self.controller.generator.get_state(), "baseline": self.baseline}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.child.load_state_dict(state["child"])
        self.controller.load_state_dict(state["controller"])
        self.controller.generator.set_state(state["controller_generator"])
        self.child_opt.load_state_dict(state["child_optimizer"])
        self.ctrl_opt.load_state_dict(state["controller_optimizer"])
        self.baseline = float(state["baseline"])


def _check_inputs(epochs: int, num_classes: int, device: torch.device) -> None:
    if epochs < 1:
        raise PipelineError(f"enas.epochs: must be >= 1, got {epochs}")
    if num_classes < 2:
        raise PipelineError(f"enas num_classes: must be >= 2, got {num_classes}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"enas device: {device} requested but CUDA is not available; use cpu")


def _build_state(num_classes: int, cfg: EnasConfig, seed: int, device: torch.device) -> EnasState:
    child, controller = build_models(num_classes, cfg, seed)
    child.to(device)
    if cfg.channels_last:
        child.to(memory_format=torch.channels_last)
    return EnasState(child, controller, child_optimizer(child, cfg), make_optimizer(controller, cfg.controller_lr),
                     float(cfg.baseline_init))


def search(
    child_train: Dataset | tuple[torch.Tensor, torch.Tensor],
    reward_data: Dataset | tuple[torch.Tensor, torch.Tensor],
    *,
    num_classes: int,
    epochs: int,
    seed: int,
    device: str | torch.device = "cpu",
    log: logging.Logger | None = None,
    state_dir: str | Path,
    config: EnasConfig | Mapping[str, Any] | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    resume_key: str = "",
) -> tuple[Genotype | None, list[dict]]:
    """Run (or resume) an ENAS micro search; returns (genotype, per-epoch history).

    ``child_train`` trains the shared weights, ``reward_data`` gives the controller's
    rewards and the final choice: both held out of the training split, disjoint.
    Items are (image tensor [C, H, W], integer label). ``stop_after`` ends this call after
    that many epochs (checkpointed; the genotype is then None until a later call finishes).
    A checkpoint in ``state_dir`` is resumed only if it was made with the same config,
    classes, epochs, seed, dataset sizes and ``resume_key`` (pass e.g. a hash of the image
    ids/split file so changed data starts afresh); otherwise the search starts over.
    """
    cfg = config if isinstance(config, EnasConfig) else EnasConfig.from_params(config)
    device = torch.device(device)
    _check_inputs(epochs, num_classes, device)
    log = log or logging.getLogger("pipeline.enas")
    child_train, reward_data = _as_dataset(child_train, "child_train"), _as_dataset(reward_data, "reward_data")
    state = _build_state(num_classes, cfg, seed, device)
    run_fp = fingerprint(config=cfg, num_classes=num_classes, epochs=epochs, seed=seed, n_child_train=len(child_train),
                         n_reward=len(reward_data), resume_key=str(resume_key))
    run = Run(Checkpoint(state_dir, STATE_FILE, log=log), run_fp, state, epochs)
    meter = Progress(log, epochs, unit="step", enabled=progress)
    log.info("ENAS search: %d child-train / %d reward images, %d classes, shared child %.2fM params, %d epochs on %s",
             len(child_train), len(reward_data), num_classes, sum(p.numel() for p in state.child.parameters()) / 1e6,
             epochs, device)

    def one_epoch(epoch: int) -> dict:
        row = _run_epoch(state, child_train, reward_data, cfg=cfg, epoch=epoch, epochs=epochs, seed=seed,
                         device=device, meter=meter)
        meter.epoch_done(epoch, row["seconds"], row["child_steps"] + cfg.controller_steps,
                         f"lr {row['lr']:.4g} child loss {row['child_loss']:.4f} acc {row['child_acc']:.3f} "
                         f"({row['child_images_per_s']:.0f} img/s) | reward {_fmt(row['reward_mean'])} (max "
                         f"{_fmt(row['reward_max'])}) baseline {state.baseline:.3f} entropy {_fmt(row['entropy_mean'], 2)}"
                         f" | greedy {row['greedy_arch']} held-out acc {row['heldout_acc']:.3f} "
                         f"({row['heldout_correct']}/{row['heldout_n']})")
        return row

    history = run_epochs(run, one_epoch, stop_after=stop_after)
    if len(history) < epochs:
        log.info("ENAS: stopped after epoch %d/%d (rerun to resume)", len(history), epochs)
        return None, history
    genotype = _choose_genotype(state, reward_data, cfg, seed, device, epochs, num_classes, len(child_train))
    log.info("ENAS chose %s (reward %.3f)", genotype.meta["arch"], genotype.meta["reward"])
    return genotype, history


def _choose_genotype(state: EnasState, reward_data: Dataset, cfg: EnasConfig, seed: int, device: torch.device,
                     epochs: int, num_classes: int, n_child_train: int) -> Genotype:
    """The final choice: the best of ``n_candidates`` controller samples on the same reward batches."""
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(derive_seed(seed, 7))
        arch, reward, candidates = choose(
            state.child, state.controller, reward_data, n_candidates=cfg.n_candidates, batches=cfg.candidate_batches,
            batch_size=cfg.reward_bs, seed=seed, device=device, cfg=cfg,
        )
    return arch.to_genotype({
        "reward": reward, "arch": str(arch), "enas_arch": arch.to_dict(), "candidates": candidates,
        "search_epochs": epochs, "seed": seed, "num_classes": num_classes, "n_child_train": n_child_train,
        "n_reward": len(reward_data),
        "selection": (f"best mean accuracy of {cfg.n_candidates} controller samples on "
                      f"{cfg.candidate_batches} reward minibatches"),
        "final_baseline": state.baseline, "config": asdict(cfg),
    })


def train_child_epoch(state: EnasState, loader: Iterator, n_steps: int, cfg: EnasConfig, device: torch.device,
                      bar: Any = None) -> tuple[float, float, int]:
    """Shared weights, a fresh architecture per minibatch: (mean loss, accuracy, images seen)."""
    child, controller, optimizer = state.child, state.controller, state.child_opt
    child.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for step, batch in enumerate(loader):
        if step >= n_steps:
            break
        with torch.no_grad():
            arch = controller.sample().arch
        x, y = _to(batch, device, cfg.channels_last)
        logits = child(x, arch)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_([p for p in child.parameters() if p.grad is not None], cfg.grad_clip)
        optimizer.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += len(y)
        if bar is not None:
            bar.update(1)
    return loss_sum / max(seen, 1), correct / max(seen, 1), seen


def train_controller(state: EnasState, reward_data: Dataset, cfg: EnasConfig, stream_seed: int, device: torch.device,
                     bar: Any = None) -> dict[str, list]:
    """``controller_steps`` REINFORCE steps; a sample's reward is the child's accuracy on the next
    reward minibatch. Returns the samples' accuracies, rewards, entropies, architectures, losses."""
    stream = _cycle(reward_data, cfg.reward_bs, stream_seed, cfg, device)

    def reward_fn(arch: Arch) -> float:
        x, y = _to(next(stream), device, cfg.channels_last)
        return batch_accuracy(state.child, arch, x, y)

    out: dict[str, list] = {"accuracy": [], "reward": [], "entropy": [], "archs": [], "loss": []}
    for _ in range(cfg.controller_steps):
        state.baseline, stats = reinforce_step(
            state.controller, state.ctrl_opt, reward_fn, baseline=state.baseline, samples=cfg.controller_samples,
            baseline_decay=cfg.baseline_decay, entropy_weight=cfg.entropy_weight,
        )
        for key in ("accuracy", "reward", "entropy", "archs"):
            out[key] += getattr(stats, key)
        out["loss"].append(stats.loss)
        if bar is not None:
            bar.update(1)
    return out


def _run_epoch(state: EnasState, child_train: Dataset, reward_data: Dataset, *, cfg: EnasConfig, epoch: int,
               epochs: int, seed: int, device: torch.device, meter: Progress) -> dict:
    """One child epoch then the controller's steps, every random draw derived from (seed, epoch)."""
    started = time.perf_counter()
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(derive_seed(seed, 2, epoch))
        state.controller.generator.manual_seed(derive_seed(seed, 3, epoch))
        lr = cosine_lr(epoch, epochs, cfg.lr_max, cfg.lr_min, cfg.lr_t0, cfg.lr_tmul)
        set_lr(state.child_opt, lr)
        # max_child_steps minibatches, over as many reshuffled passes of the child half as they take
        n_steps = cfg.max_child_steps or len(child_train) // min(cfg.batch_size, len(child_train))  # len(_loader)
        loader = _cycle(child_train, cfg.batch_size, derive_seed(seed, 4, epoch), cfg, device)
        bar = meter.bar(n_steps + cfg.controller_steps, f"enas {epoch + 1}/{epochs}")
        try:
            child_started = time.perf_counter()
            child_loss, child_acc, seen = train_child_epoch(state, loader, n_steps, cfg, device, bar)
            child_seconds = time.perf_counter() - child_started
            samples = (train_controller(state, reward_data, cfg, derive_seed(seed, 5, epoch), device, bar)
                       if epoch >= cfg.warmup_epochs else {"accuracy": [], "reward": [], "entropy": [], "archs": [],
                                                           "loss": []})  # warm-up: the child alone
        finally:
            if bar is not None:
                bar.close()
        with torch.no_grad():
            greedy = state.controller.sample(greedy=True)
    row = _epoch_row(epoch, lr, child_loss, child_acc, n_steps, seen, child_seconds, samples, greedy, state.baseline, cfg,
                     time.perf_counter() - started)
    row["greedy_reward"] = greedy_reward(state.child, greedy.arch, reward_data, cfg, derive_seed(seed, 6, epoch), device)
    row.update(enas_heldout(state.child, greedy.arch, child_train, reward_data, cfg, device, seed))
    row["seconds"] = time.perf_counter() - started
    return row



def greedy_reward(child: SharedChild, arch: Arch, reward_data: Dataset, cfg: EnasConfig, stream_seed: int,
                  device: torch.device) -> float:
    """The controller's reward for ``arch`` as it is computed in training (accuracy on reward minibatches,
    BN on batch statistics), averaged over one pass of the reward half in seeded minibatches."""
    loader = _loader(reward_data, cfg.reward_bs, stream_seed, cfg, device)
    accs = [(batch_accuracy(child, arch, *_to(batch, device, cfg.channels_last)), len(batch[1])) for batch in loader]
    return sum(a * n for a, n in accs) / max(sum(n for _, n in accs), 1)


def _epoch_row(epoch, lr, child_loss, child_acc, n_steps, seen, child_seconds, samples, greedy, baseline, cfg,
               seconds) -> dict:
    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    rewards = samples["reward"]
    return {
        "epoch": epoch + 1, "lr": lr, "child_loss": child_loss, "child_acc": child_acc, "child_steps": n_steps,
        "child_images_per_s": seen / child_seconds if child_seconds > 0 else 0.0,
        "controller_steps": cfg.controller_steps if rewards else 0, "controller_samples": len(rewards),
        "controller_loss": sum(samples["loss"]) / max(cfg.controller_steps, 1),
        "accuracy_mean": mean(samples["accuracy"]), "reward_mean": mean(rewards),
        "reward_max": max(rewards) if rewards else None, "entropy_mean": mean(samples["entropy"]),
        "greedy_entropy": float(greedy.entropy), "baseline": float(baseline), "greedy_arch": str(greedy.arch),
        "sampled_archs": [str(a) for a in samples["archs"][: cfg.log_archs]], "seconds": seconds,
    }
