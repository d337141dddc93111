"""The resumable loop framework, the training loop, its config, schedules, evaluation, weights file (layer map: docs/ARCHITECTURE.md)."""
