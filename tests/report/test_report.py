"""The report (pipeline_lib.report): table, figures, provenance, the HTML page and the rules."""

import base64
import dataclasses
import logging
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from e2e_helpers import ROOT, copy_workflow, job_counts, job_inputs, snakemake
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.models.networks import build_model
from pipeline_lib.report.cam import maps_for_samples, to_display
from pipeline_lib.report.figures import (
    alpha_figure,
    cam_figure,
    check_png,
    roc_figure,
    save_png,
    training_figure,
    tsne_figure,
)
from pipeline_lib.report.html import FigureEntry, render_report
from pipeline_lib.report.provenance import git_commit, make_record, params_sha256, read_record, sidecar_path, write_record
from pipeline_lib.report.table import load_tidy, report_table, table_note
from pipeline_lib.report.tsne import embed

TINY = ("--configfile", ".test/params.yaml")


# --------------------------------------------------------------------------- a synthetic study


def tidy_rows():
    rows = []
    for i, clf in enumerate(("lda", "rf", "lr", "svm")):
        for feats, acc in (("pretrained", 0.58 + i / 100), ("finetuned", 0.96)):
            rows.append(dict(model=f"{clf}_{feats}", family="classical", features=feats, valid_acc=acc, test_auc=0.9,
                             params_count=1025 + i, wall_time_s=1.25, device="cpu"))
    rows.append(dict(model="cnn2", display_name="2-layer CNN", family="cnn", features=None, valid_acc=0.7, test_auc=None, params_count=19_522,
                     wall_time_s=30.0, device="cuda:0"))
    return rows


def build_demo_report(tmp: Path, extra_png: bool = True):
    """Every kind of figure drawn by the real functions on small synthetic data, with records."""
    fig_dir = tmp / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(tidy_rows()).to_csv(tmp / "results.csv", index=False)
    entries = []

    def keep(name, fig, title, caption):
        png = fig_dir / f"{name}.png"
        save_png(fig, png, dpi=60)
        write_record(sidecar_path(png), make_record(title=title, caption=caption, rule=f"report_{name}", params={"report.dpi": 60}, cwd=tmp))
        entries.append(FigureEntry(path=str(png)))

    rng = np.random.default_rng(0)
    y = np.arange(20) % 2
    frames = []
    for name, gap in (("pretrained", 0.5), ("finetuned", 6.0)):
        coords = embed(rng.normal(size=(20, 16)) + gap * y[:, None], seed=0, perplexity=5, max_iter=250, pca_components=None).coords
        frames.append(pd.DataFrame({"features": name, "label": y, "x": coords[:, 0], "y": coords[:, 1]}))
    keep("tsne", tsne_figure(pd.concat(frames), {}, {}), "t-SNE", "two panels <coloured> by class")

    torch.manual_seed(0)
    model = build_model("cnn2", image_size=32).eval()
    x = torch.randn(4, 3, 32, 32)
    samples = pd.DataFrame({"id": list("abcd"), "split": ["train", "train", "val", "val"], "label": [0, 1, 0, 1]})
    maps = maps_for_samples(model, x, samples["label"].tolist(), method="gradcam", layer="features.6")
    keep("gradcam_cnn2", cam_figure(to_display(x), maps, samples, title="Grad-CAM"), "Grad-CAM on cnn2", "rows: samples")

    fpr = np.linspace(0, 1, 11)
    curves = {"lda_pretrained": pd.DataFrame({"fpr": fpr, "tpr": np.sqrt(fpr)}), "cnn2": pd.DataFrame({"fpr": [], "tpr": []})}
    keep("roc", roc_figure(curves)[0], "ROC", "every model")
    hist = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4], "train_acc": [0.5, 0.7, 0.8],
                         "val_loss": [0.7, 0.6, 0.6], "val_acc": [0.5, 0.6, 0.65]})
    keep("training", training_figure({"cnn2": hist})[0], "Training curves", "loss and accuracy")
    if extra_png:  # a figure drawn by another stage: no record, caption from the entry
        png = tmp / "cell_normal.png"
        save_png(alpha_figure(alpha_history())[0], png, dpi=60)
        entries.append(FigureEntry(path=str(png), title="DARTS normal cell", caption="the cell", made_by="darts_search", record=False))
    table = report_table(load_tidy(tmp / "results.csv"))
    return table, entries


def alpha_history():
    ops = ["none", "skip_connect", "sep_conv_3x3"]
    rows = [
        dict(epoch=e, cell=c, edge=k, src=k % 2, dst=2 + k // 2, op=op, weight=w)
        for e in (0, 1)
        for c in ("normal", "reduce")
        for k in range(4)
        for op, w in zip(ops, (0.2, 0.3, 0.5) if e else (1 / 3,) * 3)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    table, entries = build_demo_report(root)
    return root, table, entries


def copy_demo(demo, dest: Path):
    """A private copy of the demo report's files (for tests that break them)."""
    root, table, entries = demo
    shutil.copytree(root, dest, dirs_exist_ok=True)
    moved = [dataclasses.replace(e, path=str(dest / Path(e.path).relative_to(root))) for e in entries]
    return table, moved


# --------------------------------------------------------------------------- table


def test_report_table_adds_params_time_device_in_the_slide_shape(tmp_path):
    pd.DataFrame(tidy_rows()).to_csv(tmp_path / "results.csv", index=False)
    table = report_table(load_tidy(tmp_path / "results.csv"))
    assert list(table.columns) == ["Model", "Valid acc %", "Valid acc 95 % CI", "Test AUC %", "Test AUC 95 % CI", "Params",
                                   "Wall time s", "Device"]
    assert list(table["Model"]) == ["LDA", "RF", "LR", "SVM", "2-layer CNN"]  # the slide's names, from results.csv
    lda = table.iloc[0].to_dict()
    assert lda["Valid acc %"] == "58.0 (96.0)"
    assert lda["Params"] == "1,025 (1,025)" and lda["Wall time s"] == "1.2 (1.2)" and lda["Device"] == "cpu"
    cnn = table.iloc[4].to_dict()
    assert cnn == {"Model": "2-layer CNN", "Valid acc %": "70.0", "Valid acc 95 % CI": "-", "Test AUC %": "-",
                   "Test AUC 95 % CI": "-", "Params": "19,522", "Wall time s": "30.0", "Device": "cuda:0"}
    assert "fine-tuned" in table_note(table)


def test_load_tidy_names_a_missing_table(tmp_path):
    with pytest.raises(PipelineError, match=r"nope\.csv: results table not found"):
        load_tidy(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- provenance


def test_params_hash_and_commit(tmp_path):
    a = params_sha256({"report.tsne": {"perplexity": 30, "max_iter": 1000}, "report.seed": 0})
    assert a == params_sha256({"report.seed": 0, "report.tsne": {"max_iter": 1000, "perplexity": 30}})
    assert a != params_sha256({"report.seed": 1, "report.tsne": {"max_iter": 1000, "perplexity": 30}})
    assert re.fullmatch(r"[0-9a-f]{64}", a)
    assert git_commit(tmp_path) == "unknown"  # not a git checkout
    if (ROOT / ".git").exists() and subprocess.run(["git", "--version"], capture_output=True).returncode == 0:
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", git_commit(ROOT))


def test_record_round_trip_and_a_missing_record_names_itself(tmp_path):
    rec = make_record(title="t", caption="c", rule="report_x", params={"report.dpi": 100}, inputs=["a"], cwd=tmp_path)
    write_record(tmp_path / "x.json", rec)
    assert read_record(tmp_path / "x.json") == rec
    assert "report_x" in rec.provenance() and rec.params_sha256[:12] in rec.provenance()
    with pytest.raises(PipelineError, match=r"y\.json: figure record not found"):
        read_record(tmp_path / "y.json")


# --------------------------------------------------------------------------- figures


def test_figures_are_pngs_and_identical_when_redrawn(tmp_path):
    h = alpha_history()
    for name in ("a", "b"):
        fig, details = alpha_figure(h)
        save_png(fig, tmp_path / f"{name}.png")
    assert details == {"epoch": 1, "cells": ["normal", "reduce"], "ops": ["none", "skip_connect", "sep_conv_3x3"]}
    assert check_png(tmp_path / "a.png") == (tmp_path / "b.png").read_bytes()


def test_roc_figure_leaves_out_models_without_test_labels():
    fpr = np.array([0.0, 0.5, 1.0])
    _, details = roc_figure({"a": pd.DataFrame({"fpr": fpr, "tpr": [0.0, 1.0, 1.0]}), "b": pd.DataFrame({"fpr": [], "tpr": []})})
    assert details["auc"] == {"a": pytest.approx(0.75)}
    assert details["without_labels"] == ["b"]


# --------------------------------------------------------------------------- the page


def test_page_shows_the_table_first_then_every_figure_with_provenance(demo):
    _, table, entries = demo
    page = render_report(table, entries, note=table_note(table), git_commit="abc123", params_sha256="f" * 64)
    assert page.index('id="results-table"') < page.index("<figure")
    assert page.count("<figure") == len(entries) == 5
    assert "<td>LDA</td>" in page and "58.0 (96.0)" in page
    assert "two panels &lt;coloured&gt; by class" in page  # captions are escaped
    assert page.count("made by rule report_") == 4 and "made by rule darts_search" in page
    assert "Figure 5. DARTS normal cell." in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5
    for entry, b64 in zip(entries, images):
        assert base64.b64decode(b64) == Path(entry.path).read_bytes()
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_figures_with_the_same_file_name_get_their_own_anchor(demo, tmp_path):
    # DARTS and ENAS both draw cell_normal.png: each figure and table-of-contents link is its own
    _, table, entries = demo
    cell = Path(next(e.path for e in entries if e.path.endswith("cell_normal.png")))
    cells = []
    for nas in ("darts", "enas"):  # as the rules lay them out: results/nas/<method>/seed<s>/
        (tmp_path / nas / "seed0").mkdir(parents=True)
        shutil.copyfile(cell, tmp_path / nas / "seed0" / "cell_normal.png")
        cells.append(FigureEntry(path=str(tmp_path / nas / "seed0" / "cell_normal.png"), title=f"{nas} normal cell", record=False))
    page = render_report(table, [entries[0], *cells], note=None, git_commit="x", params_sha256="0" * 64)
    ids = re.findall(r'<figure id="([^"]+)"', page)
    assert ids == ["fig-tsne", "fig-darts-cell-normal", "fig-enas-cell-normal"]
    assert re.findall(r'<li><a href="#([^"]+)">', page) == ids


def test_missing_figure_fails_clearly_naming_the_file(demo, tmp_path):
    table, entries = copy_demo(demo, tmp_path)
    Path(entries[1].path).unlink()
    with pytest.raises(PipelineError, match=r"gradcam_cnn2\.png: figure not found; run the rule that draws it"):
        render_report(table, entries, note=None, git_commit="x", params_sha256="0" * 64)
    sidecar_path(entries[0].path).unlink()
    with pytest.raises(PipelineError, match=r"tsne\.json: figure record not found"):
        render_report(table, entries[:1], note=None, git_commit="x", params_sha256="0" * 64)
    Path(entries[2].path).write_text("not an image")
    with pytest.raises(PipelineError, match=r"roc\.png: not a PNG file"):
        render_report(table, entries[2:], note=None, git_commit="x", params_sha256="0" * 64)


def _run_report_script(tmp_path, figures):
    out = tmp_path / "out" / "index.html"
    log = tmp_path / "report.log"
    fake = SimpleNamespace(
        input=SimpleNamespace(table=str(tmp_path / "results.csv")),
        output=SimpleNamespace(html=str(out)),
        params=SimpleNamespace(cfg={"report": {"dpi": 100}}, figures=figures),
        wildcards=SimpleNamespace(),
        threads=1,
        resources=SimpleNamespace(),
        log=[str(log)],
        rule="report",
    )
    try:
        runpy.run_path(str(ROOT / "workflow/scripts/report_html.py"), init_globals={"snakemake": fake})
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:  # run_step points the "pipeline" logger at the (now closed) log file
        logging.getLogger("pipeline").handlers.clear()
    return code, out, log.read_text()


def test_report_rule_script_fails_with_one_error_line_and_writes_nothing(demo, tmp_path):
    _, entries = copy_demo(demo, tmp_path)
    figures = [dataclasses.asdict(e) for e in entries]
    code, out, log = _run_report_script(tmp_path, figures)
    assert code == 0 and out.exists() and "5 figures" in log
    out.unlink()
    Path(entries[3].path).unlink()
    code, out, log = _run_report_script(tmp_path, figures)
    assert code == 1
    assert f"ERROR: {entries[3].path}: figure not found" in log
    assert "Traceback" not in log and not out.exists()


# --------------------------------------------------------------------------- the rules


NAS_FIGURES = {  # the report's NAS figures: the DARTS α heatmap (drawn by a report rule, with a record) and the cells
    "results/report/figures/darts_alpha.png": True,
    "results/report/figures/search_diagnostics.png": True,  # both searches' per-epoch diagnostics
    **{f"results/nas/{nas}/seed0/cell_{cell}.png": False for nas in ("darts", "enas") for cell in ("normal", "reduce")},
}


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("report_dag"))
    out = snakemake(workdir, *TINY, "--dry-run")
    return workdir, job_counts(out), out


@pytest.mark.dag
def test_default_target_plans_the_report_and_its_figures(workflow_copy):
    workdir, jobs, _ = workflow_copy
    params = yaml.safe_load((workdir / "params.yaml").read_text())["report"]
    n_cam = len(params["cam"]["cam_models"]) + len(params["cam"]["gradcam_layers"])
    assert jobs["report"] == 1 and jobs["report_tsne"] == 1 and jobs["report_roc"] == 1 and jobs["report_training"] == 1
    assert jobs["report_cam"] == n_cam
    assert jobs["localisation"] == n_cam and jobs["localisation_table"] == 1


@pytest.mark.dag
def test_the_report_job_reads_every_nas_figure_and_the_alpha_record(workflow_copy):
    _, jobs, out = workflow_copy
    assert jobs["report_alpha"] == 1 and jobs["nas_draw"] == 2  # the NAS rules are part of the study
    (inputs,) = job_inputs(out, "report")
    for png, has_record in NAS_FIGURES.items():
        assert png in inputs, png
        assert (png.removesuffix(".png") + ".json" in inputs) == has_record, png
    figures = [p for p in inputs if p.endswith(".png")]
    # the report rules' own figures (t-SNE, one per CAM job, ROC, training curves), then the NAS ones
    assert len(figures) == len(set(figures)) == 3 + jobs["report_cam"] + len(NAS_FIGURES)
    assert figures[-len(NAS_FIGURES):] == list(NAS_FIGURES)


@pytest.mark.e2e
def test_the_tiny_study_wrote_the_report_figures_logs_and_benchmarks(tiny_study):
    report = tiny_study / "results/report"
    page = (report / "index.html").read_text()
    assert page.index('id="results-table"') < page.index("<figure")
    for name in ("tsne", "cam_resnet_fbp", "gradcam_cnn2", "gradcam_resnet_fbp", "roc", "training"):
        check_png(report / "figures" / f"{name}.png")
        record = read_record(report / "figures" / f"{name}.json")
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tiny_study, capture_output=True, text=True).stdout.strip()
        assert record.git_commit == head and record.caption  # the study checkout's own commit
        assert f"made by rule {record.rule} at commit {head[:12]}" in page and record.params_sha256[:12] in page
    for bench in ("tsne", "cam_resnet_fbp", "gradcam_cnn2", "roc", "training", "report"):
        assert (tiny_study / f"benchmarks/report/{bench}.tsv").exists()
        assert "finished" in (tiny_study / f"logs/report/{bench}.log").read_text()
    # localisation: every (network, method) of the figures scored, beside its baselines, on the page
    loc = pd.read_csv(tiny_study / "results/table/localisation.csv")
    params = yaml.safe_load((tiny_study / "params.yaml").read_text())["report"]["cam"]
    pairs = {("cam", m) for m in params["cam_models"]} | {("gradcam", m) for m in params["gradcam_layers"]}
    assert set(zip(loc["method"], loc["model"])) == pairs
    for _, group in loc.groupby(["method", "model"]):
        assert list(group["baseline"]) == ["trained", "untrained", "centre", "chance"]
    split = pd.read_parquet(tiny_study / "results/split/split.parquet")
    n_bad = int(((split["label"] == 1) & split["split"].isin(["val", "test"])).sum())
    assert (loc["n_images"] == n_bad).all() and (loc[["map_h", "map_w"]] >= params["min_cells"]).all().all()
    assert (loc["pointing_lo"] <= loc["pointing"]).all() and (loc["pointing"] <= loc["pointing_hi"]).all()
    assert 'id="localisation-table"' in page and page.count("points at the defect in") == len(pairs)
    assert page.index('id="results-table"') < page.index('id="localisation-table"') < page.index("<figure")
    for name in ("cam_resnet_fbp", "gradcam_cnn2", "gradcam_resnet_fbp", "table"):
        assert "finished" in (tiny_study / f"logs/localisation/{name}.log").read_text()
        assert (tiny_study / f"benchmarks/localisation/{name}.tsv").exists()
    tsne = pd.read_csv(report / "tsne.csv")
    tiny = yaml.safe_load((tiny_study / ".test/params.yaml").read_text())
    n_val = tiny["split"]["val_good"] + tiny["split"]["val_bad"]
    assert tsne.groupby("features").size().to_dict() == {"finetuned": n_val, "pretrained": n_val}


def test_figures_in_per_seed_folders_get_the_method_as_anchor():
    from pipeline_lib.report.html import _anchors

    paths = [f"results/nas/{m}/seed0/cell_normal.png" for m in ("darts", "enas")] + ["results/report/figures/roc.png"]
    assert _anchors(paths) == ["fig-darts-cell-normal", "fig-enas-cell-normal", "fig-roc"]
