# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, then run the whole chain on an embedded default
#   make test   - create .venv, then run ruff and the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= train,export,openvino,bench,dev

.PHONY: venv demo test lint clean

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

demo: $(STAMP)
	$(PY) -m benchmarks.demo

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_out .pytest_cache
