#!/usr/bin/env bash
# The GPU checks of a borrowed machine, as one short prepared run (see docs/bench-floor.md).
#
#   completion/evaluation/gpu_check.sh pack    here: the pinned transformers, stripped, into .gpu/
#   completion/evaluation/gpu_check.sh run     there (the device tool, .gpu carried): results into $OUT
#
# What it runs, each step time-boxed so one failure cannot eat the lease:
#   1. the lean forward against transformers on cuda for the Qwen2.5-Coder-0.5B shape (random weights:
#      the real model's 491 MB do not fit the tool's 64 MiB carry; no registry is reachable there),
#      bf16 decode ms/token and 1k-token prefill, lean vs HF (eyas bench forward);
#   2. eyas bench floor --shape qwen2.5-coder-0.5b --compile (the default model's shape vs its floor);
#   3. eyas bench floor --shape 30b-a3b --compile (Qwen3-Coder-30B-A3B's shape, ~61 GB in bf16).
set -uo pipefail
cd "$(dirname "$0")/../.."
G=.gpu

pack() {
    rm -rf "$G" && mkdir -p "$G"
    # The image there has another transformers, whose cache API differs (pyproject pins ours); only
    # the architectures the lean forward runs are kept, so the carried tree stays small.
    local site
    site=$(.venv/bin/python -c "import transformers, pathlib; print(pathlib.Path(transformers.__file__).parent.parent)")
    tar -C "$site" -cJf "$G/transformers.tar.xz" --exclude=__pycache__ \
        $(cd "$site" && ls -d transformers/* | grep -v '^transformers/models$') \
        transformers/models/{__init__.py,auto,encoder_decoder,qwen2,qwen3,qwen3_moe,llama}
    local check
    check=$(mktemp -d)   # the stripped copy must load what the run uses
    tar -xJf "$G/transformers.tar.xz" -C "$check"
    PYTHONPATH="$check" .venv/bin/python -c "from transformers import (AutoModelForCausalLM, DynamicCache,
Qwen2Config, Qwen2ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)"
    rm -rf "$check"
    # the default model's tokenizer (bench forward cuts its prompt with it); its weights stay here
    mkdir -p "$G/tokenizer"
    local model
    model=$(.venv/bin/python -c "from completion.models import resolve_model; print(resolve_model(None))")
    cp "$model"/tokenizer.json "$model"/tokenizer_config.json "$G/tokenizer/"
    du -sh "$G"
}

run() {
    : "${OUT:?run it through the device tool (OUT is where results go)}"
    local w=/tmp/gpu e="python3 -m completion.cli"
    exec > >(tee -a "$OUT/gpu.log") 2>&1
    mkdir -p "$w/site"
    tar -xJf "$G/transformers.tar.xz" -C "$w/site"
    export PYTHONPATH="$w/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    nvidia-smi -L || true
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

    echo "== 1. lean vs HF, Qwen2.5-Coder-0.5B shape, cuda bf16"
    python3 - "$w/q05-shape" <<'EOF'
import sys, torch
from completion.evaluation.floor_bench import build_target
model = build_target("qwen2.5-coder-0.5b", "cpu", torch.bfloat16)
for layer in model.model.layers:   # random, not zero, biases: the comparison must see them
    for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
        torch.nn.init.normal_(proj.bias, std=0.5)
model.save_pretrained(sys.argv[1])
EOF
    cp "$G"/tokenizer/* "$w/q05-shape/"
    timeout 80 $e bench forward --model "$w/q05-shape" --device cuda --precisions bf16 --threads 8 \
        --out "$OUT/forward-cuda" || echo "step 1 failed or timed out"

    [ -n "${ONLY_FORWARD:-}" ] && return
    echo "== 2. floor, Qwen2.5-Coder-0.5B shape"
    timeout 60 $e bench floor --shape qwen2.5-coder-0.5b --out "$OUT/floor-qwen2.5-coder-0.5b.json" \
        || echo "step 2 failed or timed out"

    echo "== 3. floor, Qwen3-Coder-30B-A3B shape"
    timeout 150 $e bench floor --shape 30b-a3b --out "$OUT/floor-30b-a3b.json" \
        || echo "step 3 failed or timed out"
}

"$@"
