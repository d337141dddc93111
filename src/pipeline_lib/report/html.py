"""The report page: one static, self-contained HTML file (see the package docstring for why).

Order: the run (commit, params hash), the results table, then every figure with a numbered
caption saying what it shows and which run made it. Images are embedded as base64 PNGs;
the page has no scripts and loads nothing from elsewhere. A missing or unreadable figure
(or its record) raises PipelineError naming the file; nothing is written then.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from ..io.atomic import write_text
from .figures import check_png
from .localisation import display_rows
from .provenance import FigureRecord, read_record, sidecar_path

TITLE = "nexperia-repro: study report"
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
.run{color:#555;font-size:.9rem}code{font-size:.85em;background:#f4f4f4;padding:0 .25em}
table{border-collapse:collapse;margin:1rem 0;font-size:.92rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}tbody tr:nth-child(even){background:#fafafa}
figure{margin:1.5rem 0;padding:0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.92rem;margin-top:.4rem}.prov{display:block;color:#666;font-size:.82rem;margin-top:.2rem}
nav ol{columns:2;font-size:.9rem}
"""


@dataclass(frozen=True)
class FigureEntry:
    """One figure of the report: a PNG plus either its record (sidecar) or a fixed caption.

    Figures drawn by the report's own rules have a record (``<png stem>.json``); figures
    drawn by other stages (e.g. NAS cell drawings) give ``title``/``caption``/``made_by`` here.
    """

    path: str
    title: str | None = None
    caption: str | None = None
    made_by: str | None = None  # the rule that draws it (figures without a record)
    record: bool = True

    def resolve(self) -> tuple[bytes, FigureRecord | None]:
        data = check_png(self.path)
        rec = read_record(sidecar_path(self.path)) if self.record else None
        return data, rec


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _telling_folder(path: str, others: Sequence[str]) -> str:
    """The nearest folder of ``path`` that the ``others`` (same file name) do not have at that
    depth: ``darts`` for ``nas/darts/seed0/cell_normal.png`` beside ``nas/enas/seed0/...``."""
    mine = Path(path).parent.parts[::-1]
    theirs = [Path(o).parent.parts[::-1] for o in others]
    for depth, part in enumerate(mine):
        if all(depth >= len(t) or t[depth] != part for t in theirs):
            return part
    return Path(path).parent.name


def _anchors(paths: Sequence[str]) -> list[str]:
    """``fig-<file stem>`` per figure; a stem that several figures share (DARTS's and ENAS's
    ``cell_normal.png``) gets the folder that tells them apart in front, so every id and link
    is its own."""
    stems = [Path(p).stem for p in paths]
    out = []
    for p, stem in zip(paths, stems):
        others = [q for q, s in zip(paths, stems) if s == stem and q != p]
        out.append(f"fig-{_slug(f'{_telling_folder(p, others)}-{stem}' if others else stem)}")
    return out


def table_html(table: pd.DataFrame, note: str | None, table_id: str = "results-table", text_columns: int = 1) -> str:
    cols = list(table.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    rows = []
    for row in table.itertuples(index=False):
        cells = []
        for i, value in enumerate(row):
            cls = "" if i < text_columns or cols[i] == "Device" else ' class="num"'
            cells.append(f"<td{cls}>{html.escape(str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    out = (
        f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody>\n</table>\n"
    )
    if note:
        out += f'<p class="note">{html.escape(note)}</p>\n'
    return out


def comparisons_html(sentences: Sequence[str]) -> list[str]:
    """The paired comparisons, one sentence each (``results/table/comparisons.csv``)."""
    if not sentences:
        return []
    return [
        '<div id="comparisons"><h3>Paired comparisons</h3>',
        "<p>Each pair on the same images, each model's seeds averaged: the difference A − B in validation "
        "accuracy and in test AUC, in points, with a 95 % two-level paired bootstrap interval (images stratified "
        "by class, the same resampled images for both models, then each model's seeds drawn with replacement, so "
        "the seed spread counts too); significant when the interval leaves out zero. "
        "McNemar: the exact test on the validation images the two seed ensembles call differently "
        "(<code>results/table/comparisons.csv</code>).</p>",
        "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sentences) + "</ul>",
        "</div>",
    ]


def localisation_html(loc: Mapping | None) -> list[str]:
    """The localisation section: the table, one sentence per network and method, or why not."""
    if loc is None:
        return []
    parts = ['<section id="localisation"><h2>Do the networks look at the defect?</h2>']
    rows = loc.get("rows") or []
    if rows:
        parts.append(
            "<p>CAM and Grad-CAM of each network on the bad validation and test images, scored against the "
            "defect boxes the generator records (<code>defects.csv</code>): <b>pointing game</b> = the map's maximum "
            f"within {loc.get('tolerance_px')} px of a defect box; <b>energy in box</b> = the share of the map's "
            "positive mass inside the boxes. Each beside an untrained network of the same architecture (seeded), "
            "a map pointing at the image centre (the defects sit mostly on the die, in the middle: a strong "
            "pointing baseline) and a uniform-random map (chance: the boxes' share of the image); in parentheses "
            "the 95 % bootstrap "
            "interval over images (<code>results/table/localisation.csv</code>). Where a map would have fewer than "
            "8×8 cells, the last ResNet stages are evaluated densely (their stride replaced by dilation: the same "
            "weights on a finer grid; the coarse map's cells are kept exactly). Called bad: the share of these bad "
            "images, and of the good validation images, that the network as trained calls bad.</p>"
        )
        parts.append(table_html(display_rows(rows), None, table_id="localisation-table", text_columns=3))
        parts.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in loc.get("sentences", [])) + "</ul>")
    if loc.get("note"):
        parts.append(f'<p class="note">Localisation not scored: {html.escape(loc["note"])}.</p>')
    parts.append("</section>")
    return parts


def render_report(
    table: pd.DataFrame,
    figures: Sequence[FigureEntry],
    *,
    note: str | None,
    git_commit: str,
    params_sha256: str,
    title: str = TITLE,
    localisation: Mapping | None = None,
    comparisons: Sequence[str] = (),
) -> str:
    """The page as a string; reads (and checks) every figure first. ``localisation``: the
    localisation table's JSON (rows, sentences, note), shown after the results table;
    ``comparisons``: the paired comparisons in words, under the results table."""
    resolved = [(entry, *entry.resolve()) for entry in figures]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="run">Run: commit <code>{html.escape(git_commit)}</code>, report params sha256 '
        f"<code>{html.escape(params_sha256[:12])}</code>. Figures are embedded; each caption names the rule, "
        "commit and params hash that made it.</p>",
        '<section id="results"><h2>Results</h2>',
        "<p>Validation accuracy (on the held-out validation split) and test AUC (bad = positive) in percent: "
        "the mean ± sd over the study's training seeds and a 95 % interval (the note says which), with each "
        "model's parameter count, mean wall time and device.</p>",
        table_html(table, note),
        *comparisons_html(comparisons),
        "</section>",
        *localisation_html(localisation),
    ]
    if resolved:
        toc = []
        body = []
        anchors = _anchors([entry.path for entry, _, _ in resolved])
        for number, ((entry, data, rec), anchor) in enumerate(zip(resolved, anchors), start=1):
            title_text = (rec.title if rec else entry.title) or Path(entry.path).stem
            caption = (rec.caption if rec else entry.caption) or ""
            if rec is not None:
                prov = rec.provenance()
            else:
                prov = f"made by rule {entry.made_by or 'unknown'} (drawn outside the report rules), report run at commit {git_commit}"
            toc.append(f'<li><a href="#{anchor}">{html.escape(title_text)}</a></li>')
            b64 = base64.b64encode(data).decode("ascii")
            body.append(
                f'<figure id="{anchor}">'
                f'<img src="data:image/png;base64,{b64}" alt="{html.escape(title_text)}">'
                f"<figcaption><b>Figure {number}. {html.escape(title_text)}.</b> {html.escape(caption)}"
                f'<span class="prov">{html.escape(prov)} · file <code>{html.escape(entry.path)}</code></span>'
                "</figcaption></figure>"
            )
        parts += ['<section id="figures"><h2>Figures</h2>', "<nav><ol>", *toc, "</ol></nav>", *body, "</section>"]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_report(path: str | os.PathLike, page: str) -> None:
    write_text(path, page)
