"""The resumable loop, the training loop, its config, schedules, evaluation, weights file. Imports classical and below."""
