"""What every workflow script shares: logging to its ``log:`` file, one-line errors, threads.

A script is ``run_step(snakemake, main)`` where ``main(step)`` does the work; the library
underneath never sees the ``snakemake`` object.

Before ``main`` runs, the job checks what would otherwise fail only after the work (or
with a traceback): the log file can be written, every output folder accepts a new file,
and each output filesystem has some free space (rules with large outputs add their own
estimate with :meth:`Step.require_space`). Failures are ``ERROR: <one line>``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from .io.atomic import MiB, check_free_space, check_writable, write_error
from .io.errors import PipelineError
from .runtime.allocator import retain_freed_memory

# Every job wants at least this much free space on each output filesystem (logs, small
# tables); rules with large outputs ask for their own estimate on top (Step.require_space).
MIN_FREE_BYTES = 16 * MiB


class _Tee:
    """Send stderr (tqdm's progress, warnings) to the terminal and to the rule's log file.

    A stream that fails (the disk under the log fills up) is dropped with one notice on the
    others, instead of a traceback from the middle of a log line."""

    def __init__(self, *streams: TextIO):
        self.streams = list(streams)

    def _each(self, action: Callable[[TextIO], Any]) -> None:
        for stream in list(self.streams):
            try:
                action(stream)
            except OSError as exc:
                self.streams.remove(stream)
                notice = f"WARNING: {getattr(stream, 'name', 'a log stream')} can no longer be written ({exc.strerror or exc}); going on without it\n"
                for other in self.streams:
                    other.write(notice)

    def write(self, text: str) -> int:
        self._each(lambda stream: (stream.write(text), stream.flush()))
        return len(text)

    def flush(self) -> None:
        self._each(lambda stream: stream.flush())

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

    @property
    def seed(self) -> int:
        """This job's study seed: its ``{seed}`` wildcard (one of ``params.yaml`` ``study.seeds``)."""
        return int(self.wildcards.seed)

    def require_space(self, needs: Mapping[str, float], what: str) -> None:
        """PipelineError now, before the work, if ``needs`` ({output path: bytes}) will not fit."""
        check_free_space(needs, what)

    def device(self):
        """CUDA when the rule was granted a ``gpu`` resource and one is visible, else the CPU."""
        from .runtime.devices import select_device

        return select_device(getattr(self.resources, "gpu", 0))

    def model_outputs(self):
        """A training rule's named outputs and resume state as ``deep.ModelOutputs``."""
        from .models.end_to_end import ModelOutputs

        out = self.output
        return ModelOutputs(model=out.model, metrics=out.metrics, predictions=out.predictions, roc=out.roc,
                            state_dir=self.params.state_dir, history=out.history,
                            val_predictions=getattr(out, "val_predictions", None))


def _open_log(log_path: str) -> TextIO:
    """The rule's log file; a folder that cannot be written is ``ERROR: ...`` and exit 1."""
    try:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        return open(log_path, "w", encoding="utf-8", buffering=1)
    except OSError as exc:
        error = write_error(log_path, exc, subject=f"cannot write the log file {log_path}")
        if error is None:
            raise
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


def _paths(files: Any) -> list[str]:
    """Snakemake's Namedlist of files (or any object with path attributes) as paths."""
    try:
        return [str(p) for p in files]
    except TypeError:
        return [str(p) for p in vars(files).values()]


def _check_outputs(outputs: list[str]) -> None:
    """Every output folder takes a new file and has MIN_FREE_BYTES free (module docstring)."""
    folders = sorted({os.path.dirname(os.path.abspath(str(p))) for p in outputs})
    for folder in folders:
        check_writable(folder)
    check_free_space({f: 0 for f in folders}, "this job's outputs", headroom=MIN_FREE_BYTES)


def resource_usage() -> str:
    """CPU seconds and peak RSS of this job's process (and of its finished children), exact:
    Snakemake's benchmark samples every 30 s after the first 30, so it can miss a short peak."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    # ru_maxrss is in KiB on Linux; system time and minor faults show an allocator that
    # hands pages back and faults them in again (runtime/allocator.py)
    return (f"cpu {cpu:.1f} s (system {own.ru_stime + kids.ru_stime:.1f} s, {own.ru_minflt + kids.ru_minflt} minor faults), "
            f"peak RSS {own.ru_maxrss / 1024:.0f} MB, children's peak {kids.ru_maxrss / 1024:.0f} MB")


def _logger(log_path: str) -> tuple[logging.Logger, TextIO]:
    log_file = _open_log(log_path)
    sys.stderr = _Tee(sys.__stderr__, log_file)  # type: ignore[assignment]
    logger = logging.getLogger("pipeline")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, log_file


def _hash_inputs(snakemake: Any, log: logging.Logger) -> dict[str, dict] | None:
    """The inputs' hashes before the job reads them: the lineage record vouches only for what
    the job saw (another run may rewrite an input while this one works)."""
    try:
        from .provenance.record import hash_inputs

        return hash_inputs(str(p) for p in snakemake.input)
    except Exception as exc:  # noqa: BLE001  (provenance never fails the job)
        log.warning("inputs not hashed at start (%s); the lineage record will hash them at the end", exc)
        return None


def run_step(snakemake: Any, main: Callable[[Step], None]) -> None:
    """Run ``main`` for a Snakemake job; user errors become ``ERROR: ...`` and exit code 1."""
    log, log_file = _logger(str(snakemake.log[0]))
    threads = int(snakemake.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    # every job: a training step's activations reuse freed heap memory instead of faulting
    # fresh pages in each step (runtime/allocator.py)
    retain_freed_memory()
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
    inputs_at_start = _hash_inputs(snakemake, log)
    try:
        _check_outputs(_paths(snakemake.output))
        main(step)
        log.info("rule %s finished in %.1f s (%s)", snakemake.rule, time.perf_counter() - started, resource_usage())
        try:  # provenance (results/.lineage/, not a declared output): never fails the job
            from .provenance.record import write_job_record

            log.info("lineage record %s", write_job_record(snakemake, started_inputs=inputs_at_start))
        except Exception as exc:  # noqa: BLE001
            log.warning("no lineage record written: %s", exc)
    except PipelineError as exc:
        log.error("ERROR: %s", exc)
        sys.exit(1)
    finally:
        sys.stderr = sys.__stderr__
        log_file.close()
