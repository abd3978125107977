# Two entry points on a fresh machine: `make demo` and `make test`.  Both create .venv if needed and
# install the exact versions of requirements.lock (uv pip sync); `make lock` refreshes the lock.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# uv, pinned, from PyPI, in its own folder (a sync makes .venv exactly the lock, so uv lives outside it)
UV_VERSION ?= 0.13.10
UV_HOME ?= .uv
UV := $(UV_HOME)/bin/uv
# uv reads no pip configuration: the wheel folders pip is configured with (here the local CPU build
# of torch) are passed to it.  Elsewhere torch's CPU build comes from PyTorch's index (README).
UV_SOURCES ?= $(foreach d,$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null),--find-links $(d))
# the platform the lock is resolved for (CI's and this project's machines)
LOCK_TARGET ?= --python-version 3.11 --python-platform x86_64-manylinux_2_28
# llama-cpp-python (tests: llama.cpp's own server) is a source build; a native build (GGML_NATIVE) uses
# every instruction the CPU lists, and some VMs list AMX without enabling it (SIGILL at the first
# completion).  Portable flags instead; uv keys its cached wheel by them, so a native build never returns.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF;-DGGML_AVX2=ON;-DGGML_FMA=ON;-DGGML_F16C=ON
UV_BUILD ?= --config-settings-package 'llama-cpp-python:cmake.args=$(LLAMA_CMAKE_ARGS)'
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAY_ENABLE_UV_RUN_RUNTIME_ENV ?= 0

.PHONY: demo test test-fast install lock clean sample

install: $(STAMP)

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# the lock's versions exactly; then pyproject.toml again under the lock's pins, so a dependency
# added there before `make lock` still installs (the lock wins wherever it has a version)
$(STAMP): requirements.lock pyproject.toml | $(UV)
	test -x $(PY) || $(UV) venv -q --python 3.11 $(VENV)
	$(UV) pip sync -q --python $(PY) $(UV_SOURCES) $(UV_BUILD) requirements.lock
	grep -v '^-e ' requirements.lock > $(VENV)/pins.txt
	$(UV) pip install -q --python $(PY) $(UV_SOURCES) $(UV_BUILD) -e '.[test]' -c $(VENV)/pins.txt
	touch $(STAMP)

lock: | $(UV)
	$(UV) pip compile -q --custom-compile-command "make lock" $(UV_SOURCES) $(LOCK_TARGET) $(UV_LOCK_ARGS) requirements.in -o requirements.lock

demo: $(STAMP)
	$(VENV)/bin/selectllm run examples/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

# the pure tests: nothing that starts Spark, Ray or another process (a developer's inner loop;
# tests/conftest.py fails a test that does without its mark).  551 tests (543 when timed): `time make test-fast`
# 58 s on 2 cores with nothing else running, 2 min 31 s at load ~6; the embedding caches warm (a first run also builds them: the
# static model, the ONNX export, about 2.5 min more).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not spark and not ray and not subprocess and not slow" --durations=10

sample: $(STAMP)
	$(PY) examples/make_sample.py

clean:
	rm -rf runs/demo .pytest_cache
