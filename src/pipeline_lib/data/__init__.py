"""Images: the procedural chips, ingest (scan, check, duplicates), the split, datasets. Imports runtime and below."""
