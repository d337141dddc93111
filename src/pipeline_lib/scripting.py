"""What every workflow script shares: logging to its ``log:`` file, one-line errors, threads.

A script is ``run_step(snakemake, main)`` where ``main(step)`` does the work; the library
underneath never sees the ``snakemake`` object.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from .errors import PipelineError


class _Tee:
    """Send stderr (tqdm's progress, warnings) to the terminal and to the rule's log file."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False


@dataclass
class Step:
    """What a script's ``main`` gets: the rule's inputs, outputs, params, threads and a logger."""

    input: Any
    output: Any
    params: Any
    wildcards: Any
    threads: int
    resources: Any
    log: logging.Logger
    rule: str

    def param(self, dotted_key: str) -> Any:
        """A value from the rule's ``params: cfg=...`` mapping, e.g. ``step.param("features")``."""
        cfg = self.params.cfg
        if dotted_key not in cfg:
            raise KeyError(f"rule {self.rule} was not given params key {dotted_key!r}")
        return cfg[dotted_key]

    def device(self):
        """CUDA when the rule was granted a ``gpu`` resource and one is visible, else the CPU."""
        from .devices import select_device

        return select_device(getattr(self.resources, "gpu", 0))

    def model_outputs(self) -> dict[str, Any]:
        """A training rule's named outputs as ``deep.train_and_evaluate``'s path arguments."""
        out = self.output
        return dict(weights_path=out.model, metrics_path=out.metrics, predictions_path=out.predictions, roc_path=out.roc,
                    history_csv=out.history, state_dir=self.params.state_dir)

    def publish_figure(self, fig: Any, *, title: str, caption: str, details: Mapping[str, Any] | None = None) -> None:
        """Save ``fig`` to ``output.png`` (at ``report.dpi``) and its provenance record
        (title, caption, rule, params, inputs, git commit) to ``output.record``."""
        from .report.figures import save_png
        from .report.provenance import make_record, write_record

        save_png(fig, self.output.png, dpi=self.param("report.dpi"))
        record = make_record(
            title=title, caption=caption, rule=self.rule, params=self.params.cfg, inputs=list(self.input), details=details
        )
        write_record(self.output.record, record)


def resource_usage() -> str:
    """CPU seconds and peak RSS of this job's process (and of its finished children), exact:
    Snakemake's benchmark samples every 30 s after the first 30, so it can miss a short peak."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    # ru_maxrss is in KiB on Linux
    return f"cpu {cpu:.1f} s, peak RSS {own.ru_maxrss / 1024:.0f} MB, children's peak {kids.ru_maxrss / 1024:.0f} MB"


def _logger(log_path: str) -> tuple[logging.Logger, TextIO]:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "w", encoding="utf-8", buffering=1)
    sys.stderr = _Tee(sys.__stderr__, log_file)  # type: ignore[assignment]
    logger = logging.getLogger("pipeline")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, log_file


def run_step(snakemake: Any, main: Callable[[Step], None]) -> None:
    """Run ``main`` for a Snakemake job; user errors become ``ERROR: ...`` and exit code 1."""
    log, log_file = _logger(str(snakemake.log[0]))
    threads = int(snakemake.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    step = Step(
        input=snakemake.input,
        output=snakemake.output,
        params=snakemake.params,
        wildcards=snakemake.wildcards,
        threads=threads,
        resources=snakemake.resources,
        log=log,
        rule=snakemake.rule,
    )
    started = time.perf_counter()
    log.info("rule %s started (threads=%d)", snakemake.rule, threads)
    try:
        main(step)
        log.info("rule %s finished in %.1f s (%s)", snakemake.rule, time.perf_counter() - started, resource_usage())
        try:  # provenance (results/.lineage/, not a declared output): never fails the job
            from .lineage import write_job_record

            log.info("lineage record %s", write_job_record(snakemake))
        except Exception as exc:  # noqa: BLE001
            log.warning("no lineage record written: %s", exc)
    except PipelineError as exc:
        log.error("ERROR: %s", exc)
        sys.exit(1)
    finally:
        sys.stderr = sys.__stderr__
        log_file.close()
