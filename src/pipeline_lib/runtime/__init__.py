"""Where and how a network runs: device, threads, precision, seeds (layer map: docs/ARCHITECTURE.md)."""
