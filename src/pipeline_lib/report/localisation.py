"""Do the explanation maps fall on the defect? Scores against the generator's boxes.

The built-in data know where every defect is (``defects.csv``: one row per defect, its box
``x0, y0, x1, y1`` in pixels of the image, x1/y1 exclusive; see ``pipeline_lib.data.chipgen``).
A map, upsampled to the image's pixels, is scored per bad image by

- the **pointing game** (Zhang et al. 2016): 1 when the map's maximum lies in a defect box
  grown by ``tolerance`` pixels, else 0. Ties (a plateau, a flat map) count as a random pick
  among the tied pixels: the share of them inside. A flat map then scores the chance level;
- **energy in box** (Wang et al. 2020, Score-CAM): the share of the map's positive mass
  inside the boxes (no tolerance); a map without positive mass scores the chance level.

The chance level is the expected score of a uniform-random map (i.i.d. pixels): the max is
then a uniformly random pixel, so pointing chance = the grown boxes' share of the image, and
by exchangeability every pixel's expected mass share is 1/N, so energy chance = the boxes'
share. Both are exact per image, with no random draw. A stronger baseline for the pointing
game is Zhang et al.'s centre map (its maximum at the image centre): the generator puts
most defects on the die, in the middle of the image. Means over images get a 95 %
percentile bootstrap interval (``scipy.stats.bootstrap``, seeded).

Torch-free: the maps come from ``report.explain``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..io.errors import PipelineError
from .config import LocalisationConfig
from .inputs import read_csv_checked

BOX_COLUMNS = ("x0", "y0", "x1", "y1")
BASELINES = ("trained", "untrained", "centre", "chance")
SCORES = ("pointing", "energy")
# The per-image table written by the localisation rule (one row per image and network).
IMAGE_COLUMNS = ("id", "split", "network", "pointing", "energy", "centre_pointing", "chance_pointing", "chance_energy",
                 "p_bad", "p_bad_map", "flat")


@dataclass(frozen=True)
class GroundTruth:
    """Boxes per bad image id (int array [n, 4]); ``note`` says why there are none."""

    boxes: Mapping[str, np.ndarray] = field(default_factory=dict)
    note: str | None = None


def read_boxes(root: str | os.PathLike) -> GroundTruth:
    """The defect boxes of the data under ``root`` (its ``defects.csv``), or a note why none."""
    path = Path(root) / "defects.csv"
    if not path.exists():
        return GroundTruth(note=f"{path} does not exist: these data carry no defect locations (real data), "
                                "so the maps are drawn but not scored against the defects")
    frame = read_csv_checked(path, ("id",), what="defects file", producer="the generate rule")
    if not set(BOX_COLUMNS) <= set(frame.columns):
        return GroundTruth(note=f"{path} has no defect boxes (columns {', '.join(BOX_COLUMNS)}): "
                                "the maps are not scored; regenerate the built-in data (rule generate) to get them")
    frame = frame.dropna(subset=list(BOX_COLUMNS))
    boxes = {str(i): g[list(BOX_COLUMNS)].to_numpy(dtype=np.int64) for i, g in frame.groupby("id", sort=True)}
    if not boxes:
        return GroundTruth(note=f"{path} lists no defect box: nothing to score the maps against")
    return GroundTruth(boxes=boxes)


def box_mask(boxes: np.ndarray, shape: tuple[int, int], tolerance: int = 0) -> np.ndarray:
    """Union of the boxes (grown by ``tolerance`` pixels each side, clipped) as a bool [H, W]."""
    h, w = shape
    mask = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, np.int64).reshape(-1, 4):
        if x1 <= x0 or y1 <= y0:  # an empty box (a defect that drew nothing)
            continue
        mask[max(0, y0 - tolerance):max(0, y1 + tolerance), max(0, x0 - tolerance):max(0, x1 + tolerance)] = True
    return mask


def pointing_score(heat: np.ndarray, hit: np.ndarray) -> float:
    """Share of the map's maximal pixels inside ``hit`` (1/0 for a unique maximum)."""
    heat = np.asarray(heat)
    if not np.isfinite(heat).all():
        raise PipelineError("pointing game: the map has NaN or infinite values")
    top = heat == heat.max()
    return float(top[hit].sum() / top.sum())


def energy_in_box(heat: np.ndarray, box: np.ndarray) -> float:
    """Share of the map's positive mass inside ``box``; the box's area share when there is none."""
    positive = np.clip(np.asarray(heat, np.float64), 0, None)
    total = positive.sum()
    if not total > 0:
        return float(box.mean())
    return float(positive[box].sum() / total)


def centre_pointing(hit: np.ndarray) -> float:
    """The pointing game of a map whose maximum is the image's centre (the central pixel,
    or the 2 or 4 central ones of an even size, as a tie)."""
    h, w = hit.shape
    return float(hit[(h - 1) // 2:h // 2 + 1, (w - 1) // 2:w // 2 + 1].mean())


def score_map(heat: np.ndarray, boxes: np.ndarray, tolerance: int) -> dict[str, float | bool]:
    """The two scores of one image's map and their chance levels (``heat``: [H, W] in image pixels)."""
    box = box_mask(boxes, heat.shape)
    hit = box_mask(boxes, heat.shape, tolerance)
    return {
        "pointing": pointing_score(heat, hit),
        "energy": energy_in_box(heat, box),
        "centre_pointing": centre_pointing(hit),
        "chance_pointing": float(hit.mean()),
        "chance_energy": float(box.mean()),
        "flat": bool(heat.max() == heat.min()),
    }


def bootstrap_ci(values: Sequence[float], *, seed: int, n_resamples: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling images), seeded."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    if np.ptp(values) == 0:  # every resample has the same mean
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                          vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarise(per_image: pd.DataFrame, meta: Mapping, *, seed: int, n_resamples: int) -> list[dict]:
    """Rows of the localisation table for one (model, method): trained, untrained, centre
    (pointing game only: a point has no mass to share) and chance."""
    rows = []
    trained = per_image[per_image["network"] == "trained"].sort_values("id", kind="stable")
    for baseline in BASELINES:
        if baseline in ("centre", "chance"):
            part = trained.drop(columns=list(SCORES)).rename(columns={f"{baseline}_pointing": "pointing",
                                                                       "chance_energy": "energy"})
            if baseline == "centre":
                part = part.assign(energy=np.nan)
        else:
            part = per_image[per_image["network"] == baseline].sort_values("id", kind="stable")
        row = {k: meta[k] for k in ("model", "method", "layer", "input_px", "dense_stages", "map_h", "map_w", "tolerance_px")}
        row.update(baseline=baseline, n_images=int(len(part)))
        for score in SCORES:
            values = part[score].to_numpy(np.float64)
            values = values[np.isfinite(values)]
            row[score] = float(values.mean()) if len(values) else float("nan")
            row[f"{score}_lo"], row[f"{score}_hi"] = bootstrap_ci(values, seed=seed, n_resamples=n_resamples)
        is_net = baseline in ("trained", "untrained")
        row["n_flat"] = int(part["flat"].sum()) if is_net else None
        for key, column in (("called_bad", "p_bad"), ("map_called_bad", "p_bad_map")):
            row[key] = float((part[column] > 0.5).mean()) if is_net and len(part) else None
        for key in ("good_called_bad", "map_good_called_bad"):
            row[key] = meta.get(key) if baseline == "trained" else None
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the table and its sentences

METHOD_NAMES = {"cam": "CAM", "gradcam": "Grad-CAM"}
TABLE_COLUMNS = ("model", "display_name", "method", "layer", "input_px", "dense_stages", "map_h", "map_w", "tolerance_px",
                 "baseline", "n_images", "pointing", "pointing_lo", "pointing_hi", "energy", "energy_lo", "energy_hi",
                 "n_flat", "called_bad", "good_called_bad", "map_called_bad", "map_good_called_bad")


def _pct(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.0f}"


def _ci(row: Mapping, score: str) -> str:
    return f"{_pct(row[f'{score}_lo'])}–{_pct(row[f'{score}_hi'])}"


def dense_description(n_stages: int) -> str:
    """Which ResNet stages ran at stride 1 (``report.explain.densify``), in words."""
    stages = ("layer2", "layer3", "layer4")[3 - n_stages:] if n_stages else ()
    return f"{'–'.join((stages[0], stages[-1])) if len(stages) > 1 else stages[0]} evaluated densely" if stages else ""


def map_description(row: Mapping) -> str:
    where = "the maps entering the pooling" if row["method"] == "cam" else row["layer"]
    dense = dense_description(int(row.get("dense_stages") or 0))
    return f"{where}, {row['map_h']}×{row['map_w']} cells at {row['input_px']} px" + (f", {dense}" if dense else "")


def sentence(rows: Sequence[Mapping]) -> str:
    """One sentence for one (model, method) from its trained / untrained / chance rows."""
    by = {r["baseline"]: r for r in rows}
    t, u, c = by["trained"], by["untrained"], by["chance"]
    name = t.get("display_name") or t["model"]
    text = (
        f"{name} {METHOD_NAMES[t['method']]} ({map_description(t)}) points at the defect in {_pct(t['pointing'])} % "
        f"of {t['n_images']} bad images (95 % CI {_ci(t, 'pointing')}; untrained network {_pct(u['pointing'])} %, "
        f"image centre {_pct(by['centre']['pointing'])} %, chance {_pct(c['pointing'])} %); "
        f"{_pct(t['energy'])} % of its positive mass lies in the defect boxes "
        f"(95 % CI {_ci(t, 'energy')}; untrained {_pct(u['energy'])} %, chance {_pct(c['energy'])} %)."
    )
    if t.get("dense_stages"):
        text += (f" (As trained it calls {_pct(t['called_bad'])} % of these images and "
                 f"{_pct(t.get('good_called_bad'))} % of the good validation images bad; pooled over the dense grid "
                 f"it would call {_pct(t.get('map_called_bad'))} % and {_pct(t.get('map_good_called_bad'))} % bad.)")
    return text


def groups(rows: Sequence[Mapping]) -> list[list[Mapping]]:
    """The table's rows grouped by (model, method), in order of appearance."""
    out: dict[tuple, list] = {}
    for r in rows:
        out.setdefault((r["model"], r["method"]), []).append(r)
    return list(out.values())


def display_rows(rows: Sequence[Mapping]) -> pd.DataFrame:
    """One line per (model, method): each score with its interval, beside untrained and chance."""
    lines = []
    for group in groups(rows):
        by = {r["baseline"]: r for r in group}
        t = by["trained"]
        line = {"Model": t.get("display_name") or t["model"], "Method": METHOD_NAMES[t["method"]],
                "Map": map_description(t), "Bad images": str(t["n_images"])}
        for score, title in (("pointing", "Pointing game %"), ("energy", "Energy in box %")):
            for baseline in BASELINES:
                r = by[baseline]
                if r[score] is None or not np.isfinite(r[score]):
                    continue  # the centre baseline has no energy
                line[f"{title} {baseline}"] = f"{_pct(r[score])} ({_ci(r, score)})"
        line["Called bad % (bad / good val)"] = f"{_pct(t['called_bad'])} / {_pct(t.get('good_called_bad'))}"
        lines.append(line)
    return pd.DataFrame(lines)


def markdown(rows: Sequence[Mapping], note: str | None, tolerance_px: int | None) -> str:
    """The table as Markdown, with what the columns mean, the sentences, or the note."""
    if not rows:
        return f"# Localisation\n\nNo localisation scores: {note}\n"
    table = display_rows(rows)
    head = "| " + " | ".join(table.columns) + " |\n| " + " | ".join("---" if i < 3 else "---:" for i in range(len(table.columns))) + " |\n"
    body = "".join("| " + " | ".join(map(str, r)) + " |\n" for r in table.itertuples(index=False))
    return (
        "# Localisation\n\n"
        f"Bad validation and test images; score (95 % bootstrap CI) for the trained network, an untrained one of "
        f"the same architecture, a map pointing at the image centre (pointing game only) and a uniform-random map "
        f"(chance). Pointing game: the map's maximum within "
        f"{tolerance_px} px of a defect box. Energy in box: the share of the map's positive mass inside the boxes. "
        "Evaluated densely: the stride of those ResNet stages replaced by dilation (same weights, a finer grid). "
        "Called bad: the share of the bad images, and of the good validation images, the network as trained calls "
        "bad.\n\n"
        + head + body + "\n" + "\n".join(f"- {sentence(g)}" for g in groups(rows)) + "\n"
        + (f"\nNot scored: {note}\n" if note else "")
    )


def _json_safe(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def write_table(
    csvs: Sequence[str], metas: Sequence[str], config: LocalisationConfig, *, seed: int, csv_path, md_path, json_path
) -> tuple[list[dict], str | None]:
    """Summarise every (model, method)'s per-image scores into the localisation table:
    CSV (one row per model, method and baseline), Markdown and JSON (rows, sentences, note).
    The bootstraps draw ``config.bootstrap_resamples`` resamples seeded by ``seed`` (``report.seed``)."""
    n_resamples = config.bootstrap_resamples
    from ..io.atomic import write_csv, write_json, write_text

    rows, notes, tolerance = [], [], None
    for csv_file, meta_file in zip(csvs, metas):
        meta = read_json_checked(meta_file)
        tolerance = meta["tolerance_px"]
        if meta.get("note"):
            notes.append(meta["note"])
            continue
        per_image = read_csv_checked(csv_file, IMAGE_COLUMNS, what="per-image localisation scores",
                                     producer="the localisation rule")
        rows += [{k: _json_safe(v) for k, v in r.items()} | {"display_name": meta["display_name"]}
                 for r in summarise(per_image, meta, seed=seed, n_resamples=n_resamples)]
    note = "; ".join(dict.fromkeys(notes)) or None
    write_csv(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)), csv_path)
    write_text(md_path, markdown(rows, note, tolerance))
    write_json(json_path, {"rows": rows, "sentences": [sentence(g) for g in groups(rows)], "note": note,
                           "tolerance_px": tolerance, "bootstrap": {"seed": seed, "n_resamples": n_resamples,
                                                                     "level": 0.95, "method": "percentile"}})
    return rows, note


def read_json_checked(path: str | os.PathLike) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PipelineError(f"{path}: localisation record not found; run the localisation rule first") from exc
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot be read as JSON ({exc}); re-run the localisation rule") from exc
