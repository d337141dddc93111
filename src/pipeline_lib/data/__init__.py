"""Images: the procedural chips, ingest (scan, check, duplicates), the split, datasets (layer map: docs/ARCHITECTURE.md)."""
