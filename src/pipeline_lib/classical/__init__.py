"""The classical classifiers on features, never torch (layer map: docs/ARCHITECTURE.md)."""
