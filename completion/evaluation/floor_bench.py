"""`eyas bench floor`: the lean decode step against the memory-bandwidth floor.

At batch 1 a decode step reads every active weight once (for MoE, the routed experts only) and the
KV cache, so (active weight bytes + KV bytes) / memory bandwidth bounds a token's time from below.
This builds a random-weight Qwen3 / Qwen3-MoE target of a named shape on the device (nothing is
downloaded; `30b-a3b` is Qwen3-Coder-30B-A3B's shape, ~61 GB in bf16), measures the device's read
bandwidth over a buffer of that many bytes, times greedy decoding with the lean forward (eager, and compiled with --compile), and
times P-EAGLE steps with a random drafter. A random drafter is almost never accepted, so its
figure is what speculation costs: a draft + verify step as a multiple of a plain step, the
acceptance length a trained drafter must beat to pay off.

    eyas bench floor [--shape 30b-a3b|qwen2.5-coder-0.5b|qwen2.5-coder-1.5b|pocket|tiny-moe] [--device cuda|cpu] [--dtype bf16|f32]
                     [--prompt 512] [--tokens 64] [--k 4] [--compile] [--out out/bench/floor.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .forward_speed import time_runner

SHAPES = {   # Hugging Face config fields and the architecture
    "30b-a3b": dict(arch="qwen3_moe", vocab_size=151936, hidden_size=2048, num_hidden_layers=48, num_attention_heads=32,
                    num_key_value_heads=4, head_dim=128, intermediate_size=6144, moe_intermediate_size=768,
                    num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, rope_theta=10_000_000.0),
    "pocket": dict(arch="qwen3", vocab_size=16000, hidden_size=256, num_hidden_layers=8, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=64, intermediate_size=768, rope_theta=10000.0),
    "tiny-moe": dict(arch="qwen3_moe", vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, intermediate_size=128, moe_intermediate_size=32,
                     num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, rope_theta=10000.0),
    # the real default model's shape (q/k/v biases, no q/k norm), and the optional larger one
    "qwen2.5-coder-0.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=896, num_hidden_layers=24,
                               num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                               rope_theta=1_000_000.0),
    "qwen2.5-coder-1.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=1536, num_hidden_layers=28,
                               num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960,
                               rope_theta=1_000_000.0),
}
DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_target(shape: str, device: str, dtype: torch.dtype):
    """A random-weight model of the shape, created directly on the device in `dtype` (a 30B model
    initialised in float32 first would need twice the memory)."""
    import transformers as tf

    fields = dict(SHAPES[shape])
    arch = fields.pop("arch")
    fields.update(max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
    config_class, model_class = {"qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
                                 "qwen3_moe": (tf.Qwen3MoeConfig, tf.Qwen3MoeForCausalLM),
                                 "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM)}[arch]
    config = config_class(**fields, **({"decoder_sparse_step": 1} if arch == "qwen3_moe" else {}))
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = model_class(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def active_bytes(config, element_bytes: int) -> int:
    """Weight bytes one decode step reads: attention, norms and router of every layer, the routed
    experts (or the dense MLP), the final norm and lm_head, and one embedding row."""
    h, v = config.hidden_size, config.vocab_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    attention = (q + 2 * kv) * h + h * q + 2 * head_dim + 2 * h          # qkv, o, q/k norms, two layer norms
    experts = getattr(config, "num_experts", 0)
    if experts:
        mlp = experts * h + config.num_experts_per_tok * 3 * config.moe_intermediate_size * h
    else:
        mlp = 3 * config.intermediate_size * h
    return (config.num_hidden_layers * (attention + mlp) + h + v * h + h) * element_bytes


def kv_bytes(config, context: int, element_bytes: int) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * context * element_bytes


def read_bandwidth(device: str, nbytes: int, repeats: int = 10) -> float:
    """GB/s at which the device reads a buffer of `nbytes` (a sum over it, best of `repeats`).
    Sized like the weights a step reads, so a model that fits in a CPU's cache is held to the
    cache's rate, and a large one to its memory's."""
    buffer = torch.empty(max(nbytes, 1 << 20) // 4, dtype=torch.float32, device=device).uniform_()
    best = float("inf")
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        float(buffer.sum())              # the float() waits for the device
        best = min(best, time.perf_counter() - t0)
    return buffer.numel() * 4 / best / 1e9


def time_peagle(model, drafter, prompt: list[int], tokens: int, k: int, compiled) -> tuple[float, float]:
    """(ms per speculative step, acceptance length) over greedy decoding of `tokens` tokens."""
    from completion.engine.base import GenerationParams, Stats
    from completion.engine.torch_engine import new_runner
    from completion.speculative import SpeculativeDecoder

    stats = Stats()
    decoder = SpeculativeDecoder(new_runner(model, "lean", compiled), drafter,
                                 GenerationParams(max_tokens=tokens, mode="peagle", num_speculative_tokens=k),
                                 stats, None)
    decoder.prefill(prompt)
    decoder.step()                       # the first token comes from the prefill
    steps, produced = 0, 0
    t0 = time.perf_counter()
    while produced < tokens:
        produced += len(decoder.step())
        steps += 1
    return (time.perf_counter() - t0) * 1e3 / steps, produced / steps


def measure(args) -> dict:
    from completion.engine.lean import LeanTargetRunner, lean_model_for
    from completion.engine.torch_engine import compile_lean
    from completion.speculative import init_drafter
    from completion.training.drafter_fit import drafter_config_for

    dtype = DTYPES[args.dtype]
    element = torch.finfo(dtype).bits // 8
    log(f"building a random {args.shape} target on {args.device} ({args.dtype})")
    model = build_target(args.shape, args.device, dtype)
    params = sum(p.numel() for p in model.parameters())
    config = model.config
    weights, cache = active_bytes(config, element), kv_bytes(config, args.prompt + args.tokens // 2, element)
    log("measuring read bandwidth")
    bandwidth = read_bandwidth(args.device, weights + cache)
    floor_ms = (weights + cache) / (bandwidth * 1e9) * 1e3
    prompt = torch.randint(1, config.vocab_size, (args.prompt,), generator=torch.Generator().manual_seed(0)).tolist()

    lean = lean_model_for(model)
    dcfg = drafter_config_for(config, num_layers=1, draft_vocab_size=min(32768, config.vocab_size), depth=max(args.k, 4))
    drafter = init_drafter(dcfg, seed=0, draft_to_target=torch.arange(dcfg.draft_vocab_size), target_model=model)
    row = {"shape": args.shape, "device": args.device, "dtype": args.dtype, "params": params,
           "active_weight_bytes": weights, "kv_bytes": cache, "bandwidth_gbs": round(bandwidth, 1),
           "floor_ms": round(floor_ms, 3), "prompt_tokens": args.prompt, "new_tokens": args.tokens, "k": args.k}
    variants = [("eager", None, None)]
    if args.compile:
        log("compiling the lean steps")
        # below float32 compile_lean keeps a speculative engine eager (lossless verification), so
        # there only the plain steps compile; in float32 one warm-up serves both
        speculative = compile_lean(lean, drafter)
        variants.append(("compiled", speculative or compile_lean(lean, None), speculative))
    for name, compiled, speculative in variants:
        if name == "compiled" and compiled is None:
            row["compiled_error"] = "torch.compile failed (see the log)"
            continue
        log(f"timing plain decoding ({name})")
        time_runner(LeanTargetRunner(lean, compiled), prompt[:32], 4)   # first-call allocations
        plain_ms = min(time_runner(LeanTargetRunner(lean, compiled), prompt, args.tokens)[1] for _ in range(2))
        log(f"timing P-EAGLE steps ({name}, random drafter, K={args.k})")
        step_ms, al = time_peagle(model, drafter, prompt, args.tokens, args.k, speculative)
        row[name] = {"plain_ms_per_token": round(plain_ms, 3), "x_floor": round(plain_ms / floor_ms, 2),
                     "peagle_step_ms": round(step_ms, 3), "peagle_acceptance_length": round(al, 2),
                     "peagle_ms_per_token": round(step_ms / al, 3),
                     "peagle_over_plain_tokens_per_s": round(plain_ms / (step_ms / al), 3),
                     "step_cost_in_plain_steps": round(step_ms / plain_ms, 2)}
    return row


def report(row: dict) -> str:
    lines = [f"{row['shape']} on {row['device']} ({row['dtype']}): {row['params'] / 1e9:.3f} B parameters, "
             f"{row['active_weight_bytes'] / 1e9:.3f} GB active weights + {row['kv_bytes'] / 1e9:.4f} GB KV per token, "
             f"read bandwidth {row['bandwidth_gbs']} GB/s -> floor {row['floor_ms']} ms/token",
             f"{'forward':10} {'plain ms/tok':>12} {'x floor':>8} {'P-EAGLE step ms':>16} {'AL':>5} "
             f"{'step / plain':>12} {'P-EAGLE/plain tok/s':>20}"]
    for name in ("eager", "compiled"):
        if name in row:
            r = row[name]
            lines.append(f"{name:10} {r['plain_ms_per_token']:>12.3f} {r['x_floor']:>8.2f} {r['peagle_step_ms']:>16.3f} "
                         f"{r['peagle_acceptance_length']:>5.2f} {r['step_cost_in_plain_steps']:>12.2f} "
                         f"{r['peagle_over_plain_tokens_per_s']:>20.3f}")
    best = min(row[n]["x_floor"] for n in ("eager", "compiled") if n in row)
    lines.append(f"bar (plain within 2x of the floor): {'met' if best <= 2 else 'not met'} ({best:.2f}x); "
                 "the random drafter's AL is ~1: 'step / plain' is the AL a trained drafter must beat")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="eyas bench floor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="pocket")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on cuda, f32 on cpu")
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens (random ids)")
    ap.add_argument("--tokens", type=int, default=64, help="greedy tokens per timing")
    ap.add_argument("--k", type=int, default=4, help="P-EAGLE draft tokens per step")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd lean steps")
    ap.add_argument("--out", type=Path, default=Path("out/bench/floor.json"))
    args = ap.parse_args(argv)
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "f32")

    from completion.engine.torch_engine import on_model_thread   # one OpenMP team, as the engine runs
    row = on_model_thread(measure, args)
    print(report(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
