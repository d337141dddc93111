"""Where and how a network runs: device, threads, precision, seeds. Imports io, study."""
