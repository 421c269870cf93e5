# chorde developer tasks. Everything runs inside ./.venv, created on first use.
#   make demo   install the package, compile the speedups, run the demo (python -m chorde.demo)
#   make test   install with test extras, memcached, redis-server, lint, build the docs, build
#               the sdist and the wheel (dist/), then pytest: the checkout with the wheel's compiled
#               speedups, the contract suite as pure Python, and the contract suite, adapter
#               and packaging tests against the wheel installed in .venv-wheel
#               (PYTEST_ADDOPTS honoured)
#   make chaos  the chaos suite (tests/chaos and Redis's faults: servers killed, frozen and
#               restarted, a faulty proxy); fails past its time budget (CHORDE_CHAOS_BUDGET,
#               180 s). make test runs it
#   make dist   the sdist and the wheel built from it (compiled), checked with twine
#   make bench  run the benchmarks (BENCH_ARGS="inproc --quick" to pick; installs the
#               bench extra, matplotlib, for --plot)
#   make build-ext  (re)build the optional Cython speedups in place
#   make docs   build the documentation site into build/site (mkdocs --strict: a broken
#               link or reference fails; installs the docs extra's packages)
#   make lint   ruff check + ruff format --check + make typecheck
#   make typecheck  mypy strict over the packages and tests/typing (config: pyproject.toml)
#   make clean  remove the venv and build/test debris

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
BENCH_ARGS ?=
LINT_PATHS := $(filter-out %.egg-info,$(wildcard chorde* tests benchmarks example_projects setup.py noxfile.py))
# Stamps live inside the venv, so deleting the venv also forgets what was installed in it.
STAMP_BASE := $(VENV)/.stamp-install
STAMP_TEST := $(VENV)/.stamp-install-test
INSTALL_INPUTS := pyproject.toml $(wildcard setup.py setup.cfg)
# Root needs no sudo; otherwise use it when there is one.
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo)

export PYTEST_ADDOPTS

.PHONY: demo test chaos bench lint typecheck clean venv install install-test memcached redis build-ext docs dist test-installed

demo: build-ext
	$(VPY) -m chorde.demo

# The contract suite (and the in-process client's own tests) run in both builds.
PURE_TESTS := tests/contract tests/clients/test_inproc.py tests/clients/test_inproc_namespaces.py tests/test_speedups.py
# What runs against the installed wheel (and not again against the checkout).
INSTALLED_TESTS := tests/contract tests/django tests/starlette tests/fastapi tests/http \
	$(wildcard tests/test_flask*.py tests/test_tornado*.py tests/test_adapters_by_url.py)
# The chaos suite: memcached, the broker, the Redis bus and the files client in tests/chaos
# (its time budget counts those), Redis's faults beside the Redis client's other tests (their
# fixtures; about 10 s).
CHAOS_TESTS := tests/chaos tests/redis/test_redis_faults.py
WHEEL_VENV ?= .venv-wheel
WPY := $(WHEEL_VENV)/bin/python
WHEEL_RUN := $(WHEEL_VENV)/run

# One compile: `dist` builds the wheel, whose compiled modules the checkout then uses too.
test: install-test memcached redis lint docs dist
	$(VPY) -m chorde._speedups --from-wheel $$(ls dist/chorde-*.whl)
	$(VPY) -m pytest -q $(addprefix --ignore=,$(INSTALLED_TESTS) $(CHAOS_TESTS))
	@$(MAKE) --no-print-directory chaos
	CHORDE_PURE_PYTHON=1 $(VPY) -m pytest -q $(PURE_TESTS)
	@$(MAKE) --no-print-directory test-installed

# Real faults against real processes, in one pytest session that fails past its time budget.
chaos: install-test memcached redis
	$(VPY) -m pytest -q $(CHAOS_TESTS)

# The sdist, and the wheel built from it as pip would; a module that does not compile fails
# the build (CHORDE_REQUIRE_SPEEDUPS).
dist: install-test
	rm -rf dist
	CHORDE_REQUIRE_SPEEDUPS=1 $(VPY) -m build --outdir dist .
	$(VPY) -m twine check --strict dist/*

# The wheel in dist/ installed (not editable) in its own venv; the tests run from a copy
# outside the checkout, so `chorde` can only come from site-packages (tests/packaging checks).
test-installed: $(WHEEL_VENV)/.stamp-deps
	$(WPY) -m pip install -q --force-reinstall --no-deps $$(ls dist/chorde-*.whl)
	rm -rf $(WHEEL_RUN) && mkdir -p $(WHEEL_RUN)
	cp -r tests example_projects benchmarks pyproject.toml $(WHEEL_RUN)/
	cd $(WHEEL_RUN) && $(CURDIR)/$(WPY) -m chorde._speedups
	cd $(WHEEL_RUN) && CHORDE_EXPECT_INSTALLED=1 $(CURDIR)/$(WPY) -m pytest -q \
		-o cache_dir=$(CURDIR)/.pytest_cache $(INSTALLED_TESTS) tests/packaging

$(WHEEL_VENV)/.stamp-deps: pyproject.toml
	test -x $(WPY) || $(PYTHON) -m venv $(WHEEL_VENV)
	$(WPY) -m pip install -q "$$(ls dist/chorde-*.whl)[test]"
	@touch $@

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
	@$(MAKE) --no-print-directory typecheck

typecheck: install-test
	$(VENV)/bin/mypy

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

# Editable installs skip the compile (CHORDE_PURE_PYTHON): build-ext or make test's wheel
# provides the compiled modules.
$(STAMP_BASE): $(INSTALL_INPUTS) | $(VPY)
	CHORDE_PURE_PYTHON=1 $(VPY) -m pip install -e .
	@touch $@

$(STAMP_TEST): $(INSTALL_INPUTS) | $(VPY)
	CHORDE_PURE_PYTHON=1 $(VPY) -m pip install -e '.[test]'
	@touch $@ $(STAMP_BASE)

memcached:
	@command -v memcached >/dev/null 2>&1 || { \
		echo "installing memcached"; \
		$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y memcached; }

# Redis 7 from Debian: the tests start their own servers, Sentinels and Clusters from it.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }

# The optional compiled speedups (setup.py), built in place when their sources changed.
# Without a compiler they are skipped with a warning; under CI (CI set) that fails.
build-ext: $(STAMP_BASE)
	@$(VPY) -m chorde._speedups >/dev/null 2>&1 || echo "chorde: compiling the optional" \
		"speedups with Cython (first run, or their sources changed: about a minute on two cores)"
	$(VPY) -m pip install -q 'Cython>=3.1' 'setuptools>=77'
	CHORDE_REQUIRE_SPEEDUPS=$${CI:+1} $(VPY) setup.py -q build_ext --inplace
	@$(VPY) -m chorde._speedups || [ -z "$$CI" ]

clean:
	rm -rf $(VENV) $(WHEEL_VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find chorde* -name '*.so' -delete
