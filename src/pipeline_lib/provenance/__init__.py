"""Lineage records, code and data fingerprints, dvc.yaml from the DAG (layer map: docs/ARCHITECTURE.md)."""
