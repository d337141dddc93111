"""The study's paired comparisons, each on the same images with seeds averaged, and one sentence each.

Per pair (A vs B): a two-level paired bootstrap (images stratified by class, the same indices
for both models; then each model's seeds drawn with replacement) of the difference in validation
accuracy and in test AUC, each model's metric averaged over its drawn seeds; and the exact McNemar test on the validation images, on each model's
seed-ensemble call (the mean of its seeds' 0/1 calls above one half; a tie counts as good).
A difference is "significant" when its 95 % interval leaves out zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import stats
from ..io.errors import PipelineError
from ..study.registry import CLASSIFIERS, REGISTRY
from ..study.stage_config import StageConfig, check_types
from .seed_runs import ImageSet

SEARCHED = ("darts", "enas")
RANDOM_CELL = "random"
# names of models the registry may not know yet (the random cell comes with the seeds work)
_FALLBACK_NAMES = {RANDOM_CELL: "Random cell"}

COMPARISON_COLUMNS = (
    "model_a", "model_b", "name_a", "name_b", "n_seeds_a", "n_seeds_b",
    "n_val", "valid_acc_a", "valid_acc_b", "valid_acc_diff", "valid_acc_diff_lo", "valid_acc_diff_hi",
    "n_test", "test_auc_a", "test_auc_b", "test_auc_diff", "test_auc_diff_lo", "test_auc_diff_hi",
    "mcnemar_a_only", "mcnemar_b_only", "mcnemar_p", "sentence",
)


def study_pairs() -> list[tuple[str, str]]:
    """(A, B) in the report's order: FBP vs CNN, each classifier fine-tuned vs pretrained,
    DARTS vs ENAS, each searched cell vs the random cell."""
    return [
        ("resnet_fbp", "cnn2"),
        *((f"{clf}_finetuned", f"{clf}_pretrained") for clf in CLASSIFIERS),
        ("darts", "enas"),
        *((m, RANDOM_CELL) for m in SEARCHED),
    ]


def display_name(model: str) -> str:
    """``ResNet FBP``; a classical model with its features (``LDA on fine-tuned features``)."""
    spec = REGISTRY.get(model)
    if spec is None:
        return _FALLBACK_NAMES.get(model, model)
    if spec.family == "classical":
        features = model.rsplit("_", 1)[1].replace("finetuned", "fine-tuned")
        return f"{spec.display_name} on {features} features"
    return spec.display_name


@dataclass(frozen=True)
class TableConfig(StageConfig):
    """The ``table`` section (every interval's level, the bootstraps' size) and the bootstraps' seed.

    ``seed`` is not a key of the section: the table rule gives ``report.seed``
    (``TableConfig.from_params({**table, "seed": report_seed})``).
    """

    WHERE = "table"

    bootstrap_resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self, self.WHERE)
        if self.bootstrap_resamples < 1:
            raise PipelineError(f"table.bootstrap_resamples: {self.bootstrap_resamples} is invalid; expected >= 1")
        if not 0 < self.confidence < 1:
            raise PipelineError(f"table.confidence: {self.confidence} is invalid; expected a number in (0, 1)")
        if self.seed < 0:
            raise PipelineError(f"report.seed: {self.seed} is invalid; expected an integer >= 0")


def _ensemble_correct(val: ImageSet, model: str) -> np.ndarray:
    called_bad = val.calls[model].mean(axis=0) > 0.5
    return called_bad == val.labels.astype(bool)


def compare(a: str, b: str, val: ImageSet, test: ImageSet | None, config: TableConfig) -> dict:
    """One row of comparisons.csv (fractions; the sentence in points)."""
    kw = dict(n_resamples=config.bootstrap_resamples, seed=config.seed, level=config.confidence)
    acc = stats.paired_bootstrap(stats.accuracy_rows, val.labels, val.calls[a], val.calls[b], **kw)
    auc = None if test is None else stats.paired_bootstrap(stats.auc_rows, test.labels, test.scores[a], test.scores[b], **kw)
    mc = stats.mcnemar_exact(_ensemble_correct(val, a), _ensemble_correct(val, b))
    row = {
        "model_a": a, "model_b": b, "name_a": display_name(a), "name_b": display_name(b),
        "n_seeds_a": int(val.calls[a].shape[0]), "n_seeds_b": int(val.calls[b].shape[0]),
        "n_val": acc.n_images, "valid_acc_a": acc.a, "valid_acc_b": acc.b, "valid_acc_diff": acc.diff,
        "valid_acc_diff_lo": acc.lo, "valid_acc_diff_hi": acc.hi,
        "n_test": 0 if auc is None else auc.n_images,
        **{f"test_auc_{k}": (None if auc is None else getattr(auc, k)) for k in ("a", "b")},
        "test_auc_diff": None if auc is None else auc.diff,
        "test_auc_diff_lo": None if auc is None else auc.lo, "test_auc_diff_hi": None if auc is None else auc.hi,
        "mcnemar_a_only": mc.a_only, "mcnemar_b_only": mc.b_only, "mcnemar_p": mc.p_value,
    }
    row["sentence"] = sentence(row, acc, auc, level=config.confidence)
    return row


def _points(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "\u2212")


def _ci(res: stats.PairedResult, level: float) -> str:
    lo, hi = (f"{100 * v:.1f}".replace("-", "\u2212") for v in (res.lo, res.hi))
    verdict = "significant" if res.significant else "not significant"
    return f"{round(100 * level)} % CI [{lo}, {hi}]: {verdict}"


def sentence(row: Mapping, acc: stats.PairedResult, auc: stats.PairedResult | None, *, level: float) -> str:
    """E.g. "ResNet FBP vs 2-layer CNN: +2.3 points valid acc, 95 % CI [−1.0, 5.6]: not significant; ..."."""
    parts = [f"{_points(acc.diff)} points valid acc, {_ci(acc, level)}"]
    parts.append("test AUC not measured (no test labels)" if auc is None
                 else f"{_points(auc.diff)} points test AUC, {_ci(auc, level)}")
    p = row["mcnemar_p"]
    parts.append(f"McNemar p = {p:.3g} ({row['mcnemar_a_only']} vs {row['mcnemar_b_only']} discordant images)")
    text = f"{row['name_a']} vs {row['name_b']}: " + "; ".join(parts) + "."
    if row["model_b"] == RANDOM_CELL:
        text += " " + _versus_random(row["name_a"], acc, auc)
    return text


def _versus_random(name: str, acc: stats.PairedResult, auc: stats.PairedResult | None) -> str:
    results = [r for r in (acc, auc) if r is not None]
    better = any(r.lo > 0 for r in results) and not any(r.hi < 0 for r in results)
    if better:
        return f"The {name} search beats the random cell."
    worse = any(r.hi < 0 for r in results)
    return (f"The {name} search does not beat the random cell: the random cell is better."
            if worse else f"The {name} search does not beat the random cell.")


def compare_all(pairs: Sequence[tuple[str, str]], val: ImageSet, test: ImageSet | None,
                config: TableConfig) -> pd.DataFrame:
    """comparisons.csv: one row per pair whose two models are both in the table."""
    rows = [compare(a, b, val, test, config) for a, b in pairs if a in val.calls and b in val.calls]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
