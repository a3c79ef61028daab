# make run   - set up (first time) and run the quickstart study
# make test  - set up (first time) and run the test suite (without the long end-to-end runs)
# make test-slow - the long end-to-end runs (every registry network's study, kill -9 of many,
#                  SubXPAT on a 4x4 multiplier)
# make bench - print the benchmark tables
# make docs  - build the documentation site (mkdocs-material, docs/ -> site/)
# make subxpat-env - SubXPAT's own virtualenv (for its real-run test and `dse generate subxpat`)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := yosys opensta dataset-fashion-mnist postgresql chromium qemu-user

# SubXPAT (../shared/subxpat, read-only) runs with its own pinned environment, kept in the dse
# cache (outside the repository, where circuits/subxpat.py looks for it) and rebuilt only when
# its requirements change; with SUBXPAT_VENV elsewhere, set SUBXPAT_PYTHON to its bin/python.
SUBXPAT_HOME ?= $(abspath ../shared/subxpat)
DSE_CACHE := $(or $(DSE_CACHE_DIR),$(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME)/dse,$(HOME)/.cache/dse))
SUBXPAT_VENV ?= $(DSE_CACHE)/subxpat-venv
SUBXPAT_DEBIAN_PACKAGES := graphviz libgraphviz-dev
# the tests run SubXPAT where its checkout is there (CI: ../shared next to the clone)
SUBXPAT_SETUP := $(if $(wildcard $(SUBXPAT_HOME)/main.py),subxpat-env)
export SUBXPAT_HOME

.PHONY: setup system-packages subxpat-env run test test-slow bench docs clean

setup: system-packages $(VENV)/.installed

# Yosys and OpenSTA (hardware flow), Fashion-MNIST (quickstart data), PostgreSQL (the shared
# trial store's tests), Chromium (the headless check of the analysis page) and qemu-user (the
# tests' emulated AVX2 and SSE4 CPUs, where onnxruntime's int8 kernels differ) from Debian, when
# missing.
system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# SubXPAT's environment as its README builds it: Graphviz headers (pygraphviz compiles against
# them), then its pinned requirements.txt in a venv of its own.
subxpat-env: $(SUBXPAT_VENV)/.installed

$(SUBXPAT_VENV)/.installed: $(SUBXPAT_HOME)/requirements.txt
	@$(MAKE) --no-print-directory system-packages DEBIAN_PACKAGES="$(SUBXPAT_DEBIAN_PACKAGES)"
	$(PYTHON) -m venv $(SUBXPAT_VENV)
	$(SUBXPAT_VENV)/bin/pip install -q --upgrade pip
	$(SUBXPAT_VENV)/bin/pip install -q -r $(SUBXPAT_HOME)/requirements.txt
	touch $@

# torch first (the CPU build), then the project: its torch range then keeps that build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

run: setup
	$(BIN)/python -m dse run studies/quickstart.yaml

test: setup $(SUBXPAT_SETUP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup $(SUBXPAT_SETUP)
	$(BIN)/python -m pytest -q -m slow

# The quick benchmark tables (a few minutes); bench/bench_strategies.py takes about an hour.
bench: setup
	$(BIN)/python bench/bench_inference.py
	$(BIN)/python bench/bench_inference.py --network resnet20 --reference-images 20
	$(BIN)/python bench/bench_exactness.py
	$(BIN)/python bench/bench_characterize.py
	$(BIN)/python bench/bench_executors.py
	$(BIN)/python bench/bench_grid.py
	$(BIN)/python bench/bench_xpat.py
	$(BIN)/python bench/bench_failfast.py
	$(BIN)/python bench/bench_prefix_reuse.py --generations 6 --population 16
	$(BIN)/python bench/bench_retrain.py

# The documentation site: README.md is the short entry, docs/ the pages, mkdocs.yml the nav;
# --strict turns every warning (a broken link, a missing page, a name mkdocstrings cannot
# resolve) into an error, as tests/test_docs.py does.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) runs .pytest_cache site
