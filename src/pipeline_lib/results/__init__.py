"""Per-model metrics files and the study's results table. Imports data and below."""
