"""ResNet backbones, penultimate-feature extraction, the torch-free Parquet store. Imports results and below."""
