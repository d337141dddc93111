"""The SVM row's estimator: the exact kernel SVM, or its standard scalable stand-in.

scikit-learn's kernel ``SVC`` fits in between O(n²) and O(n³) time, and the study fits it six
times per feature set (5-fold Platt calibration plus the final fit). Above a few tens of
thousands of training rows that dwarfs every other CPU stage (``bench/scale/README.md``), so
``classical.svm.variant`` chooses how the SVM row is fitted:

- ``exact``: ``SVC(**kwargs)`` -- the study's RBF SVM.
- ``nystroem``: ``Nystroem`` (the same kernel, ``gamma``, ``degree``, ``coef0``;
  ``nystroem_components`` landmarks drawn with the pipeline seed) followed by ``LinearSVC``
  (the same ``C`` and ``class_weight``): a linear SVM in an approximate feature space of the
  kernel, linear in n (scikit-learn's documented kernel approximation).
- ``linear``: ``LinearSVC`` on the standardised features (no kernel).
- ``auto``: ``exact`` up to ``max_exact_rows`` training rows, ``nystroem`` above.

Every variant is calibrated the same way (``CalibratedClassifierCV``, sigmoid, 5-fold, one
final fit) and predicts labels from its own decision function. The other keys of
``classical.svm`` are ``SVC``'s keyword arguments; the scalable variants take the ones they
share with it and ignore SVC-only ones (``cache_size``, ``shrinking``, ``tol``, ``max_iter``...).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
from sklearn.base import clone
from sklearn.kernel_approximation import Nystroem
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC, LinearSVC

from ..io.errors import PipelineError
from ..study.stage_config import StageConfig, check_types

VARIANTS = ("exact", "nystroem", "linear")


@dataclass(frozen=True)
class SvmVariantConfig(StageConfig):
    """The ``classical.svm`` keys that choose how the SVM row is fitted (not SVC arguments).

    The classical stage's other keys are the estimators' own keyword arguments, free-form by
    design and checked against each estimator (``classifiers.build_classifier``); only these
    three are the pipeline's, so only they are a type.
    """

    WHERE = "classical.svm"

    variant: str = "exact"
    max_exact_rows: int = 10000
    nystroem_components: int = 2000

    def __post_init__(self) -> None:
        if self.variant not in (*VARIANTS, "auto"):
            raise PipelineError(f"params.yaml classical.svm.variant: {self.variant!r}; expected auto, {', '.join(VARIANTS)}")
        for key in ("max_exact_rows", "nystroem_components"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PipelineError(f"params.yaml classical.svm.{key}: expected an integer >= 1, got {value!r}")
        check_types(self, self.WHERE)


# classical.svm keys that choose the variant (the rest are SVC's)
VARIANT_KEYS = tuple(f.name for f in fields(SvmVariantConfig))
# SVC arguments each scalable step understands (the rest are SVC-only)
_KERNEL_KEYS = ("kernel", "gamma", "degree", "coef0")
_LINEAR_KEYS = ("C", "class_weight")
# LinearSVC's squared hinge converges slowly on a few thousand kernel features; scikit-learn's
# default of 1000 iterations stopped short on the 10,000-image set (ConvergenceWarning).
LINEAR_MAX_ITER = 5000


def split_params(params: Mapping[str, Any]) -> tuple[SvmVariantConfig, dict]:
    """``classical.svm`` → (the variant's config, SVC keyword arguments)."""
    options = SvmVariantConfig.from_params({k: v for k, v in params.items() if k in VARIANT_KEYS})
    return options, {k: v for k, v in params.items() if k not in VARIANT_KEYS}


def resolve_variant(options: SvmVariantConfig, n_train: int) -> str:
    """The variant that runs for ``n_train`` training rows (``auto``: the row threshold)."""
    if options.variant != "auto":
        return options.variant
    return "exact" if n_train <= options.max_exact_rows else "nystroem"


def svm_steps(variant: str, options: SvmVariantConfig, svc_kwargs: Mapping[str, Any], seed: int) -> list[tuple[str, Any]]:
    """The pipeline steps after the scaler: the kernel map (nystroem) and the uncalibrated SVM."""
    if variant == "exact":
        return [("svm", SVC(**svc_kwargs))]
    linear = LinearSVC(
        **{k: svc_kwargs[k] for k in _LINEAR_KEYS if k in svc_kwargs}, max_iter=LINEAR_MAX_ITER, random_state=seed
    )
    if variant == "linear":
        return [("svm", linear)]
    kernel = {k: svc_kwargs[k] for k in _KERNEL_KEYS if k in svc_kwargs}
    kernel.setdefault("kernel", "rbf")
    if kernel["kernel"] == "precomputed":
        raise PipelineError("params.yaml classical.svm.kernel: 'precomputed' has no Nystroem approximation; use variant exact")
    # SVC's gamma 'auto' is Nystroem's None (1 / n_features); 'scale' depends on the training
    # rows and stays a marker until fit_gamma replaces it (Nystroem itself would reject it)
    gamma = kernel.get("gamma", "scale")
    kernel["gamma"] = None if gamma == "auto" else gamma
    kmap = Nystroem(**kernel, n_components=options.nystroem_components, random_state=seed)
    return [("kmap", kmap), ("svm", linear)]


def fit_gamma(pipe: Pipeline, X_train: np.ndarray) -> None:
    """Replace a Nystroem step's ``gamma='scale'`` by SVC's value for these training rows:
    1 / (d · Var X) of the standardised rows (the steps before the kernel map)."""
    if "kmap" not in pipe.named_steps or pipe.named_steps["kmap"].gamma != "scale":
        return
    before = pipe[: list(pipe.named_steps).index("kmap")]
    X = np.asarray(clone(before).fit_transform(X_train), dtype=np.float64)
    var = float(X.var())
    pipe.set_params(kmap__gamma=1.0 / (X.shape[1] * var) if var > 0 else 1.0)  # SVC: 1.0 for constant X


def describe(variant: str, options: SvmVariantConfig, svc_kwargs: Mapping[str, Any]) -> str:
    """One line for the table caption and metrics.json: which SVM ran."""
    kernel = svc_kwargs.get("kernel", "rbf")
    if variant == "exact":
        text = f"exact {kernel} SVC"
    elif variant == "nystroem":
        text = f"Nystroem {kernel} kernel map ({options.nystroem_components:,} components) + LinearSVC"
    else:
        text = "LinearSVC on the standardised features (no kernel)"
    if options.variant == "auto":
        text += f" (variant auto: exact up to {options.max_exact_rows:,} training rows)"
    return text
