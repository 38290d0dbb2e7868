# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, then run the whole chain: on the official weights when they are on this
#                 machine (python -m export.fetch u2net, or U2NET_WEIGHTS=FILE), else on an embedded default
#   make test   - create .venv, then run ruff and the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= train,export,openvino,bench,dev,triton,web,video,dask,s3

SERVE_VENV ?= .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed-stamp

# rembg's own HTTP server (`rembg s --no-ui`) for `python -m benchmarks.serve --images`: rembg 2.0.86 with the
# server stack its `cli` extra pins (FastAPI 0.128, uvicorn 0.40, python-multipart 0.0.21), but not gradio,
# which only its web UI needs. Its own venv: those pins would pull the main venv's Starlette back to 0.5x.
REMBG_VENV ?= .venv-rembg
REMBG_STAMP := $(REMBG_VENV)/.installed-stamp
REMBG_SERVER := "rembg[cpu]==2.0.86" "fastapi>=0.128,<0.129" "uvicorn>=0.40,<0.41" \
	"python-multipart>=0.0.21,<0.0.22" "aiohttp>=3.13.2,<4" "asyncer>=0.0.12,<0.0.13" "click>=8.3.1,<9" \
	"filetype>=1.2,<2" "watchdog>=6,<7" "sniffio>=1.3.1,<2"

.PHONY: venv serve-venv rembg-venv demo test lint clean

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

rembg-venv: $(REMBG_STAMP)

$(REMBG_STAMP): Makefile
	$(PYTHON) -m venv $(REMBG_VENV)
	$(REMBG_VENV)/bin/python -m pip install -q $(REMBG_SERVER)
	touch $(REMBG_STAMP)

demo: $(STAMP)
	$(PY) -m benchmarks.demo

lint: $(STAMP)
	$(PY) -m ruff check .

# The server tests need .venv-serve; where it cannot be installed they skip and say why.
test: $(STAMP) lint
	@$(MAKE) --no-print-directory serve-venv || echo "warning: could not build $(SERVE_VENV): the runtime.serve tests will skip"
	U2NET_SERVE_PYTHON=$(abspath $(SERVE_VENV))/bin/python $(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(SERVE_VENV) $(REMBG_VENV) demo_out .pytest_cache
