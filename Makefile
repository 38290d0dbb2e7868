# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, then run the whole chain on an embedded default
#   make test   - create .venv, then run ruff and the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= train,export,openvino,bench,dev,triton

SERVE_VENV ?= .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed-stamp

.PHONY: venv serve-venv demo test lint clean

venv: $(STAMP)

# Without a GPU, install the pinned CPU build of torch first: an unpinned torch would pull
# gigabytes of CUDA packages that this machine cannot use.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing the default (CUDA) torch build"; \
	else \
		echo "No GPU: installing the CPU build torch==2.13.0"; \
		$(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

# runtime.serve runs in its own venv: nvidia-pytriton pins numpy<2 (so OpenCV 4.x), which the main
# venv's torch/onnx stack has moved past. About 40 s and 600 MB from a warm pip cache.
serve-venv: $(SERVE_STAMP)

$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q -e ".[serve]"
	touch $(SERVE_STAMP)

demo: $(STAMP)
	$(PY) -m benchmarks.demo

lint: $(STAMP)
	$(PY) -m ruff check .

# The server tests need .venv-serve; where it cannot be installed they skip and say why.
test: $(STAMP) lint
	@$(MAKE) --no-print-directory serve-venv || echo "warning: could not build $(SERVE_VENV): the runtime.serve tests will skip"
	U2NET_SERVE_PYTHON=$(abspath $(SERVE_VENV))/bin/python $(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(SERVE_VENV) demo_out .pytest_cache
