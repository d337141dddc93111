# Two entry points for a fresh machine: `make study` and `make test`.
# Both create the virtual environment (.venv) when it is missing or older than pyproject.toml.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all
# Extra Snakemake flags, e.g. SMK_ARGS="--configfile config/full.yaml"
SMK_ARGS ?=

.PHONY: study test env dvc-repro clean-results

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

study: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) $(SMK_ARGS)

test: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

dvc-repro: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
