# Two entry points: `make demo` and `make test`. Both set everything up first.
# Set-up is idempotent: a stamp file records that the venv is complete, and
# pip's wheel cache makes the mmcv build (about 10 min) a one-time cost.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mmretinaface-setup
DEMO_OUT ?= outputs/demo
# Two xdist workers with one torch thread each use the 2 cores better than one
# process with two threads (the tests are many small forward passes).
PYTEST_ARGS ?= -n 2 --dist loadscope

.PHONY: setup demo test test-all lint benchmark clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0 "setuptools>=77,<81" wheel ninja "numpy<3"
	$(PY) -c "import mmcv.ops" 2>/dev/null || \
		CUDA_VISIBLE_DEVICES= FORCE_CUDA=0 MMCV_WITH_OPS=1 MAX_JOBS=$$(nproc) $(PIP) install --no-build-isolation "mmcv==2.1.0"
	$(PIP) install -q --no-build-isolation -e ".[dev,deploy,plots,demo]"
	$(PY) -c "import mmretinaface.register, mmcv.ops, mmdet; print('mmretinaface ready, mmdet', mmdet.__version__)"
	touch $(STAMP)

# The default weights are converted once into ~/.cache/mmretinaface ($MMRETINAFACE_HOME).
demo: $(STAMP)
	$(PY) demo/image_demo.py bundled:grace_hopper bundled:astronaut --out-dir $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test test-all: export OMP_NUM_THREADS ?= 1

# Fast suite (the slow end-to-end tests are marked and run by test-all / CI).
test: $(STAMP) lint
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

benchmark: $(STAMP)
	$(PY) tools/analysis_tools/benchmark.py --threads 1 --out docs/benchmarks.md

clean-venv:
	rm -rf $(VENV)
