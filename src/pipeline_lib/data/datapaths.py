"""Parameters that are paths: confined, normalised, and checked before Snakemake looks.

:func:`check_data_paths` runs when the workflow loads (``common.smk``, right after the
schema), so a wrong ``ingest.root``, ``ingest.test_labels`` or ``features.weights_file``
is a one-line error naming the params key and the fix, not Snakemake's
``MissingInputException``. It also normalises ``ingest.root`` and ``ingest.test_labels``
(``./data/raw/builtin``, ``data/raw/builtin/`` and ``data/raw/builtin`` are one folder), so
the ``generate`` rule matches every spelling of the built-in root. Kept free of heavy
imports: every Snakemake start (and every cluster job) parses the workflow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, MutableMapping

from ..io.errors import PipelineError

DATA_ROOT = "data"
BUILTIN_ROOT = "data/raw/builtin"  # made by rule generate when it is missing
_LAYOUT = "train/good_0, train/bad_1 and test/all_tests"


def confine_data_path(
    path: str | os.PathLike, *, key: str, data_root: str | os.PathLike = DATA_ROOT
) -> Path:
    """``path`` unchanged if absolute or inside ``data_root`` (both relative to the working
    directory); PipelineError naming ``key`` if a relative path escapes it (``..``)."""
    given = Path(path)
    if given.is_absolute():
        return given
    base = os.path.normpath(os.fspath(data_root))
    norm = os.path.normpath(os.fspath(given))
    if norm != base and not norm.startswith(base + os.sep):
        raise PipelineError(
            f"{key} in params.yaml is {os.fspath(path)!r}, which resolves to {norm!r} outside "
            f"the data root {base}/; relative data paths must stay inside {base}/ (e.g. "
            f"{base}/raw/<name>); give an absolute path to use a folder elsewhere on purpose"
        )
    return given


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


def check_data_paths(config: MutableMapping[str, Any], *, builtin_root: str = BUILTIN_ROOT) -> None:
    """Normalise ``config``'s data paths in place; PipelineError if one cannot be used.

    A path inside the built-in root counts as present while ``ingest.root`` is that root
    (rule generate makes both). Relative paths are relative to the working directory.
    """
    ingest = config["ingest"]
    root = os.path.normpath(ingest["root"])
    confine_data_path(root, key="ingest.root")
    ingest["root"] = root
    builtin = root == os.path.normpath(builtin_root)
    if not builtin and not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise PipelineError(
            f"ingest.root in params.yaml is {root!r}, which {what}; put the data there in "
            f"Nexperia's layout ({_LAYOUT}), or set ingest.root to the folder that holds it "
            f"({builtin_root} is the built-in data, generated when missing)"
        )
    labels = ingest["test_labels"]
    if labels:
        labels = ingest["test_labels"] = os.path.normpath(labels)
        confine_data_path(labels, key="ingest.test_labels")
        made_by_generate = builtin and _inside(labels, root)
        if not made_by_generate and not os.path.isfile(labels):
            raise PipelineError(
                f"ingest.test_labels in params.yaml is {labels!r}, which is not a file; set it "
                "to the id,label CSV of the test images, or to null when the labels are hidden "
                "(real data)"
            )
    _check_weights_file(config.get("features", {}))


def _check_weights_file(features: MutableMapping[str, Any]) -> None:
    weights_file = features.get("weights_file")
    if not weights_file or os.path.isfile(weights_file):
        return
    from ..features.backbones import imagenet_url  # torch: only on the way to an error

    arch = features.get("arch", "resnet18")
    raise PipelineError(
        f"features.weights_file in params.yaml is {weights_file!r}, which is not a file; "
        f"download the ImageNet weights of {arch} from {imagenet_url(arch)} to that path "
        "(and `dvc add` it), or set features.weights_file: null to read the torch hub cache"
    )
