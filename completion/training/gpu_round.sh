#!/usr/bin/env bash
# One training round of the pocket pair on a borrowed GPU (one short, prepared run; see README).
#
#   completion/training/gpu_round.sh pack              here: the corpus, the EAGLE-3 drafter to start
#                                                      from and the pinned transformers into .gpu/
#   completion/training/gpu_round.sh run               there (the device tool, .gpu carried): target
#                                                      extension, drafter data, both drafters; results
#                                                      into $OUT as they are made
#   completion/training/gpu_round.sh unpack DIR [DEST] here: the returned files -> DEST (out/pocket-gpu)
#
# Every phase is time-boxed (`--minutes`: the cosine is fitted to the budget once the step rate is
# known), so the whole run ends inside one device command: TARGET_MIN + DRAFT_MIN + about 2 minutes of
# loading, compiling, synthesis and packing. The target comes back as soon as it is trained, so a
# failure later in the run still returns it.
set -euo pipefail
cd "$(dirname "$0")/../.."
G=.gpu

pack() {
    local data=${DATA:-out/pocket} eagle3=${EAGLE3:-out/pocket/eagle3-drafter-v8}
    rm -rf "$G" && mkdir -p "$G/data"
    cp -r "$data"/{data.json,files.json,heldout.bin,heldout.chunks.npy,train.chunks.npy,tokenizer} "$G/data/"
    xz -9 -T2 -c "$data/train.bin" > "$G/data/train.bin.xz"
    cp -r "$eagle3" "$G/eagle3-init"
    # The image there has another transformers, whose cache API differs (pyproject pins ours); only
    # the Qwen3 models are kept so that the carried tree stays under the tool's 64 MiB.
    local site
    site=$(.venv/bin/python -c "import transformers, pathlib; print(pathlib.Path(transformers.__file__).parent.parent)")
    tar -C "$site" -cJf "$G/transformers.tar.xz" --exclude=__pycache__ \
        $(cd "$site" && ls -d transformers/* | grep -v '^transformers/models$') \
        transformers/models/{__init__.py,auto,encoder_decoder,qwen3,qwen3_moe}
    local check=$(mktemp -d)   # the stripped copy must load what the round uses
    tar -xJf "$G/transformers.tar.xz" -C "$check"
    PYTHONPATH="$check" .venv/bin/python -c "from transformers import (AutoModelForCausalLM, AutoTokenizer,
DynamicCache, Qwen3Config, Qwen3ForCausalLM); AutoTokenizer.from_pretrained('completion/models/pocket/target')"
    rm -rf "$check"
    du -sh "$G"
}

run() {
    : "${OUT:?run it through the device tool (OUT is where results go)}"
    local w=/tmp/round e="python3 -m completion.cli"
    exec > >(tee -a "$OUT/round.log") 2>&1
    mkdir -p "$w/site" "$w/data"
    tar -xJf "$G/transformers.tar.xz" -C "$w/site"
    export PYTHONPATH="$w/site:$PWD" PYTHONUNBUFFERED=1
    cp -r "$G/data/." "$w/data/"
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        "$w/data/train.bin.xz" "$w/data/train.bin"
    nvidia-smi -L || true
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
    local compile=${COMPILE---compile} threads=${THREADS:-8}

    # 1. the target: the shipped one, trained on for TARGET_MIN minutes at a GPU-sized batch
    $e train pocket --data "$w/data" --out "$w/pocket" --init completion/models/pocket/target \
        --export-dir "$w/target" --steps 1000000 --minutes "${TARGET_MIN:-3.5}" --batch "${BATCH:-64}" \
        --lr "${LR:-2e-3}" --warmup 100 --bf16 $compile --threads "$threads" --log-every 50 --eval-every 500
    tar -C "$w" -cf - target | split -b 15M - "$OUT/target.tar."

    # 2. drafter data from the new target; 3. both drafters from the shipped ones, side by side
    $e train synth --target "$w/target" --data "$w/data" --out "$w/synth" --samples "${SAMPLES:-6144}" \
        --batch 64 --seed 4 --threads "$threads"
    local common=(--target "$w/target" --data "$w/synth" --steps 1000000 --minutes "${DRAFT_MIN:-2.5}"
                  --shallow-steps 0 --lr 5e-4 --log-every 200 --threads 4)
    $e train drafter --method peagle --num-layers 3 --init completion/models/pocket/drafter --depth-decay 0.8 \
        "${common[@]}" --work "$w/peagle-work" --out "$w/peagle" --log "$w/peagle.log" &
    local peagle=$!
    $e train drafter --method eagle3 --num-layers 1 --init "$G/eagle3-init" \
        "${common[@]}" --work "$w/eagle3-work" --out "$w/eagle3" --log "$w/eagle3.log" &
    wait $! && wait $peagle
    tar -C "$w" -cf - peagle eagle3 | split -b 15M - "$OUT/drafters.tar."
    echo "round done"
}

unpack() {
    local from=${1:?unpack DIR [DEST]} dest=${2:-out/pocket-gpu}
    mkdir -p "$dest"
    cp "$from/round.log" "$dest/"
    for part in target drafters; do
        if compgen -G "$from/$part.tar.*" > /dev/null; then
            cat "$from/$part.tar."* | tar -x -C "$dest"
        fi
    done
    ls "$dest"
}

case "${1:-}" in
    pack | run | unpack) "$1" "${@:2}" ;;
    *) echo "usage: $0 pack | run | unpack DIR [DEST]" >&2; exit 2 ;;
esac
