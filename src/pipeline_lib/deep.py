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
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from . import metrics as metrics_lib
from .atomic import check_free_space, write_csv, write_json
from .checkpoint import clear_state, save_weights, state_path
from .data import ChipImages, eval_transform, train_transform_for
from .errors import PipelineError
from .models import DISPLAY_NAME, FAMILY, build_model, count_parameters, param_groups
from .evaluation import predict_proba
from .train import fit
from .train_config import TrainConfig

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


def train_and_evaluate(
    model_name: str,
    split_frame: pd.DataFrame,
    config: TrainConfig,
    *,
    image_size: int,
    weights_path: str | Path,
    metrics_path: str | Path,
    predictions_path: str | Path,
    roc_path: str | Path,
    state_dir: str | Path,
    history_csv: str | Path | None = None,
    device: torch.device | str = "cpu",
    backbone_arch: str = "resnet18",
    backbone_weights: str = "none",
    weights_file: str | Path | None = None,
    backbone_seed: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    split_source: str = "split table",
    keep_state: bool = False,
    test_skipped: int | None = None,
    log: logging.Logger | None = None,
    progress: bool = True,
) -> dict:
    """Train ``model_name`` on the split's train rows, select on val, predict test; write outputs.

    ``backbone_weights``/``weights_file``/``backbone_seed`` (ResNets only) follow the
    features stage (``features.weights``, ``features.weights_file``, ``features.seed``), so
    with ``none`` the random backbone equals the one behind the pretrained features.
    ``model_kwargs`` go to ``build_model`` (cnn2: channels, kernel_size, dropout, pool; ResNets: head_norm).
    ``test_skipped``: ingest's count of test images left out, copied into the metrics.
    Before training, the free space for ``model.pt`` and the resume checkpoints is checked.
    Returns the metrics dict that was written to ``metrics_path``.
    """
    log = log or logging.getLogger("pipeline.deep")
    started = time.perf_counter()
    config.validate()
    if model_name not in FAMILY:
        raise PipelineError(f"unknown deep model {model_name!r} (expected one of {', '.join(FAMILY)})")
    train_rows, val_rows, test_rows = _parts(split_frame, split_source)

    from .devices import seed_everything

    backbone_state = None
    backbone_info: dict | None = None
    if FAMILY[model_name] == "transfer":
        from .backbones import build_backbone

        seed = config.seed if backbone_seed is None else backbone_seed
        trunk, record = build_backbone(backbone_arch, backbone_weights, seed=seed, weights_file=weights_file)
        backbone_state = trunk.state_dict()
        backbone_info = record.to_dict()
        del trunk
    seed_everything(config.seed)  # the new head / the CNN initialise from this
    model = build_model(
        model_name,
        image_size=image_size,
        backbone_arch=backbone_arch,
        backbone_state=backbone_state,
        **dict(model_kwargs or {}),
    )
    del backbone_state
    counts = count_parameters(model)
    # float32 weights in model.pt; the resume checkpoint holds them again plus the optimiser's
    # state (Adam: two moments) - checked now rather than failing after the first epoch
    weight_bytes = 4 * counts["total"]
    check_free_space({weights_path: weight_bytes, state_path(state_dir): 3 * weight_bytes},
                     f"{model_name}'s weights and resume checkpoints")
    groups = param_groups(model, model_name, config.lr, config.backbone_lr)

    train_set = ChipImages(train_rows, train_transform_for(image_size, config.augment))
    val_set = ChipImages(val_rows, eval_transform(image_size))
    test_set = ChipImages(test_rows, eval_transform(image_size))
    log.info(
        "%s: %s trainable / %s total parameters; %d train, %d val, %d test images at %d px",
        model_name, f"{counts['trainable']:,}", f"{counts['total']:,}", len(train_set), len(val_set), len(test_set), image_size,
    )

    fit_started = time.perf_counter()
    result = fit(
        model,
        train_set,
        val_set,
        config,
        device=device,
        state_dir=state_dir,
        history_csv=history_csv,
        log=log,
        param_groups=groups,
        fingerprint_extra={
            "model": model_name,
            "image_size": int(image_size),
            "split": split_digest(split_frame),
            "model_kwargs": dict(model_kwargs or {}),
            "backbone": backbone_info,
        },
        restore_best=True,
        progress=progress,
        # networks with a schedule of their own (drop path of the NAS retrain) follow the epochs
        on_epoch_start=(lambda m, epoch, epochs: m.on_epoch_start(epoch, epochs)) if hasattr(model, "on_epoch_start") else None,
    )
    fit_seconds = time.perf_counter() - fit_started

    eval_bs = config.eval_batch_size or config.batch_size
    probs = predict_proba(model, test_set, batch_size=eval_bs, device=device, num_workers=config.num_workers, amp=config.amp)
    labels = np.asarray(test_rows["label"], dtype=np.int64)
    # over the test rows with known labels; None / header-only ROC when they are hidden
    test_auc = metrics_lib.roc_auc(labels, probs) if len(labels) else None
    roc = metrics_lib.roc_frame(labels, probs) if len(labels) else metrics_lib.empty_roc()

    meta = {
        "model": model_name,
        "image_size": int(image_size),
        "best_epoch": result.best_epoch,
        "backbone": backbone_info,
        "model_kwargs": dict(model_kwargs or {}),
    }
    save_weights(weights_path, result.best_state_dict, meta=meta)
    write_csv(metrics_lib.predictions_frame(test_rows["id"], probs), predictions_path)
    write_csv(roc[list(metrics_lib.ROC_COLUMNS)], roc_path)
    metrics = metrics_lib.make_metrics(
        model=model_name,
        display_name=DISPLAY_NAME[model_name],
        family=FAMILY[model_name],
        features=None,
        valid_acc=result.best_val_acc,
        valid_loss=result.best_val_loss,
        test_auc=test_auc,
        n_train=len(train_set),
        n_val=len(val_set),
        n_test=len(test_set),
        test_skipped=test_skipped,
        params_count=counts["total"],
        # training time over every attempt (a resumed run counts its killed predecessors)
        # plus this process's setup and prediction time
        wall_time_s=result.wall_time_s + (time.perf_counter() - started) - fit_seconds,
        device=result.device,
        seed=config.seed,
        params_trainable=counts["trainable"],
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
        backbone=None if backbone_info is None else {"arch": backbone_info["arch"], "weights": backbone_info["mode"]},
    )
    write_json(metrics_path, metrics)
    if not keep_state:
        clear_state(state_dir)
    log.info(
        "%s: best epoch %d/%d, valid acc %.4f, valid loss %.4f, test AUC %s",
        model_name, result.best_epoch, result.epochs_run, result.best_val_acc, result.best_val_loss,
        "n/a (no test labels)" if test_auc is None else f"{test_auc:.4f}",
    )
    return metrics


def load_trained(weights_path: str | Path, *, untrained_seed: int | None = None) -> torch.nn.Module:
    """Rebuild a network written by ``train_and_evaluate`` from its weights file, in eval mode.

    With ``untrained_seed``: the same architecture freshly initialised under that torch seed
    instead (a baseline for what training changed); the global RNG is left as it was.
    """
    from .checkpoint import load_weights

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
