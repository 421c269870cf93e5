# chorde developer tasks. Everything runs inside ./.venv, created on first use.
#   make demo   install the package and run the demo (python -m chorde.demo)
#   make test   install with test extras, memcached, build the speedups, lint, then pytest
#               with the compiled speedups and again (contract suite) as pure Python
#               (PYTEST_ADDOPTS honoured)
#   make bench  run the benchmarks (BENCH_ARGS="inproc --quick" to pick; installs the
#               bench extra, matplotlib, for --plot)
#   make build-ext  (re)build the optional Cython speedups in place
#   make docs   build the documentation site into build/site (mkdocs --strict: a broken
#               link or reference fails; installs the docs extra's packages)
#   make lint   ruff check + ruff format --check
#   make clean  remove the venv and build/test debris

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
BENCH_ARGS ?=
LINT_PATHS := $(filter-out %.egg-info,$(wildcard chorde* tests benchmarks example_projects))
# Stamps live inside the venv, so deleting the venv also forgets what was installed in it.
STAMP_BASE := $(VENV)/.stamp-install
STAMP_TEST := $(VENV)/.stamp-install-test
INSTALL_INPUTS := pyproject.toml $(wildcard setup.py setup.cfg)
# Root needs no sudo; otherwise use it when there is one.
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo)

export PYTEST_ADDOPTS

.PHONY: demo test bench lint clean venv install install-test memcached build-ext docs

demo: $(STAMP_BASE)
	$(VPY) -m chorde.demo

# The contract suite (and the in-process client's own tests) run in both builds.
PURE_TESTS := tests/contract tests/clients/test_inproc.py tests/clients/test_inproc_namespaces.py tests/test_speedups.py

test: install-test memcached build-ext lint docs
	$(VPY) -m pytest -q
	CHORDE_PURE_PYTHON=1 $(VPY) -m pytest -q $(PURE_TESTS)

bench: install-test build-ext
	$(VPY) -m pip install -q -e '.[bench]'
	$(VPY) -m benchmarks $(BENCH_ARGS)

# The docs extra's packages only (read from pyproject.toml): MkDocs reads the source, so the
# package itself need not be reinstalled (and its speedups not rebuilt) for the docs.
STAMP_DOCS := $(VENV)/.stamp-install-docs
docs: $(STAMP_DOCS)
	@# Not --quiet: it hides the warnings that --strict counts, and the build then passes.
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

$(STAMP_DOCS): pyproject.toml | $(VPY)
	$(VPY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))' > $(VENV)/docs-requirements.txt
	$(VPY) -m pip install -q -r $(VENV)/docs-requirements.txt
	@touch $@

lint: install-test
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

venv: $(VPY)

install: $(STAMP_BASE)

install-test: $(STAMP_TEST)

$(VPY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "chorde needs Python 3.11+, $(PYTHON) is " + sys.version.split()[0])'
	@# Debian splits venv/ensurepip out of python3 itself.
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		echo "installing python3-venv (ensurepip is missing)"; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv; }
	$(PYTHON) -m venv $(VENV)

$(STAMP_BASE): $(INSTALL_INPUTS) | $(VPY)
	$(VPY) -m pip install -e .
	@touch $@

$(STAMP_TEST): $(INSTALL_INPUTS) | $(VPY)
	$(VPY) -m pip install -e '.[test]'
	@touch $@ $(STAMP_BASE)

memcached:
	@command -v memcached >/dev/null 2>&1 || { \
		echo "installing memcached"; \
		$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y memcached; }

# The optional compiled speedups (setup.py), built in place. Without a compiler they are
# skipped with a warning; under CI (CI set) a missing build fails, so both builds get tested.
build-ext: install-test
	$(VPY) -m pip install -q 'Cython>=3.0'
	$(VPY) setup.py -q build_ext --inplace
	@$(VPY) -c 'import os, sys, chorde, chorde._speedups as s; \
		[print(f"  {m}: {w}") for m, w in s.status().items()]; \
		sys.exit(1 if os.environ.get("CI") and not chorde.speedups_enabled() else 0)'

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find chorde* -name '*.so' -delete
