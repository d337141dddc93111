"""nexperia-repro: the library behind the study's Snakemake rules.

Logic lives here (importable, unit-tested); ``workflow/scripts/`` only adapts the
``snakemake`` object to these functions.
"""

__version__ = "0.1.0"
