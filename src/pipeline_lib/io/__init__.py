"""Files: atomic writes and the one error type a user can fix (layer map: docs/ARCHITECTURE.md)."""
