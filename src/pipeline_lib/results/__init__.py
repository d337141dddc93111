"""Per-model metrics files and the study's results table (layer map: docs/ARCHITECTURE.md)."""
