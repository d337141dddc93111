"""The DARTS search loop: bilevel optimisation over two disjoint halves of the training data.

``search(model, train_a, train_b, ...)``: every step takes one batch of ``train_a`` (the
weights' half) and one of ``train_b`` (α's half), makes one α step (``Architect``, first
or second order) and then one weight step (SGD, momentum, weight decay, gradient clipping
at 5, cosine learning rate per epoch, as DARTS). The caller passes the two halves (see
``split_halves``); they must come from the *training* split only — never the
model-selection validation images, never test.

After every epoch the loop records softmax(α) (``SearchResult.alpha_history``, written as
CSV by ``write_alpha_history``), derives and logs the genotype, and checkpoints (model
with α, both optimizers, the scheduler, RNG states, history) atomically into
``state_dir``; a restarted job with the same settings resumes after the last finished
epoch, a changed one starts fresh. Checkpoints are read with ``weights_only=True``.

Data order: when given datasets, the loop builds its DataLoaders with a generator seeded
from (seed, epoch), so a resumed run sees the same batches as an uninterrupted one. Given
ready DataLoaders, their own order is used.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..atomic import atomic_path, write_text
from ..devices import loader_options
from ..errors import PipelineError
from .architect import ORDERS, AlphaStepInfo, Architect, MomentumSGD, cosine_lr
from .genotypes import DARTS_PRIMITIVES, Genotype

FORMAT = "nexperia-darts-search/1"
CHECKPOINT_FILE = "search_checkpoint.pt"
CELLS = ("normal", "reduce")


# --- results --------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """The final genotype and the search's history.

    ``alpha_history``: (epochs + 1, 2, edges, ops) softmax(α), row 0 at initialisation, row e
    after epoch e; cell axis (normal, reduce); op axis ``ops`` (the search space).
    ``epoch_log``: one dict per epoch (lr, train/val loss and accuracy, seconds, genotype).
    """

    genotype: Genotype
    alpha_history: torch.Tensor
    epoch_log: list[dict[str, Any]]
    edges: list[tuple[int, int]]
    ops: tuple[str, ...] = DARTS_PRIMITIVES

    def history_rows(self) -> list[dict[str, Any]]:
        return alpha_history_rows(self.alpha_history, self.edges, self.ops)

    def __iter__(self) -> Iterator[Any]:  # genotype, history = search(...)
        yield self.genotype
        yield self.history_rows()


def alpha_history_rows(
    alpha_history: torch.Tensor, edges: list[tuple[int, int]], ops: tuple[str, ...] = DARTS_PRIMITIVES
) -> list[dict[str, Any]]:
    """Long format: one row per (epoch, cell, edge, op) with its softmax weight."""
    rows = []
    hist = alpha_history.detach().to("cpu", torch.float64)
    for epoch in range(hist.shape[0]):
        for c, cell in enumerate(CELLS):
            for e, (src, dst) in enumerate(edges):
                for k, op in enumerate(ops):
                    rows.append(
                        {"epoch": epoch, "cell": cell, "edge": e, "src": src, "dst": dst, "op": op, "weight": float(hist[epoch, c, e, k])}
                    )
    return rows


def write_alpha_history(
    result_or_history, path: str | Path, edges: list[tuple[int, int]] | None = None, ops: tuple[str, ...] = DARTS_PRIMITIVES
) -> None:
    """CSV ``epoch,cell,edge,src,dst,op,weight`` (atomic). ``dst``/``src`` are state indices
    (0, 1: cell inputs; 2..: intermediate nodes); epoch 0 = initialisation."""
    if isinstance(result_or_history, SearchResult):
        rows = result_or_history.history_rows()
    else:
        if edges is None:
            raise ValueError("write_alpha_history needs the edge list with a bare history tensor")
        rows = alpha_history_rows(result_or_history, edges, ops)
    lines = ["epoch,cell,edge,src,dst,op,weight"]
    lines += [f"{r['epoch']},{r['cell']},{r['edge']},{r['src']},{r['dst']},{r['op']},{r['weight']:.6g}" for r in rows]
    write_text(path, "\n".join(lines) + "\n")


# --- data -----------------------------------------------------------------------------------


def split_halves(dataset: Dataset, seed: int, fraction: float = 0.5) -> tuple[Subset, Subset]:
    """Two disjoint random parts of ``dataset`` (weights' part first), seeded."""
    n = len(dataset)  # type: ignore[arg-type]
    if n < 4:
        raise PipelineError(f"darts search data: {n} images, need at least 4 to split in two halves")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    cut = min(max(int(round(n * fraction)), 2), n - 2)
    return Subset(dataset, sorted(perm[:cut])), Subset(dataset, sorted(perm[cut:]))


def _check_disjoint(a, b) -> None:
    if isinstance(a, DataLoader):
        a = a.dataset
    if isinstance(b, DataLoader):
        b = b.dataset
    if isinstance(a, Subset) and isinstance(b, Subset) and a.dataset is b.dataset:
        shared = set(map(int, a.indices)) & set(map(int, b.indices))
        if shared:
            raise PipelineError(
                f"darts search data: the weights' half and α's half share {len(shared)} images; "
                "pass two disjoint parts of the training split (see split_halves)"
            )
    elif a is b:
        raise PipelineError("darts search data: the same dataset was passed as both halves; use split_halves")


def _loader(data, batch_size: int, seed: int, epoch: int, num_workers: int, salt: int, device: torch.device) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    n = len(data)
    if n < 2:
        raise PipelineError(f"darts search data: a half has {n} image(s); BatchNorm needs batches of at least 2")
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + epoch * 7919 + salt) % (2**63))
    # a new loader every epoch (seeded order); the decoded tensors are in memory: 0 workers by default
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator, drop_last=n > batch_size,
                      **loader_options(device, num_workers))


def _cycle(loader_factory) -> Iterator:
    round_ = 0
    while True:
        got = False
        for batch in loader_factory(round_):
            got = True
            yield batch
        if not got:
            raise PipelineError("darts search data: α's half yields no batch")
        round_ += 1


# --- one step -------------------------------------------------------------------------------


@dataclass
class StepInfo:
    train_loss: float
    train_correct: int
    train_count: int
    alpha: AlphaStepInfo


def search_step(model, architect: Architect, w_optimizer, x_a, y_a, x_b, y_b, *, grad_clip: float = 5.0) -> StepInfo:
    """One α step (on the α half; second order also uses the weights' batch) then one
    weight step on the weights' batch. Only the gradients each step needs are computed."""
    alpha_info = architect.step(x_a, y_a, x_b, y_b)
    weights = architect.weights
    w_optimizer.zero_grad(set_to_none=True)
    logits = model(x_a)
    loss = torch.nn.functional.cross_entropy(logits, y_a)
    loss.backward(inputs=weights)
    if grad_clip and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(weights, grad_clip)
    w_optimizer.step()
    correct = int((logits.detach().argmax(1) == y_a).sum())
    return StepInfo(float(loss.detach()), correct, int(y_a.shape[0]), alpha_info)


def weight_optimizer(model, *, lr: float, momentum: float, weight_decay: float):
    """DARTS's weight optimizer: SGD with momentum and weight decay over the weights only."""
    return MomentumSGD(model.weight_parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def configure_allocator() -> bool:
    """glibc only: keep freed blocks < 32 MB in the heap instead of returning them to the OS.

    The search allocates and frees the same activation sizes every pass; with glibc's
    defaults each large one is a fresh mmap whose pages fault in again (page faults were a
    visible share of a CPU step). Process-wide, harmless elsewhere; returns whether applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = libc.mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024) == 1 and ok
        return ok
    except (OSError, AttributeError):
        return False


# --- the loop -------------------------------------------------------------------------------


def _fingerprint(model, config: dict[str, Any], n_a: int, n_b: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"config": config, "n_a": n_a, "n_b": n_b, "format": FORMAT}, sort_keys=True, default=str).encode())
    digest.update(repr(model).encode())
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _save(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the same user problem
        raise PipelineError(f"{path}: cannot load the DARTS search checkpoint ({type(exc).__name__}); delete it to search from scratch") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PipelineError(f"{path}: not a DARTS search checkpoint ({FORMAT}); delete it to search from scratch")
    return state


def clear_search_state(state_dir: str | Path) -> None:
    """Remove the resume checkpoint (once the rule's outputs are written)."""
    (Path(state_dir) / CHECKPOINT_FILE).unlink(missing_ok=True)


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def search(
    model,
    train_a,
    train_b,
    *,
    epochs: int,
    order: str = "first",
    batch_size: int = 64,
    w_lr: float = 0.025,
    w_lr_min: float = 0.001,
    w_momentum: float = 0.9,
    w_weight_decay: float = 3e-4,
    grad_clip: float = 5.0,
    alpha_lr: float = 3e-4,
    alpha_betas: tuple[float, float] = (0.5, 0.999),
    alpha_weight_decay: float = 1e-3,
    xi: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: logging.Logger | None = None,
    state_dir: str | Path | None = None,
    history_path: str | Path | None = None,
    max_steps_per_epoch: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> SearchResult:
    """Run DARTS on ``model`` (a ``SearchNetwork``, freshly built with its seed).

    ``train_a``: the weights' half, ``train_b``: α's half (datasets of (image, label), or
    DataLoaders). ``xi=None``: ξ = the current weight learning rate (DARTS). With
    ``state_dir`` the loop checkpoints every epoch and resumes; with ``history_path`` the
    α softmax history CSV is rewritten every epoch. Returns a ``SearchResult``.
    """
    log = log or logging.getLogger("pipeline")
    if order not in ORDERS:
        raise PipelineError(f"darts: order is {order!r}, expected one of {ORDERS}")
    if epochs < 1:
        raise PipelineError(f"darts: epochs is {epochs}, expected >= 1")
    _check_disjoint(train_a, train_b)
    device = torch.device(device)
    if device.type == "cpu":
        configure_allocator()
    config = {
        "epochs": epochs, "order": order, "batch_size": batch_size, "w_lr": w_lr, "w_lr_min": w_lr_min,
        "w_momentum": w_momentum, "w_weight_decay": w_weight_decay, "grad_clip": grad_clip,
        "alpha_lr": alpha_lr, "alpha_betas": list(alpha_betas), "alpha_weight_decay": alpha_weight_decay,
        "xi": xi, "seed": seed, "max_steps_per_epoch": max_steps_per_epoch, "device_type": device.type,
        "model": dict(getattr(model, "config", {})), "channels_last": getattr(model, "channels_last", None),
    }  # fmt: skip
    n_a = len(train_a.dataset if isinstance(train_a, DataLoader) else train_a)
    n_b = len(train_b.dataset if isinstance(train_b, DataLoader) else train_b)
    fingerprint = _fingerprint(model, config, n_a, n_b)

    model.to(device)
    model.train()
    w_optimizer = weight_optimizer(model, lr=w_lr, momentum=w_momentum, weight_decay=w_weight_decay)
    architect = Architect(
        model, w_optimizer, order=order, lr=alpha_lr, betas=tuple(alpha_betas), weight_decay=alpha_weight_decay, xi=xi
    )
    edges = model.edges()

    def softmax_now() -> torch.Tensor:
        w = model.alpha_softmax()
        return torch.stack([w["normal"], w["reduce"]])

    from ..devices import capture_rng, restore_rng

    history = [softmax_now()]
    epoch_log: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt_path = Path(state_dir) / CHECKPOINT_FILE if state_dir is not None else None
    state = _load(ckpt_path) if ckpt_path is not None else None
    if state is not None and state.get("fingerprint") != fingerprint:
        log.info("darts: %s belongs to other settings (fingerprint differs); searching from scratch", ckpt_path)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        w_optimizer.load_state_dict(state["w_optimizer"])
        architect.optimizer.load_state_dict(state["a_optimizer"])
        restore_rng(state["rng"])
        history = list(state["alpha_history"].unbind(0))
        epoch_log = list(state["epoch_log"])
        start_epoch = int(state["epoch"])
        log.info("darts: resuming after epoch %d/%d from %s", start_epoch, epochs, ckpt_path)
    else:
        torch.manual_seed(int(seed))

    base_meta = {
        "search": "darts", "order": order, "epochs": epochs, "seed": seed,
        **{k: v for k, v in getattr(model, "config", {}).items()}, **(meta or {}),
    }  # fmt: skip
    started = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        loader_a = _loader(train_a, batch_size, seed, epoch, num_workers, salt=1, device=device)
        batches_b = _cycle(lambda r: _loader(train_b, batch_size, seed, epoch * 1000 + r, num_workers, salt=2, device=device))
        steps = len(loader_a) if max_steps_per_epoch is None else min(len(loader_a), int(max_steps_per_epoch))
        lr = cosine_lr(epoch, epochs, w_lr, w_lr_min)
        w_optimizer.param_groups[0]["lr"] = lr
        sums = {"train_loss": 0.0, "train_correct": 0, "train_count": 0, "val_loss": 0.0, "val_correct": 0, "val_count": 0}
        bar = _progress(steps, f"darts {order} epoch {epoch + 1}/{epochs}", progress)
        try:
            for (x_a, y_a), (x_b, y_b) in zip(itertools.islice(loader_a, steps), batches_b):
                x_a, y_a = x_a.to(device, non_blocking=True), y_a.to(device, non_blocking=True)
                x_b, y_b = x_b.to(device, non_blocking=True), y_b.to(device, non_blocking=True)
                info = search_step(model, architect, w_optimizer, x_a, y_a, x_b, y_b, grad_clip=grad_clip)
                if not math.isfinite(info.train_loss):
                    raise PipelineError(
                        f"darts: training loss became {info.train_loss} in epoch {epoch + 1}; lower darts w_lr or alpha_lr"
                    )
                sums["train_loss"] += info.train_loss * info.train_count
                sums["train_correct"] += info.train_correct
                sums["train_count"] += info.train_count
                sums["val_loss"] += info.alpha.val_loss * info.alpha.val_count
                sums["val_correct"] += info.alpha.val_correct
                sums["val_count"] += info.alpha.val_count
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{info.train_loss:.3f}", val=f"{info.alpha.val_loss:.3f}", refresh=False)
        finally:
            if bar is not None:
                bar.close()
        history.append(softmax_now())
        genotype = model.genotype(meta=base_meta)
        seconds = time.perf_counter() - t0
        n_t, n_v = max(sums["train_count"], 1), max(sums["val_count"], 1)
        record = {
            "epoch": epoch + 1, "lr": lr, "seconds": seconds, "steps": steps,
            "train_loss": sums["train_loss"] / n_t, "train_acc": sums["train_correct"] / n_t,
            "val_loss": sums["val_loss"] / n_v, "val_acc": sums["val_correct"] / n_v,
            "genotype": genotype.to_dict(),
        }  # fmt: skip
        epoch_log.append(record)
        done = epoch + 1 - start_epoch
        eta = (time.perf_counter() - started) / done * (epochs - epoch - 1)
        log.info(
            "darts %s epoch %d/%d: lr %.4g, train loss %.4f acc %.3f, alpha-half loss %.4f acc %.3f, "
            "%.1f s (%.2f s/step), ETA %s",
            order, epoch + 1, epochs, lr, record["train_loss"], record["train_acc"], record["val_loss"],
            record["val_acc"], seconds, seconds / max(steps, 1), _fmt_seconds(eta),
        )  # fmt: skip
        log.info(
            "darts epoch %d genotype: normal %s | reduce %s | normal skip-connects %d",
            epoch + 1, _short(genotype.normal), _short(genotype.reduce), genotype.meta["normal_skip_connects"],
        )  # fmt: skip
        alpha_history = torch.stack(history)
        if history_path is not None:
            write_alpha_history(alpha_history, history_path, edges, model.primitives)
        if ckpt_path is not None:
            _save(
                ckpt_path,
                {
                    "format": FORMAT, "fingerprint": fingerprint, "epoch": epoch + 1,
                    "model": model.state_dict(), "w_optimizer": w_optimizer.state_dict(),
                    "a_optimizer": architect.optimizer.state_dict(),
                    "rng": capture_rng(), "alpha_history": alpha_history, "epoch_log": epoch_log,
                },
            )  # fmt: skip

    alpha_history = torch.stack(history)
    if history_path is not None and start_epoch >= epochs:
        write_alpha_history(alpha_history, history_path, edges, model.primitives)
    genotype = model.genotype(meta=base_meta)
    return SearchResult(genotype=genotype, alpha_history=alpha_history, epoch_log=epoch_log, edges=edges, ops=model.primitives)


def _short(edges) -> str:
    return " ".join(f"{op}<-{src}" for op, src in edges)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a pipeline dependency
        return None
    return tqdm(total=total, desc=desc, file=sys.stderr, mininterval=10.0, dynamic_ncols=False, leave=True)
