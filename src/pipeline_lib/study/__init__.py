"""The study's names: the model registry and how a params.yaml section becomes a stage's config (layer map: docs/ARCHITECTURE.md)."""
