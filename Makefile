# Two entry points on a fresh machine: `make demo` and `make test`.  Both create .venv if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first, pinned: here it resolves to the local CPU build; on a GPU host the same pin pulls
# the CUDA build from PyPI.  Override e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAY_ENABLE_UV_RUN_RUNTIME_ENV ?= 0

.PHONY: demo test test-fast install clean sample bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip wheel
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/selectllm run examples/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

# the pure tests: nothing that starts Spark, Ray or another process (a developer's inner loop)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not spark and not ray and not subprocess and not slow"

sample: $(STAMP)
	$(PY) examples/make_sample.py

clean:
	rm -rf runs/demo .pytest_cache
