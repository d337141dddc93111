"""ResNet backbones, penultimate-feature extraction, the torch-free Parquet store (layer map: docs/ARCHITECTURE.md)."""
