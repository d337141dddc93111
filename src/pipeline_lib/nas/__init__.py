"""Neural architecture search: DARTS and ENAS share the genotype format and the retrain network."""
