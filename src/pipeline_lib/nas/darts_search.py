"""The DARTS search loop: bilevel optimisation over two disjoint halves of the training data.

``search(model, train_a, train_b, config)``: every step takes one batch of ``train_a`` (the
weights' half) and one of ``train_b`` (α's half), makes one α step (``Architect``, first
or second order) and then one weight step (SGD, momentum, weight decay, gradient clipping
at 5, cosine learning rate per epoch, as DARTS). ``config`` is the whole ``DartsConfig``
(the ``darts_search`` section). The caller passes the two halves (``search_data.train_halves``);
they must come from the *training* split only — never the model-selection validation
images, never test.

The loop is ``loop.run_epochs``: after every epoch softmax(α) is recorded
(``SearchResult.alpha_history``, written as CSV by ``write_alpha_history``), the genotype
derived and logged, and a checkpoint (model with α, both optimizers, RNG states, α history,
epoch log) saved atomically into ``state_dir``; a restarted job with the same config, network
and data sizes resumes after the last finished epoch, a changed one starts fresh.

Data order: when given datasets, the loop builds its DataLoaders with a generator seeded
from (seed, epoch), so a resumed run sees the same batches as an uninterrupted one. Given
ready DataLoaders, their own order is used.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch.utils.data import DataLoader, Subset

from ..io.atomic import write_text
from ..runtime.devices import capture_rng, loader_options, restore_rng
from ..io.errors import PipelineError
from ..training.loop import Checkpoint, Progress, Run, fingerprint, model_identity, run_epochs
from ..training.schedules import cosine_lr, set_lr
from .architect import AlphaStepInfo, Architect, MomentumSGD
from .darts_config import DartsConfig
from .genotypes import DARTS_PRIMITIVES, Genotype
from .search_eval import heldout_scores, max_entropy, sampling, softmax_entropy
from .search_model import SearchNetwork

CHECKPOINT_FILE = "search_checkpoint.pt"
CELLS = ("normal", "reduce")


# --- results --------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """The final genotype and the search's history.

    ``alpha_history``: (epochs + 1, 2, edges, ops) softmax(α), row 0 at initialisation, row e
    after epoch e; cell axis (normal, reduce); op axis ``ops`` (the search space).
    ``epoch_log``: one dict per epoch (lr, train/val loss and accuracy, seconds, genotype, and
    the diagnostics of ``epoch_diagnostics``).
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
    """Long format: one row per (epoch, cell, edge, op) with its softmax weight and the edge's
    entropy of softmax(α) in nats (the same on each op row of an edge; at most ln(len(ops)))."""
    rows = []
    hist = alpha_history.detach().to("cpu", torch.float64)
    entropy = softmax_entropy(hist)
    for epoch in range(hist.shape[0]):
        for c, cell in enumerate(CELLS):
            for e, (src, dst) in enumerate(edges):
                for k, op in enumerate(ops):
                    rows.append(
                        {"epoch": epoch, "cell": cell, "edge": e, "src": src, "dst": dst, "op": op, "weight": float(hist[epoch, c, e, k]),
                         "entropy": float(entropy[epoch, c, e])}
                    )
    return rows


def write_alpha_history(
    result_or_history, path: str | Path, edges: list[tuple[int, int]] | None = None, ops: tuple[str, ...] = DARTS_PRIMITIVES
) -> None:
    """CSV ``epoch,cell,edge,src,dst,op,weight,entropy`` (atomic). ``dst``/``src`` are state indices
    (0, 1: cell inputs; 2..: intermediate nodes); epoch 0 = initialisation; ``entropy``: the
    edge's entropy of softmax(α) in nats."""
    if isinstance(result_or_history, SearchResult):
        rows = result_or_history.history_rows()
    else:
        if edges is None:
            raise ValueError("write_alpha_history needs the edge list with a bare history tensor")
        rows = alpha_history_rows(result_or_history, edges, ops)
    lines = ["epoch,cell,edge,src,dst,op,weight,entropy"]
    lines += [f"{r['epoch']},{r['cell']},{r['edge']},{r['src']},{r['dst']},{r['op']},{r['weight']:.6g},{r['entropy']:.6g}"
              for r in rows]
    write_text(path, "\n".join(lines) + "\n")


# --- data -----------------------------------------------------------------------------------


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
                "pass two disjoint parts of the training split (search_data.train_halves)"
            )
    elif a is b:
        raise PipelineError("darts search data: the same dataset was passed as both halves; "
                            "pass two disjoint parts of the training split (search_data.train_halves)")


def _loader(data, batch_size: int, seed: int, epoch: int, num_workers: int, salt: int, device: torch.device,
            balance: bool = False) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    n = len(data)
    if n < 2:
        raise PipelineError(f"darts search data: a half has {n} image(s); BatchNorm needs batches of at least 2")
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + epoch * 7919 + salt) % (2**63))
    # a new loader every epoch (seeded order, class-balanced draws with balance); the decoded tensors are
    # in memory: 0 workers by default
    return DataLoader(data, batch_size=batch_size, drop_last=n > batch_size, **sampling(data, generator, balance),
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


def search_step(model, architect: Architect, w_optimizer, x_a, y_a, x_b, y_b, *, grad_clip: float = 5.0,
                update_alpha: bool = True) -> StepInfo:
    """One α step (on the α half; second order also uses the weights' batch) then one
    weight step on the weights' batch. Only the gradients each step needs are computed.
    ``update_alpha=False`` (warm-up): the weight step alone."""
    alpha_info = architect.step(x_a, y_a, x_b, y_b) if update_alpha else AlphaStepInfo(float("nan"), 0, 0)
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


# --- the loop -------------------------------------------------------------------------------


def build_network(config: DartsConfig, num_classes: int = 2) -> SearchNetwork:
    """The search network of ``config`` (its search space ``ops``), initialised from its seed."""
    return SearchNetwork(C=config.channels, num_classes=num_classes, layers=config.layers, nodes=config.nodes,
                         ops=config.ops, stem_stride=config.stem_stride, kept_cells=config.kept_cells, seed=config.seed)


class DartsState:
    """Everything a DARTS search resumes from (``loop.Resumable``): the network with α, both
    optimizers, the RNG states and softmax(α) after each epoch (row 0: initialisation)."""

    def __init__(self, model, w_optimizer, architect: Architect):
        self.model, self.w_optimizer, self.architect = model, w_optimizer, architect
        self.alpha_history = [self.softmax_now()]
        # α as built from the seed (a resumed run rebuilds the same network): max |Δα| is measured from it
        self.alpha_start = torch.stack([model.alphas_normal.detach(), model.alphas_reduce.detach()]).cpu().clone()

    def softmax_now(self) -> torch.Tensor:
        w = self.model.alpha_softmax()
        return torch.stack([w["normal"], w["reduce"]])

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "w_optimizer": self.w_optimizer.state_dict(),
                "a_optimizer": self.architect.optimizer.state_dict(), "rng": capture_rng(),
                "alpha_history": torch.stack(self.alpha_history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.architect.optimizer.load_state_dict(state["a_optimizer"])
        restore_rng(state["rng"])
        self.alpha_history = list(state["alpha_history"].unbind(0))


def _size(data) -> int:
    return len(data.dataset if isinstance(data, DataLoader) else data)


def search(model, train_a, train_b, config: DartsConfig | None = None, *, device: str | torch.device = "cpu",
           log: logging.Logger | None = None, state_dir: str | Path | None = None,
           history_path: str | Path | None = None, progress: bool = True) -> SearchResult:
    """Run DARTS on ``model`` (a ``SearchNetwork``, freshly built with its seed, e.g. ``build_network``).

    ``train_a``: the weights' half, ``train_b``: α's half (datasets of (image, label), or
    DataLoaders). With ``state_dir`` the loop checkpoints every epoch and resumes; with
    ``history_path`` the α softmax history CSV is rewritten every epoch.
    """
    cfg = config or DartsConfig()
    log = log or logging.getLogger("pipeline")
    _check_disjoint(train_a, train_b)
    device = torch.device(device)
    run_fp = fingerprint(config=cfg, model=model_identity(model), model_config=getattr(model, "config", {}),
                         channels_last=getattr(model, "channels_last", None), device_type=device.type,
                         n_a=_size(train_a), n_b=_size(train_b))
    model.to(device)
    model.train()
    w_optimizer = weight_optimizer(model, lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay)
    architect = Architect(model, w_optimizer, order=cfg.order, lr=cfg.alpha_lr, betas=cfg.alpha_betas,
                          weight_decay=cfg.alpha_weight_decay, xi=cfg.xi)
    state = DartsState(model, w_optimizer, architect)
    run = Run(Checkpoint(state_dir, CHECKPOINT_FILE, log=log), run_fp, state, cfg.epochs)
    meter = Progress(log, cfg.epochs, unit="step", enabled=progress)
    meta = {"search": "darts", "order": cfg.order, "epochs": cfg.epochs, "seed": cfg.seed,
            **getattr(model, "config", {}), "image_size": cfg.image_size, "balance_classes": cfg.balance_classes}
    edges = model.edges()

    def write_history(_rows=None) -> None:
        if history_path is not None:
            write_alpha_history(torch.stack(state.alpha_history), history_path, edges, model.primitives)

    torch.manual_seed(int(cfg.seed))  # a resumed run restores the RNG states of its checkpoint instead
    epoch_log = run_epochs(run, lambda epoch: search_epoch(state, train_a, train_b, cfg, epoch, device, meter, meta),
                           on_saved=write_history)
    if run.resumed_from is not None and run.resumed_from >= cfg.epochs:
        write_history()  # nothing left to search: the outputs still get their history
    return SearchResult(genotype=model.genotype(meta=meta), alpha_history=torch.stack(state.alpha_history),
                        epoch_log=epoch_log, edges=edges, ops=model.primitives)


def search_epoch(state: DartsState, train_a, train_b, cfg: DartsConfig, epoch: int, device: torch.device,
                 meter: Progress, meta: dict[str, Any]) -> dict[str, Any]:
    """One epoch of α and weight steps (learning rate by cosine), then softmax(α) and the genotype."""
    started = time.perf_counter()
    loader_a = _loader(train_a, cfg.batch_size, cfg.seed, epoch, cfg.num_workers, salt=1, device=device,
                       balance=cfg.balance_classes)
    batches_b = _cycle(lambda r: _loader(train_b, cfg.batch_size, cfg.seed, epoch * 1000 + r, cfg.num_workers,
                                         salt=2, device=device, balance=cfg.balance_classes))
    update_alpha = epoch >= cfg.warmup_epochs
    steps = len(loader_a) if cfg.max_steps_per_epoch is None else min(len(loader_a), int(cfg.max_steps_per_epoch))
    lr = cosine_lr(epoch, cfg.epochs, cfg.w_lr, cfg.w_lr_min)
    set_lr(state.w_optimizer, lr)
    sums = dict.fromkeys(("train_loss", "train_correct", "train_count", "val_loss", "val_correct", "val_count"), 0.0)
    bar = meter.bar(steps, f"darts {cfg.order} epoch {epoch + 1}/{cfg.epochs}" + ("" if update_alpha else " (warm-up)"))
    try:
        for (x_a, y_a), (x_b, y_b) in zip(itertools.islice(loader_a, steps), batches_b):
            x_a, y_a = x_a.to(device, non_blocking=True), y_a.to(device, non_blocking=True)
            x_b, y_b = x_b.to(device, non_blocking=True), y_b.to(device, non_blocking=True)
            info = search_step(state.model, state.architect, state.w_optimizer, x_a, y_a, x_b, y_b,
                               grad_clip=cfg.grad_clip, update_alpha=update_alpha)
            if not math.isfinite(info.train_loss):
                raise PipelineError(f"darts: training loss became {info.train_loss} in epoch {epoch + 1}; "
                                    "lower darts_search.w_lr or alpha_lr")
            _add(sums, info)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{info.train_loss:.3f}", val=f"{info.alpha.val_loss:.3f}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    state.alpha_history.append(state.softmax_now())
    genotype = state.model.genotype(meta=meta)
    n_t, n_v = max(sums["train_count"], 1), sums["val_count"]
    record = {
        "epoch": epoch + 1, "lr": lr, "steps": steps, "alpha_steps": steps if update_alpha else 0,
        "train_loss": sums["train_loss"] / n_t, "train_acc": sums["train_correct"] / n_t,
        "val_loss": sums["val_loss"] / n_v if n_v else float("nan"),
        "val_acc": sums["val_correct"] / n_v if n_v else float("nan"),
        **epoch_diagnostics(state, train_a, train_b, cfg, device),
        "seconds": time.perf_counter() - started, "genotype": genotype.to_dict(),
    }  # fmt: skip
    meter.epoch_done(epoch, record["seconds"], steps,
                     f"{cfg.order} order: lr {lr:.4g}, train loss {record['train_loss']:.4f} acc "
                     f"{record['train_acc']:.3f}, alpha-half loss {record['val_loss']:.4f} acc {record['val_acc']:.3f}")
    meter.log.info("darts epoch %d supernet (BN recalibrated on the weights' half, eval mode, class-balanced): weights' "
                   "half %.3f, held-out α half %.3f (%d/%d, loss %.4f); softmax(α) entropy normal %.4f reduce %.4f of max "
                   "%.4f; max |Δα| %.4f", epoch + 1, record["train_half_acc"], record["heldout_acc"],
                   record["heldout_correct"], record["heldout_n"], record["heldout_loss"], record["entropy_normal"],
                   record["entropy_reduce"], record["entropy_max"], record["alpha_max_change"])
    meter.log.info("darts epoch %d genotype: normal %s | reduce %s | normal skip-connects %d", epoch + 1,
                   _short(genotype.normal), _short(genotype.reduce), genotype.meta["normal_skip_connects"])
    return record


def epoch_diagnostics(state: DartsState, train_a, train_b, cfg: DartsConfig, device: torch.device) -> dict[str, Any]:
    """The supernet's accuracy and loss on class-balanced subsets of the weights' half and of the
    held-out α half, with BN recalibrated on the weights' half (``search_eval.heldout_scores``); the
    mean entropy of softmax(α) per cell type with its maximum ln(ops); the largest |Δα| since the start.

    The running accuracies of the steps (``train_acc``/``val_acc``) mix weights from the whole
    epoch and batch statistics; these are one network scored once, comparable with chance."""
    model = state.model
    data_a = train_a.dataset if isinstance(train_a, DataLoader) else train_a
    data_b = train_b.dataset if isinstance(train_b, DataLoader) else train_b
    scores = heldout_scores(model, model, data_a, data_b, batch_size=max(int(cfg.batch_size), 64), device=device,
                            seed=cfg.seed)
    entropy = softmax_entropy(state.alpha_history[-1])  # (cell, edge)
    alpha_now = torch.stack([model.alphas_normal.detach(), model.alphas_reduce.detach()]).cpu()
    return {
        **scores, "entropy_normal": float(entropy[0].mean()), "entropy_reduce": float(entropy[1].mean()),
        "entropy_max": max_entropy(int(state.alpha_history[-1].shape[-1])),
        "alpha_max_change": float((alpha_now - state.alpha_start).abs().max()),
    }  # fmt: skip


def _add(sums: dict[str, float], info: StepInfo) -> None:
    sums["train_loss"] += info.train_loss * info.train_count
    sums["train_correct"] += info.train_correct
    sums["train_count"] += info.train_count
    if info.alpha.val_count:  # none in warm-up steps (their val_loss is NaN)
        sums["val_loss"] += info.alpha.val_loss * info.alpha.val_count
    sums["val_correct"] += info.alpha.val_correct
    sums["val_count"] += info.alpha.val_count


def _short(edges) -> str:
    return " ".join(f"{op}<-{src}" for op, src in edges)
