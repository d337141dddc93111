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

test: env browser
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# Headless Chromium for tests/test_report_browser.py (Debian's package): installed with apt-get
# when missing and running as root (CI); otherwise that test is skipped (fails when CI is set).
# The vega scripts that `dvc plots show` pages load from a CDN, fetched once from the npm
# registry into .cache/vega/, so the browser test can render those pages without a network.
VEGA_DIR := .cache/vega
.PHONY: browser
browser: env
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; \
	  else echo "note: chromium not installed and not root: the browser test will be skipped"; fi; }
	@mkdir -p $(VEGA_DIR) && for pkg in $$($(BIN)/python -c "import re, dvc_render.vega as v; \
	    print(' '.join(re.findall(r'npm/([a-z-]+@[0-9.]+)', v.VegaRenderer.SCRIPTS)))"); do \
	  name=$${pkg%@*}; test -s $(VEGA_DIR)/$$pkg.js || { \
	    command -v npm >/dev/null 2>&1 || { echo "note: npm missing: dvc plots pages are not rendered in the browser test"; break; }; \
	    tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent $$pkg >/dev/null) && \
	    tar -xzOf $$tmp/$$name-*.tgz package/build/$$name.min.js > $(VEGA_DIR)/$$pkg.js.tmp && \
	    mv $(VEGA_DIR)/$$pkg.js.tmp $(VEGA_DIR)/$$pkg.js; rm -rf $$tmp; }; done

dvc-repro: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
