"""Target forward speed: prefill ms and greedy decode ms/token for the Hugging Face forward, the
lean forward eager and compiled, on the same weights, loaded and run on the torch engine's model
thread as the engine does, and one forward of 1 / 5 / 8 new rows (a verification's shape).
"lean-other-thread" times the lean forward on a second thread, the
arrangement the engine avoids (two OpenMP teams, see torch_engine.MODEL_THREAD). A function for
benchmark commands to call; `python -m completion.evaluation.forward_speed [MODEL_DIR [THREADS
[VARIANT,...]]]` prints it."""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

VARIANTS = ("hf", "lean", "lean-compiled", "lean-other-thread")
VERIFY_ROWS = (1, 5, 8)   # one decode step, and verifications of K = 4 and K = 7 drafts


def time_runner(runner, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    logits, _ = runner.forward(prompt, logits_to_keep=1)
    prefill_ms = (time.perf_counter() - t0) * 1e3
    token = int(logits[-1].argmax())
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        logits, _ = runner.forward([token])
        token = int(logits[-1].argmax())
    return prefill_ms, (time.perf_counter() - t0) * 1e3 / new_tokens


def time_verify(runner, prompt: list[int], rows: int, reps: int = 30) -> float:
    """ms for one forward of `rows` new tokens after `prompt` (a speculative verification's
    shape), cropped back after each, best of `reps`."""
    runner.forward(prompt, logits_to_keep=1)
    base, best = len(runner.ids), float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        runner.forward(prompt[:rows])
        best = min(best, (time.perf_counter() - t0) * 1e3)
        runner.crop(base)
    return best


def measure_forward_speed(model_dir: str, **kwargs) -> list[dict]:
    """One row per variant: best-of-`repeats` prefill ms and decode ms/token (greedy, fresh cache
    each repeat), plus compile seconds for the compiled variant. Uses torch's current threads."""
    from completion.engine.torch_engine import on_model_thread
    return on_model_thread(_measure, model_dir, **kwargs)


def _measure(model_dir: str, *, prompt_tokens: int = 512, new_tokens: int = 64, repeats: int = 3,
             dtype: torch.dtype = torch.float32, variants=VARIANTS) -> list[dict]:
    from transformers import AutoModelForCausalLM

    from completion.engine.lean import LeanTargetRunner, lean_model_for
    from completion.engine.lean.compiled import CompiledSteps
    from completion.engine.target import TargetRunner

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, hf.config.vocab_size, (prompt_tokens,), generator=gen).tolist()
    rows = []
    for variant in variants:
        compiled, compile_s = None, None
        if variant == "lean-compiled":
            compiled = CompiledSteps(lean_model_for(hf))
            if not compiled.warm_up():
                rows.append({"variant": variant, "error": "compile failed"})
                continue
            compile_s = compiled.compile_s

        def make():
            if variant == "hf":
                return TargetRunner(hf)
            return LeanTargetRunner(lean_model_for(hf), compiled)
        def timed(prompt, n):
            if variant != "lean-other-thread":
                return time_runner(make(), prompt, n)
            with ThreadPoolExecutor(1) as other:
                return other.submit(time_runner, make(), prompt, n).result()
        timed(prompt[:32], 4)   # first-call allocations out of the way
        best = [min(t) for t in zip(*(timed(prompt, new_tokens) for _ in range(repeats)))]
        verify = {n: round(time_verify(make(), prompt, n), 3) for n in VERIFY_ROWS} \
            if variant != "lean-other-thread" else None
        rows.append({"variant": variant, "prefill_ms": round(best[0], 2), "decode_ms_per_token": round(best[1], 3),
                     "verify_ms_by_rows": verify,
                     "compile_s": compile_s and round(compile_s, 1), "threads": torch.get_num_threads(),
                     "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "dtype": str(dtype)})
    return rows


if __name__ == "__main__":
    from completion.models import resolve_model

    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    variants = sys.argv[3].split(",") if len(sys.argv) > 3 else VARIANTS
    for row in measure_forward_speed(resolve_model(sys.argv[1] if len(sys.argv) > 1 else None), variants=variants):
        print(json.dumps(row))
