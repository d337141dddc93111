"""Lineage records, code and data fingerprints, dvc.yaml from the DAG. Imports report and below."""
