"""The study's report: results table, t-SNE, CAM / Grad-CAM, ROC and training curves, NAS cells.

Design choice: a static, self-contained HTML page written by the ``report`` rule
(``results/report/index.html``), not Snakemake's ``--report``.

- It is an ordinary rule output: Snakemake rebuilds it when a figure or the table changes,
  DVC tracks it as a stage out (``dvc.yaml`` is generated from the DAG; ``--report`` runs
  outside the DAG, so DVC could not reproduce it), and ``make study`` leaves it in place.
- The images are embedded as base64 PNGs: the one file opens from disk, can be mailed or
  archived, and needs no server, no JavaScript and nothing from the network.
- Every figure states which run made it: each figure rule writes a sidecar JSON next to its
  PNG (``provenance``: rule, git commit, sha256 of the rule's params) and the page prints it
  under the caption.

Modules: ``provenance`` (git commit, params hash, sidecars), ``table`` (the slide's table
plus params count, wall time and device), ``tsne``, ``cam`` (CAM and Grad-CAM),
``explain`` (maps at an input size with enough cells, scored image by image),
``localisation`` (pointing game and energy in box against the generator's defect boxes,
chance, bootstrap intervals, the localisation table and its sentences),
``figures`` (plots: t-SNE, CAM grids, ROC, training curves, DARTS α heatmap) and ``html``.
The library never imports Snakemake; ``workflow/scripts/report_*.py`` are the adapters.
"""
