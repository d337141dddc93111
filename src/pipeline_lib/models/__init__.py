"""The deep baselines' networks (and the NAS retrain network by name) and their end-to-end run. Imports nas and below."""
