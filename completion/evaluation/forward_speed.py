"""`eyas bench forward`: the lean forward against the Hugging Face forward on one model, per precision.

For each precision (float32, bf16, int8, int4) it times, on the torch engine's model thread as the
engine runs them: a prompt's prefill the way the engine does it (completion.engine.target.prefill,
chunks of PREFILL_CHUNK tokens), greedy decode ms/token after it, and one forward of 5 / 8 new
rows (a verification of K = 4 / 7 drafts), for the lean forward and for the Hugging Face one, and
prints the lean/HF ratios side by side. Hugging Face has no int8/int4 path: quantized lean rows
are compared with HF bf16. Each figure is the best of --repeats runs (the CPU is shared), HF and
lean runs interleaved so both see the same load. `agree` counts the lean greedy tokens equal to
HF's at the same precision (bf16 for int8/int4) over the same real-source prompt.

    eyas bench forward [--model qwen2.5-coder-0.5b|DIR] [--precisions bf16,int8,int4] [--prompt-tokens 1024]
                       [--new-tokens 32] [--threads N] [--repeats 3] [--out out/bench/forward]

Writes forward.json and forward.png under --out. `measure_forward_speed` (variants hf, lean,
lean-compiled, lean-other-thread) stays for the older per-variant comparison.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

VARIANTS = ("hf", "lean", "lean-compiled", "lean-other-thread")
VERIFY_ROWS = (1, 5, 8)   # one decode step, and verifications of K = 4 and K = 7 drafts
PRECISIONS = ("float32", "bf16", "int8", "int4")
QUANTIZED = ("int8", "int4")


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
        synchronize()
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


# -- eyas bench forward ---------------------------------------------------------------------------

def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synchronize() -> None:
    """Wait for queued GPU work, so a timer stops when the work is done (a no-op on a CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def engine_run(runner, prompt: list[int], new_tokens: int) -> dict:
    """One fresh-cache run as the engine does it: chunked prefill, then greedy decode steps."""
    from completion.engine.target import prefill

    t0 = time.perf_counter()
    logits, _ = prefill(runner, prompt)
    synchronize()
    prefill_ms = (time.perf_counter() - t0) * 1e3
    tokens = [int(logits.argmax())]
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        logits, _ = runner.forward(tokens[-1:])
        tokens.append(int(logits[-1].argmax()))
    return {"prefill_ms": prefill_ms, "decode_ms": (time.perf_counter() - t0) * 1e3 / new_tokens, "tokens": tokens}


DEVICE = "cpu"   # set by --device


def load(path: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(DEVICE).eval()


def lean_model(path: str, precision: str):
    """A lean model over its own copy of the weights (quantizing changes them)."""
    from completion.engine.lean import LeanModel
    from completion.engine.lean.weights import quantize

    model = LeanModel.from_hf(load(path, torch.float32 if precision == "float32" else torch.bfloat16))
    if precision in QUANTIZED:
        quantize(model.w, precision)
    return model


def measure(path: str, precisions: list[str], prompt: list[int], new_tokens: int, repeats: int) -> list[dict]:
    """Rows {forward, precision, prefill_ms, decode_ms, verify_ms, tokens}: one per HF dtype used
    and one per lean precision, each figure the best over its runs."""
    from completion.engine.lean import LeanTargetRunner
    from completion.engine.target import TargetRunner

    hf_precisions = sorted({"float32" if p == "float32" else "bf16" for p in precisions}, key=PRECISIONS.index)
    hf = {p: load(path, torch.float32 if p == "float32" else torch.bfloat16) for p in hf_precisions}
    runs: dict[tuple[str, str], list[dict]] = {}
    verify: dict[tuple[str, str], dict] = {}

    def run(key, make):
        if key not in runs:   # first-call allocations out of the way
            engine_run(make(), prompt[:32], 2)
        runs.setdefault(key, []).append(engine_run(make(), prompt, new_tokens))

    for precision in precisions:
        log(f"lean {precision}: loading")
        lean = lean_model(path, precision)
        reference = "float32" if precision == "float32" else "bf16"
        for r in range(repeats):   # interleaved, so that both see the same load on a shared CPU
            run(("hf", reference), lambda: TargetRunner(hf[reference]))
            run(("lean", precision), lambda: LeanTargetRunner(lean))
            log(f"  repeat {r + 1}/{repeats}: lean {runs['lean', precision][-1]['prefill_ms']:.0f} ms prefill, "
                f"{runs['lean', precision][-1]['decode_ms']:.1f} ms/token; HF {reference} "
                f"{runs['hf', reference][-1]['prefill_ms']:.0f}, {runs['hf', reference][-1]['decode_ms']:.1f}")
        verify["lean", precision] = {n: time_verify(LeanTargetRunner(lean), prompt, n, reps=3 * repeats) for n in (5, 8)}
        if ("hf", reference) not in verify:
            verify["hf", reference] = {n: time_verify(TargetRunner(hf[reference]), prompt, n, reps=3 * repeats)
                                       for n in (5, 8)}
        del lean
        gc.collect()
    return [{"forward": forward, "precision": precision,
             "prefill_ms": round(min(r["prefill_ms"] for r in rs), 1),
             "decode_ms": round(min(r["decode_ms"] for r in rs), 2),
             "verify_ms": {str(n): round(ms, 2) for n, ms in verify[forward, precision].items()},
             "tokens": rs[0]["tokens"], "runs": len(rs)}
            for (forward, precision), rs in runs.items()]


def compare(rows: list[dict]) -> list[dict]:
    """Per lean precision: its figures beside HF's at that precision (bf16 for int8/int4), and ratios."""
    hf = {r["precision"]: r for r in rows if r["forward"] == "hf"}
    out = []
    for lean in (r for r in rows if r["forward"] == "lean"):
        ref = hf["float32" if lean["precision"] == "float32" else "bf16"]
        agree = sum(a == b for a, b in zip(lean["tokens"], ref["tokens"])) / len(ref["tokens"])
        out.append({"precision": lean["precision"], "hf_precision": ref["precision"],
                    "lean_prefill_ms": lean["prefill_ms"], "hf_prefill_ms": ref["prefill_ms"],
                    "prefill_speedup": round(ref["prefill_ms"] / lean["prefill_ms"], 2),
                    "lean_decode_ms": lean["decode_ms"], "hf_decode_ms": ref["decode_ms"],
                    "decode_speedup": round(ref["decode_ms"] / lean["decode_ms"], 2),
                    "lean_verify_ms": lean["verify_ms"], "hf_verify_ms": ref["verify_ms"], "agree": round(agree, 3)})
    return out


def table(comparisons: list[dict], prompt_tokens: int) -> str:
    rows = [("precision", "HF as", f"prefill {prompt_tokens}: lean ms", "HF ms", "x", "decode: lean ms/tok", "HF ms/tok", "x",
             "verify 8 rows: lean ms", "HF ms", "agree")]
    for c in comparisons:
        rows.append((c["precision"], c["hf_precision"], f"{c['lean_prefill_ms']:.0f}", f"{c['hf_prefill_ms']:.0f}",
                     f"{c['prefill_speedup']:.2f}", f"{c['lean_decode_ms']:.1f}", f"{c['hf_decode_ms']:.1f}",
                     f"{c['decode_speedup']:.2f}", f"{c['lean_verify_ms']['8']:.1f}", f"{c['hf_verify_ms']['8']:.1f}",
                     f"{c['agree']:.0%}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)


# -- the PNG: two panels of bars (prefill ms, decode ms/token), lean beside HF per precision ------
COLORS = {"lean": (230, 120, 40), "hf": (120, 120, 120)}


def write_png(path: Path, comparisons: list[dict], prompt_tokens: int) -> None:
    from .engine_bench import draw_text
    from .latency_bench import Canvas

    label_w, bar_w, row_h, panel_w = 90, 300, 16, 470
    canvas = Canvas(20 + 2 * panel_w, 80 + 2 * row_h * max(len(comparisons), 1) + 10 * len(comparisons))
    draw_text(canvas, 20, 10, "EYAS BENCH FORWARD  (LEAN VS HF, BEST OF N, LOWER IS FASTER)")
    for n, (name, rgb) in enumerate(COLORS.items()):
        canvas.dot(20 + 90 * n, 30, rgb, 10)
        draw_text(canvas, 36 + 90 * n, 31, name, rgb)
    for p, (title, lean_key, hf_key) in enumerate(((f"PREFILL {prompt_tokens} MS", "lean_prefill_ms", "hf_prefill_ms"),
                                                   ("DECODE MS/TOKEN", "lean_decode_ms", "hf_decode_ms"))):
        x0 = 20 + p * panel_w
        draw_text(canvas, x0, 52, title)
        peak = max([c[k] for c in comparisons for k in (lean_key, hf_key)], default=1.0) or 1.0
        for i, c in enumerate(comparisons):
            for j, (forward, key) in enumerate((("lean", lean_key), ("hf", hf_key))):
                y = 70 + i * (2 * row_h + 10) + j * row_h
                if j == 0:
                    draw_text(canvas, x0, y + 2, c["precision"])
                w = max(1, round((bar_w - 60) * c[key] / peak))
                for dy in range(row_h - 4):
                    canvas.line(x0 + label_w, y + dy, x0 + label_w + w, y + dy, COLORS[forward])
                draw_text(canvas, x0 + label_w + w + 6, y + 2, f"{c[key]:.0f}" if c[key] >= 100 else f"{c[key]:.1f}")
    canvas.save(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="eyas bench forward", description=__doc__.split("\n\n")[0])
    names = lambda s: [x for x in s.split(",") if x]
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="registry name or model directory")
    ap.add_argument("--precisions", type=names, default=["bf16", "int8", "int4"],
                    help=f"any of {','.join(PRECISIONS)} (int8/int4 are compared with HF bf16)")
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda (int8/int4 are CPU-only)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure (best of)")
    ap.add_argument("--out", type=Path, default=Path("out/bench/forward"))
    args = ap.parse_args(argv)
    unknown = [p for p in args.precisions if p not in PRECISIONS]
    if unknown or not args.precisions:
        ap.error(f"unknown precision: {', '.join(unknown)} (available: {', '.join(PRECISIONS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    from completion.engine.torch_engine import on_model_thread
    from completion.models import resolve_model

    from .engine_bench import source_prompts

    args = parse_args(argv)
    global DEVICE
    DEVICE = args.device
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    path = resolve_model(args.model)
    [prompt] = source_prompts(Path(path), [args.prompt_tokens])[str(args.prompt_tokens)]

    def bench():
        torch.set_num_threads(args.threads)   # on the model thread: its OpenMP team is the one that runs
        return measure(path, args.precisions, prompt, args.new_tokens, args.repeats)
    rows = on_model_thread(bench)
    comparisons = compare(rows)
    machine = dict(cpu=platform.processor() or platform.machine(), threads=args.threads,
                   load_average=os.getloadavg())
    print(f"model {args.model} ({path}); prompt {args.prompt_tokens} tokens of stdlib source, prefilled in "
          f"engine chunks; {args.new_tokens} greedy steps; best of {args.repeats}")
    print(f"{machine['cpu']}, {args.device}, {args.threads} threads, load average {machine['load_average'][0]:.2f}; "
          "x = HF ms / lean ms; agree = lean greedy tokens equal to HF's")
    print(table(comparisons, args.prompt_tokens))

    args.out.mkdir(parents=True, exist_ok=True)
    report = {"config": {"model": args.model, "path": path, "precisions": args.precisions,
                         "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                         "repeats": args.repeats, "threads": args.threads, "device": args.device},
              "machine": machine, "rows": rows, "comparisons": comparisons}
    (args.out / "forward.json").write_text(json.dumps(report, indent=1) + "\n")
    write_png(args.out / "forward.png", comparisons, args.prompt_tokens)
    print(f"wrote {args.out / 'forward.json'} and {args.out / 'forward.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
