"""One deep baseline end to end: split table -> fit -> best weights, metrics, predictions, ROC.

A thin orchestration over ``models`` (the network), ``train.fit`` (the loop, with resume),
``backbones.build_backbone`` (ResNet weights: ``none`` = seeded random init, ``imagenet`` =
a local file, never downloaded) and ``metrics`` (test AUC, ROC curve). Every output is
written atomically; the resume state in ``state_dir`` is removed once all outputs exist.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..results import metrics as metrics_lib
from ..io.atomic import check_free_space, write_csv, write_json
from ..training.checkpoint import save_weights
from ..training.loop import Checkpoint, cpu_copy
from ..data.datasets import PRELOAD_MAX_BYTES, ChipImages, eval_transform, train_transform_for
from ..io.errors import PipelineError
from .frozen_trunk import head_only, trunk_outputs
from .networks import build_model, count_parameters, param_groups
from ..study.registry import spec
from ..training.evaluation import predict_proba
from ..study.stage_config import StageConfig
from ..training.train import fit
from ..training.config import TrainConfig

REQUIRED_COLUMNS = ("id", "path", "label", "split")


def split_digest(frame: pd.DataFrame) -> str:
    """A hash of what the split means for training (ids, splits, labels, image hashes)."""
    cols = [c for c in ("id", "split", "label", "sha256") if c in frame.columns]
    text = frame[cols].astype(str).to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parts(split_frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    missing = [c for c in REQUIRED_COLUMNS if c not in split_frame.columns]
    if missing:
        raise PipelineError(f"{source}: column(s) {', '.join(missing)} missing; re-run the split stage")
    parts = {name: split_frame[split_frame["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}
    for name in ("train", "val"):
        part = parts[name]
        if len(part) == 0:
            raise PipelineError(f"{source}: no '{name}' rows; re-run the split stage")
        if not part["label"].isin([0, 1]).all():
            raise PipelineError(f"{source}: '{name}' rows must be labelled 0/1; re-run the split stage")
        if part["label"].nunique() < 2:
            raise PipelineError(f"{source}: '{name}' rows hold a single class; check split.val_good / split.val_bad")
    return parts["train"], parts["val"], parts["test"]


@dataclass
class NetworkConfig(StageConfig):
    """One network's params: the section's image size and seed, the model's kwargs, its loop.

    The rule ``train`` builds it from ``train.image_size``, ``train.seed`` and ``train.<model>``;
    ``nas_retrain`` from its section. The section's seed seeds the loop (and the initial weights).
    """

    image_size: int
    seed: int
    model: dict
    loop: TrainConfig
    WHERE = "params.yaml: train"

    def __post_init__(self) -> None:
        self.model = dict(self.model or {})
        self.loop.seed = self.seed


@dataclass(frozen=True)
class BackboneConfig(StageConfig):
    """The ResNet weights behind the features (``features.arch/weights/weights_file/seed``),
    which the transfer models start from, so ``none`` gives the backbone of the pretrained features."""

    arch: str = "resnet18"
    weights: str = "none"
    weights_file: str | None = None
    seed: int = 0
    WHERE = "params.yaml: features"


@dataclass(frozen=True)
class ModelOutputs:
    """Where a trained network's outputs go (a training rule's ``output:``) and its resume state."""

    model: Path | str
    metrics: Path | str
    predictions: Path | str
    roc: Path | str
    state_dir: Path | str
    history: Path | str | None = None
    val_predictions: Path | str | None = None  # id, label, prob_bad of the validation images (best weights)


def _build_network(model_name: str, network: NetworkConfig, backbone: BackboneConfig | None,
                   genotype: Mapping[str, Any] | None) -> tuple[torch.nn.Module, dict | None, dict]:
    """The untrained network (seeded), the backbone record, and the kwargs it was built with."""
    from ..runtime.devices import seed_everything

    backbone_state, backbone_info = None, None
    if spec(model_name).uses_backbone:
        from ..features.backbones import build_backbone

        backbone = backbone or BackboneConfig()
        trunk, record = build_backbone(backbone.arch, backbone.weights, seed=backbone.seed, weights_file=backbone.weights_file)
        backbone_state, backbone_info = trunk.state_dict(), record.to_dict()
        del trunk
    kwargs = dict(network.model, **({"genotype": dict(genotype)} if genotype is not None else {}))
    seed_everything(network.seed)  # the new head / the CNN initialise from this
    model = build_model(model_name, image_size=network.image_size, backbone_arch=backbone.arch if backbone else "resnet18",
                        backbone_state=backbone_state, **kwargs)
    return model, backbone_info, kwargs


def _check_space(model: torch.nn.Module, outputs: ModelOutputs, model_name: str) -> dict[str, int]:
    counts = count_parameters(model)
    # float32 weights in model.pt; the resume checkpoint holds them again plus the optimiser's
    # state (Adam: two moments) - checked now rather than failing after the first epoch
    weight_bytes = 4 * counts["total"]
    check_free_space({outputs.model: weight_bytes, Checkpoint(outputs.state_dir).path: 3 * weight_bytes},
                     f"{model_name}'s weights and resume checkpoints")
    return counts


def make_datasets(train_rows: pd.DataFrame, val_rows: pd.DataFrame, test_rows: pd.DataFrame, network: NetworkConfig,
                  log: logging.Logger | None = None) -> tuple[ChipImages, ChipImages, ChipImages]:
    """The train (augmented), val and test datasets; train and val decoded once for the whole job.

    Every epoch reads train and val again: decoding and resizing the JPEGs each time cost
    ~1 ms/image against ~4-15 ms/image for a training step (bench/README.md, "Training loop
    speed"). The test images are read once anyway, after training."""
    log = log or logging.getLogger("pipeline.deep")
    size = network.image_size
    train_set = ChipImages(train_rows, train_transform_for(size, network.loop.augment))
    val_set, test_set = ChipImages(val_rows, eval_transform(size)), ChipImages(test_rows, eval_transform(size))
    for name, dataset in (("train", train_set), ("val", val_set)):
        started = time.perf_counter()
        kept = dataset.preload()
        if kept is None:
            log.info("%s images: decoded every epoch (the transform has no fixed head, or they exceed %d MB)", name,
                     PRELOAD_MAX_BYTES // 2**20)
        else:
            log.info("%s images: %d decoded once in %.1f s, %.1f MB in memory", name, len(dataset),
                     time.perf_counter() - started, kept / 2**20)
    return train_set, val_set, test_set


def train_and_evaluate(
    model_name: str,
    split_frame: pd.DataFrame,
    network: NetworkConfig,
    outputs: ModelOutputs,
    *,
    device: torch.device | str = "cpu",
    backbone: BackboneConfig | None = None,
    genotype: Mapping[str, Any] | None = None,
    split_source: str = "split table",
    keep_state: bool = False,
    test_skipped: int | None = None,
    log: logging.Logger | None = None,
    progress: bool = True,
) -> dict:
    """Train ``model_name`` on the split's train rows, select on val, predict test; write ``outputs``.

    ``backbone`` (transfer models) follows the features stage, so with ``none`` the random
    backbone equals the one behind the pretrained features; ``genotype``: the searched cell of
    a NAS model. ``test_skipped``: ingest's count of test images left out, copied into the
    metrics. Returns the metrics dict that was written to ``outputs.metrics``.
    """
    log = log or logging.getLogger("pipeline.deep")
    started = time.perf_counter()
    train_rows, val_rows, test_rows = _parts(split_frame, split_source)
    model, backbone_info, model_kwargs = _build_network(model_name, network, backbone, genotype)
    counts = _check_space(model, outputs, model_name)
    size, loop = network.image_size, network.loop
    train_set, val_set, test_set = make_datasets(train_rows, val_rows, test_rows, network, log=log)
    log.info("%s: %s trainable / %s total parameters; %d train, %d val, %d test images at %d px", model_name,
             f"{counts['trainable']:,}", f"{counts['total']:,}", len(train_set), len(val_set), len(test_set), size)
    fit_started = time.perf_counter()
    trained, fit_sets = model, (train_set, val_set)
    if head_only(model, loop.augment):  # ResNet LL: the head trains on the frozen trunk's outputs, computed once
        trained, fit_sets = model.classifier, trunk_outputs(model, fit_sets, loop, device)
        log.info("%s: frozen trunk run once over %d train + %d val images in %.1f s; the head trains on its outputs",
                 model_name, len(train_set), len(val_set), time.perf_counter() - fit_started)
    result = fit(
        trained, *fit_sets, loop, device=device, state_dir=outputs.state_dir, history_csv=outputs.history, log=log,
        param_groups=param_groups(model, model_name, loop.lr, loop.backbone_lr), progress=progress,
        # (a head-only run differs already: fit fingerprints the module it trains, here the head)
        fingerprint_extra={"model": model_name, "image_size": int(size), "split": split_digest(split_frame),
                           "model_kwargs": model_kwargs, "backbone": backbone_info},
        # networks with a schedule of their own (drop path of the NAS retrain) follow the epochs
        on_epoch_start=(lambda m, epoch, epochs: m.on_epoch_start(epoch, epochs)) if hasattr(model, "on_epoch_start") else None,
    )
    if trained is not model:  # fit restored the best head into the model: its weights whole
        result = replace(result, best_state_dict=cpu_copy(model.state_dict()))
    metrics = _predict_and_write(model, model_name, result, (val_set, val_rows), test_set, test_rows, network, outputs, device=device,
                                 meta_extra={"backbone": backbone_info, "model_kwargs": model_kwargs}, counts=counts,
                                 n_train=len(train_set), n_val=len(val_set), test_skipped=test_skipped,
                                 started=started, fit_seconds=time.perf_counter() - fit_started)
    if not keep_state:
        Checkpoint(outputs.state_dir).clear()
    log.info("%s: best epoch %d/%d, valid acc %.4f, valid loss %.4f, test AUC %s", model_name, result.best_epoch,
             result.epochs_run, result.best_val_acc, result.best_val_loss,
             "n/a (no test labels)" if metrics["test_auc"] is None else f"{metrics['test_auc']:.4f}")
    return metrics


def _predict_and_write(model, model_name: str, result, val, test_set, test_rows: pd.DataFrame, network: NetworkConfig,
                       outputs: ModelOutputs, *, device, meta_extra: dict, counts: dict, n_train: int, n_val: int,
                       test_skipped: int | None, started: float, fit_seconds: float) -> dict:
    """Test predictions, AUC and ROC (over the labelled test rows), validation predictions of the
    best weights (``val``: the val set and its rows), the weights and the metrics."""
    loop = network.loop
    predict = lambda images: predict_proba(model, images, batch_size=loop.eval_batch_size or loop.batch_size,  # noqa: E731
                                           device=device, num_workers=loop.num_workers, amp=loop.amp,
                                           channels_last=loop.channels_last)
    probs = predict(test_set)
    if outputs.val_predictions is not None:
        val_set, val_rows = val
        write_csv(metrics_lib.val_predictions_frame(val_rows["id"], val_rows["label"], predict(val_set)),
                  outputs.val_predictions)
    labels = np.asarray(test_rows["label"], dtype=np.int64)
    # None / header-only ROC when the test labels are hidden
    test_auc = metrics_lib.roc_auc(labels, probs) if len(labels) else None
    roc = metrics_lib.roc_frame(labels, probs) if len(labels) else metrics_lib.empty_roc()
    save_weights(outputs.model, result.best_state_dict, meta={"model": model_name, "image_size": int(network.image_size),
                                                              "best_epoch": result.best_epoch, **meta_extra})
    write_csv(metrics_lib.predictions_frame(test_rows["id"], probs), outputs.predictions)
    write_csv(roc[list(metrics_lib.ROC_COLUMNS)], outputs.roc)
    model_spec, backbone_info = spec(model_name), meta_extra.get("backbone")
    metrics = metrics_lib.make_metrics(
        model=model_name, display_name=model_spec.display_name, family=model_spec.family, features=None,
        valid_acc=result.best_val_acc, valid_loss=result.best_val_loss, test_auc=test_auc, n_train=n_train, n_val=n_val,
        n_test=len(test_set), test_skipped=test_skipped, params_count=counts["total"],
        # training time over every attempt (a resumed run counts its killed predecessors) plus
        # this process's setup and prediction time
        wall_time_s=result.wall_time_s + (time.perf_counter() - started) - fit_seconds, device=result.device,
        seed=loop.seed, params_trainable=counts["trainable"], epochs_run=result.epochs_run, best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
        backbone=None if backbone_info is None else {"arch": backbone_info["arch"], "weights": backbone_info["mode"]},
    )
    write_json(outputs.metrics, metrics)
    return metrics


def load_trained(weights_path: str | Path, *, untrained_seed: int | None = None) -> torch.nn.Module:
    """Rebuild a network written by ``train_and_evaluate`` from its weights file, in eval mode.

    With ``untrained_seed``: the same architecture freshly initialised under that torch seed
    instead (a baseline for what training changed); the global RNG is left as it was.
    """
    from ..training.checkpoint import load_weights

    state, meta = load_weights(weights_path)
    backbone = meta.get("backbone") or {}
    with torch.random.fork_rng(devices=[]):
        if untrained_seed is not None:
            torch.manual_seed(int(untrained_seed))
        model = build_model(
            meta["model"],
            image_size=meta["image_size"],
            backbone_arch=backbone.get("arch", "resnet18"),
            **dict(meta.get("model_kwargs") or {}),
        )
    if untrained_seed is None:
        model.load_state_dict(state)
    return model.eval()
