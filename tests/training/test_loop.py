"""loop.py pieces that the three loops share: the per-epoch progress line, a run without resume."""

from __future__ import annotations

import logging

import torch

from pipeline_lib.training.loop import Checkpoint, Progress, Run, run_epochs


def test_progress_line_gives_rate_or_seconds_per_item_and_the_eta(caplog):
    meter = Progress(logging.getLogger("test.loop"), epochs=4, unit="step", enabled=False)
    with caplog.at_level(logging.INFO, logger="test.loop"):
        meter.epoch_done(0, 10.0, 40, "a")  # 4 steps/s; 3 epochs left at 10 s
        meter.epoch_done(1, 30.0, 10, "b")  # 3 s/step; mean of 10 and 30 s, 2 left
    assert caplog.messages == ["epoch 1/4 a | 4 step/s, 10.0 s | ETA 0:00:30",
                               "epoch 2/4 b | 3.00 s/step, 30.0 s | ETA 0:00:40"]


class _Counter:
    def __init__(self):
        self.value = torch.zeros(())

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_a_run_without_a_state_folder_runs_every_epoch_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = _Counter()
    run = Run(Checkpoint(None), "fp", state, epochs=3)

    def epoch(i):
        state.value += 1
        return {"epoch": i + 1}

    assert run_epochs(run, epoch) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    assert float(state.value) == 3 and run.resumed_from is None and list(tmp_path.iterdir()) == []
    Checkpoint(None).clear()  # nothing to clear, no error
