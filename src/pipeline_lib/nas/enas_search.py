"""ENAS micro search: alternate shared-weight child epochs and REINFORCE controller steps.

``search(child_train, reward_data, ...)`` runs, per epoch (as in the official code):

1. one child epoch over ``child_train``: SGD (Nesterov momentum, cosine learning rate
   fixed within an epoch, gradient clipping) on the shared weights, a fresh architecture
   sampled from the controller for every minibatch;
2. ``controller_steps`` REINFORCE steps of ``controller_samples`` samples each; a sample's
   reward is the child's accuracy (dropout off, BN on batch statistics) on the next
   minibatch of ``reward_data`` plus ``entropy_weight`` x the sample's entropy, against a
   moving-average baseline; Adam (beta1 = 0, eps = 1e-3) on the controller.

``reward_data`` must be held out of the *training* split (never the model-selection
validation split, never test): the caller splits it off.

After the last epoch, ``n_candidates`` architectures are sampled and each is scored on
the same ``candidate_batches`` reward minibatches; the best becomes a
``Genotype(source="enas")``.

Every epoch ends with an atomic checkpoint in ``state_dir`` (child weights, controller,
both optimizers, baseline, epoch, history, the controller's generator); a rerun resumes
from it. All randomness of an epoch is derived from (seed, epoch) — global torch RNG
(dropout), the controller's sampling generator and the data order — inside
``torch.random.fork_rng``, so a resumed search equals an uninterrupted one (same device
and thread count) and the caller's global RNG is left alone.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from ..atomic import atomic_path
from ..devices import loader_options
from ..errors import PipelineError
from .enas_child import SharedChild
from .enas_config import EnasConfig
from .enas_controller import Arch, Controller, make_optimizer, reinforce_step
from .genotypes import Genotype

STATE_FORMAT = "nexperia-enas-state/1"
STATE_FILE = "enas_search.pt"


# ---------------------------------------------------------------------- helpers
def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, purpose, epoch, ...), stable across runs."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def cosine_lr(epoch: int, epochs: int, lr_max: float, lr_min: float, t0: int | None = None, tmul: int = 2) -> float:
    """ENAS's per-epoch cosine schedule (optionally with warm restarts every t0, t0*tmul, ...)."""
    if t0 is None:
        period, t = max(epochs, 1), epoch
    else:
        period, t = t0, epoch
        while t >= period:
            t -= period
            period *= tmul
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t / period))


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
    return DataLoader(
        ds,
        batch_size=bs,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(ds) > bs,  # no tiny last batch (BN on batch statistics)
        **loader_options(device, cfg.num_workers),  # in-memory tensors: 0 workers unless params say
    )


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


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _fmt(v: float | None, digits: int = 3) -> str:
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


def child_optimizer(child: SharedChild, cfg: EnasConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        child.parameters(), lr=cfg.lr_max, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


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
def _log(log: logging.Logger | None, msg: str, *args) -> None:
    if log is not None:
        log.info(msg, *args)


def clear_search_state(state_dir: str | Path) -> None:
    """Remove the resume checkpoint (once the rule's outputs are written)."""
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)


def _fingerprint(cfg: EnasConfig, num_classes: int, epochs: int, seed: int, n_train: int, n_reward: int,
                 resume_key: str) -> str:
    return json.dumps(
        {"config": asdict(cfg), "num_classes": num_classes, "epochs": epochs, "seed": seed,
         "n_child_train": n_train, "n_reward": n_reward, "resume_key": resume_key},
        sort_keys=True,
    )


def _load_state(path: Path, fingerprint: str, log: logging.Logger | None) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is the user's to delete
        raise PipelineError(f"{path}: cannot load the ENAS checkpoint ({exc}); delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise PipelineError(f"{path}: not an ENAS checkpoint ({STATE_FORMAT}); delete it to start over")
    if state.get("fingerprint") != fingerprint:
        _log(log, "ENAS checkpoint %s is for other settings/data: starting a fresh search", path)
        return None
    return state


def search(
    child_train: Dataset | tuple[torch.Tensor, torch.Tensor],
    reward_data: Dataset | tuple[torch.Tensor, torch.Tensor],
    *,
    num_classes: int,
    epochs: int,
    seed: int,
    device: str | torch.device = "cpu",
    log: logging.Logger | None = None,
    state_dir: str | Path | None = None,
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
    if epochs < 1:
        raise PipelineError(f"enas.epochs: must be >= 1, got {epochs}")
    if num_classes < 2:
        raise PipelineError(f"enas num_classes: must be >= 2, got {num_classes}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"enas device: {device} requested but CUDA is not available; use cpu")
    child_train = _as_dataset(child_train, "child_train")
    reward_data = _as_dataset(reward_data, "reward_data")

    child, controller = build_models(num_classes, cfg, seed)
    state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
    fingerprint = _fingerprint(cfg, num_classes, epochs, seed, len(child_train), len(reward_data), str(resume_key))
    state = _load_state(state_path, fingerprint, log) if state_path is not None else None

    baseline = float(cfg.baseline_init)
    history: list[dict] = []
    start = 0
    if state is not None:
        child.load_state_dict(state["child"])
        controller.load_state_dict(state["controller"])
        controller.generator.set_state(state["controller_generator"])
        baseline = float(state["baseline"])
        history = list(state["history"])
        start = int(state["epoch"])
    child.to(device)
    if cfg.channels_last:
        child.to(memory_format=torch.channels_last)
    child_opt = child_optimizer(child, cfg)
    ctrl_opt = make_optimizer(controller, cfg.controller_lr)
    if state is not None:
        child_opt.load_state_dict(state["child_optimizer"])
        ctrl_opt.load_state_dict(state["controller_optimizer"])
        _log(log, "ENAS: resuming from %s after epoch %d/%d", state_path, start, epochs)
    n_params = sum(p.numel() for p in child.parameters())
    _log(log, "ENAS search: %d child-train / %d reward images, %d classes, shared child %.2fM params, "
         "%d epochs on %s", len(child_train), len(reward_data), num_classes, n_params / 1e6, epochs, device)

    run_started = time.perf_counter()
    ran = 0
    for epoch in range(start, epochs):
        if stop_after is not None and ran >= stop_after:
            break
        row = _run_epoch(child, controller, child_opt, ctrl_opt, baseline, child_train, reward_data,
                         cfg=cfg, epoch=epoch, epochs=epochs, seed=seed, device=device, progress=progress)
        baseline = row["baseline"]
        history.append(row)
        ran += 1
        per_epoch = (time.perf_counter() - run_started) / ran
        eta = per_epoch * (epochs - epoch - 1)
        _log(log, "ENAS epoch %d/%d: lr %.4g child loss %.4f acc %.3f (%.0f img/s) | reward %s (max %s) "
             "baseline %.3f entropy %s | %.1f s/epoch, ETA %s | greedy %s",
             epoch + 1, epochs, row["lr"], row["child_loss"], row["child_acc"], row["child_images_per_s"],
             _fmt(row["reward_mean"]), _fmt(row["reward_max"]), baseline, _fmt(row["entropy_mean"], 2),
             row["seconds"], _fmt_time(eta), row["greedy_arch"])
        if state_path is not None:
            _save_state(state_path, {
                "format": STATE_FORMAT,
                "fingerprint": fingerprint,
                "epoch": epoch + 1,
                "child": {k: v.detach().cpu() for k, v in child.state_dict().items()},
                "controller": controller.state_dict(),
                "child_optimizer": _cpu(child_opt.state_dict()),
                "controller_optimizer": ctrl_opt.state_dict(),
                "controller_generator": controller.generator.get_state(),
                "baseline": baseline,
                "history": history,
            })

    if len(history) < epochs:
        _log(log, "ENAS: stopped after epoch %d/%d (rerun to resume)", len(history), epochs)
        return None, history

    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(derive_seed(seed, 7))
        arch, reward, candidates = choose(
            child, controller, reward_data, n_candidates=cfg.n_candidates, batches=cfg.candidate_batches,
            batch_size=cfg.reward_bs, seed=seed, device=device, cfg=cfg,
        )
    meta = {
        "reward": reward,
        "arch": str(arch),
        "enas_arch": arch.to_dict(),
        "candidates": candidates,
        "search_epochs": epochs,
        "seed": seed,
        "num_classes": num_classes,
        "n_child_train": len(child_train),
        "n_reward": len(reward_data),
        "selection": (f"best mean accuracy of {cfg.n_candidates} controller samples on "
                      f"{cfg.candidate_batches} reward minibatches"),
        "final_baseline": baseline,
        "config": asdict(cfg),
    }
    genotype = arch.to_genotype(meta)
    _log(log, "ENAS chose %s (reward %.3f)", arch, reward)
    return genotype, history


def _cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _run_epoch(
    child: SharedChild,
    controller: Controller,
    child_opt: torch.optim.Optimizer,
    ctrl_opt: torch.optim.Optimizer,
    baseline: float,
    child_train: Dataset,
    reward_data: Dataset,
    *,
    cfg: EnasConfig,
    epoch: int,
    epochs: int,
    seed: int,
    device: torch.device,
    progress: bool,
) -> dict:
    started = time.perf_counter()
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(derive_seed(seed, 2, epoch))
        controller.generator.manual_seed(derive_seed(seed, 3, epoch))
        lr = cosine_lr(epoch, epochs, cfg.lr_max, cfg.lr_min, cfg.lr_t0, cfg.lr_tmul)
        for group in child_opt.param_groups:
            group["lr"] = lr
        loader = _loader(child_train, cfg.batch_size, derive_seed(seed, 4, epoch), cfg, device)
        n_steps = len(loader) if cfg.max_child_steps is None else min(len(loader), cfg.max_child_steps)
        bar = tqdm(total=n_steps + cfg.controller_steps, desc=f"enas {epoch + 1}/{epochs}", unit="step",
                   file=sys.stderr, disable=not progress, dynamic_ncols=True, mininterval=1.0, leave=False)
        try:
            # 1. child epoch: shared weights, a fresh architecture per minibatch
            child.train()
            loss_sum, correct, seen = 0.0, 0, 0
            child_started = time.perf_counter()
            for step, batch in enumerate(loader):
                if step >= n_steps:
                    break
                with torch.no_grad():
                    arch = controller.sample().arch
                x, y = _to(batch, device, cfg.channels_last)
                logits = child(x, arch)
                loss = F.cross_entropy(logits, y)
                child_opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_([p for p in child.parameters() if p.grad is not None], cfg.grad_clip)
                child_opt.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += len(y)
                bar.update(1)
            child_seconds = time.perf_counter() - child_started

            # 2. controller: REINFORCE on the reward minibatches
            stream = _cycle(reward_data, cfg.reward_bs, derive_seed(seed, 5, epoch), cfg, device)

            def reward_fn(arch: Arch) -> float:
                x, y = _to(next(stream), device, cfg.channels_last)
                return batch_accuracy(child, arch, x, y)

            acc, rewards, entropies, archs = [], [], [], []
            ctrl_loss = 0.0
            for _ in range(cfg.controller_steps):
                baseline, stats = reinforce_step(
                    controller, ctrl_opt, reward_fn, baseline=baseline, samples=cfg.controller_samples,
                    baseline_decay=cfg.baseline_decay, entropy_weight=cfg.entropy_weight,
                )
                acc += stats.accuracy
                rewards += stats.reward
                entropies += stats.entropy
                archs += stats.archs
                ctrl_loss += stats.loss
                bar.update(1)
        finally:
            bar.close()
        with torch.no_grad():
            greedy = controller.sample(greedy=True)

    def mean(v: list[float]) -> float | None:
        return float(np.mean(v)) if v else None

    return {
        "epoch": epoch + 1,
        "lr": lr,
        "child_loss": loss_sum / max(seen, 1),
        "child_acc": correct / max(seen, 1),
        "child_steps": n_steps,
        "child_images_per_s": seen / child_seconds if child_seconds > 0 else 0.0,
        "controller_steps": cfg.controller_steps,
        "controller_samples": len(rewards),
        "controller_loss": ctrl_loss / max(cfg.controller_steps, 1),
        "accuracy_mean": mean(acc),
        "reward_mean": mean(rewards),
        "reward_max": max(rewards) if rewards else None,
        "entropy_mean": mean(entropies),
        "greedy_entropy": float(greedy.entropy),
        "baseline": float(baseline),
        "greedy_arch": str(greedy.arch),
        "sampled_archs": [str(a) for a in archs[: cfg.log_archs]],
        "seconds": time.perf_counter() - started,
    }
