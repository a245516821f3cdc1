# Quick start (fresh machine, Python >= 3.10 as python3):
#   make train   -> venv + pinned deps + build the extension, then train & evaluate FACT on the synthetic data
#   make test    -> venv + pinned deps + build the extension, then the test suite
#   make test-fast -> the CPU lane: the extension's C++ part only (FACT_FAST_SKIP_CUDA=1), no slow tests
#   make lint    -> ruff (configured in pyproject.toml)
# The CUDA kernels are compiled with the index's nvcc matched to torch.version.cuda (no GPU needed to
# compile); set FACT_FAST_FORCE_CUDA=1 to make a failing CUDA build an error, FACT_FAST_SKIP_CUDA=1 to skip it.
# TORCH_CUDA_ARCH_LIST picks GPU architectures (setup.py's default: 8.0;9.0+PTX, i.e. sm_80 and sm_90
# code plus compute_90 PTX that newer GPUs JIT-compile). The CuTe kernels use the CUTLASS headers of the
# nvidia-cutlass wheel (requirements/cuda-build.txt) or CUTLASS_DIR; FACT_FAST_SKIP_CUTLASS=1 leaves them out.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export MAX_JOBS ?= 2

SOURCES := $(shell find csrc -type f) setup.py pyproject.toml scripts/cutlass_dir.py
PYTEST_ARGS ?=

.PHONY: setup build build-cpu train test test-fast lint bench clean

setup: $(VENV)/.deps

$(VENV)/.deps: requirements/base.txt requirements/dev.txt requirements/cuda-build.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -r requirements/dev.txt -r requirements/cuda-build.txt
	touch $@

build: $(VENV)/.built

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	rm -f $(VENV)/.built-cpu
	@if [ "$${FACT_FAST_SKIP_CUDA:-0}" != "1" ] && CUDA_HOME_PIP=$$($(PY) scripts/cuda_home.py); then \
		export CUDA_HOME=$$CUDA_HOME_PIP PATH=$$CUDA_HOME_PIP/bin:$$PATH; \
	elif [ "$${FACT_FAST_FORCE_CUDA:-0}" = "1" ]; then \
		echo "FACT_FAST_FORCE_CUDA=1 but no matching CUDA compiler"; exit 1; \
	fi; \
	$(PIP) install -q -e . --no-build-isolation --no-deps
	$(PY) -c "import torch, fact_fast._C as C; print('fact_fast._C built, CUDA kernels:', bool(C.WITH_CUDA), '- CuTe kernels:', bool(C.WITH_CUTLASS))"
	touch $@

# the C++ (CPU) kernels only, for the fast lane; a later `make build` rebuilds with CUDA
build-cpu: $(VENV)/.built-cpu

$(VENV)/.built-cpu: $(VENV)/.deps $(SOURCES)
	@if [ ! -f $(VENV)/.built ]; then \
		FACT_FAST_SKIP_CUDA=1 $(PIP) install -q -e . --no-build-isolation --no-deps && \
		$(PY) -c "import fact_fast._C; print('fact_fast._C built (C++ kernels only)')"; \
	fi
	touch $@

train: build
	$(PY) -m fact_fast.train $(ARGS)

test: build
	FACT_FAST_REQUIRE_EXTENSION=1 $(PY) -m pytest -q -rfE --timeout=900 $(PYTEST_ARGS)

test-fast: build-cpu
	FACT_FAST_REQUIRE_EXTENSION=1 $(PY) -m pytest -q -rfE --timeout=900 -m "not slow and not cuda" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check fact_fast kernels benchmarks scripts tests setup.py

bench: build
	$(PY) -m benchmarks.run --out benchmarks/results/$(shell hostname)-$(shell date +%Y%m%d).json

clean:
	rm -rf build *.egg-info fact_fast/_C*.so $(VENV)/.built $(VENV)/.built-cpu
