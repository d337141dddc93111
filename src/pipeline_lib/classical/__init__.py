"""The classical classifiers on features (no torch). Imports features and below."""
