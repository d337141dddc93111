"""The networks the registry names (deep baselines, NAS retrain network) and a deep baseline's end-to-end run (layer map: docs/ARCHITECTURE.md)."""
