"""A small drafter fit on the target's own greedy outputs: teacher-forced EAGLE-3 rows plus the
P-EAGLE parallel objective at MASK slots, in one attention pass over "parallel groups".

Rows of one training window of L tokens (depth-major; row (r, d) is anchored at position r):
    depth 0      r = 0..L-2      token ids[r+1]  hidden fc(aux[r])          label labels[r+1]
    depth d>=1   r = 0..L-2-d    token MASK      hidden fc(mask_hidden)     label labels[r+1+d]
    position r + d; row (r, d) attends to depth-0 rows r' <= r and to (r, d') with d' <= d:
    exactly what MASK slot d sees at inference (layout.py), so one pass trains all K drafts.
EAGLE-3 chaining (`ar_steps`): rows (r, j) carry the true token ids[r+1+j] and the drafter's own
output state of row (r, j-1) (training-time test); they train the autoregressive baseline mode.
A later issue grows this into the full trainer (COD sampling, sequence partitioning).
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from completion.speculative.config import DrafterConfig, distinct_aux_layer_ids
from completion.speculative.drafter import Drafter, init_drafter

from .corpus import TargetTrace, draft_vocabulary, greedy_traces

IGNORE = -100
DEFAULT_MASK_TOKEN_ID = 151669   # first unused Qwen3 embedding row after the added tokens


@dataclass
class FitConfig:
    steps: int = 300
    lr: float = 3e-3
    depth: int = 8            # K_train: drafts per anchor (1 real row + depth-1 MASK rows)
    ar_steps: int = 2         # EAGLE-3 chained steps after the first (0: parallel objective only)
    ar_weight: float = 0.5
    window: int = 96          # tokens per training window (a random crop of one trace)
    seed: int = 0
    log_every: int = 50


def row_offsets(length: int, depth: int) -> list[int]:
    """Start of each depth's rows in the depth-major row list (depth d has length-1-d rows)."""
    offsets, total = [], 0
    for d in range(depth):
        offsets.append(total)
        total += max(0, length - 1 - d)
    return offsets + [total]


def group_rows(length: int, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    anchors, depths = [], []
    for d in range(depth):
        n = max(0, length - 1 - d)
        anchors.append(torch.arange(n))
        depths.append(torch.full((n,), d))
    return torch.cat(anchors), torch.cat(depths)


def group_mask(anchor: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """[R, R] True where query row may attend to key row (the P-EAGLE parallel-group mask)."""
    qa, ka = anchor[:, None], anchor[None, :]
    qd, kd = depth[:, None], depth[None, :]
    return ((kd == 0) & (ka <= qa)) | ((ka == qa) & (kd <= qd))


def draft_index_map(drafter: Drafter) -> torch.Tensor:
    """[V] target id -> draft id, IGNORE where the draft vocabulary lacks it."""
    cfg = drafter.config
    index = torch.full((cfg.vocab_size,), IGNORE, dtype=torch.long)
    draft_ids = torch.arange(cfg.draft_vocab_size)
    index[drafter.to_target_ids(draft_ids.to(drafter.d2t.device)).cpu()] = draft_ids
    return index


def window_loss(drafter: Drafter, trace: TargetTrace, start: int, length: int, fit: FitConfig,
                index: torch.Tensor) -> tuple[torch.Tensor, dict]:
    cfg = drafter.config
    device, dtype = drafter.fc.weight.device, drafter.fc.weight.dtype
    ids = trace.ids[start:start + length]
    aux = trace.aux[start:start + length].to(device, dtype)
    labels = index[trace.labels[start:start + length]]
    L = len(ids)
    depth = min(fit.depth, L - 1)
    anchor, d = group_rows(L, depth)
    is_mask = d > 0
    tokens = torch.where(is_mask, torch.full_like(anchor, cfg.mask_token_id), ids[(anchor + 1).clamp_max(L - 1)])
    target = labels[anchor + 1 + d].to(device)
    fused = drafter.combine(torch.cat([aux[anchor[~is_mask]], drafter.mask_hidden.view(1, -1)]))
    hidden = torch.cat([fused[:-1], fused[-1:].expand(int(is_mask.sum()), -1)])
    mask = group_mask(anchor, d).to(device)
    normed, state = drafter(tokens.to(device), hidden, (start + anchor + d).to(device), attn_mask=mask)
    logits = drafter.logits(normed).float()
    loss = F.cross_entropy(logits, target, ignore_index=IGNORE)
    with torch.no_grad():
        hit = (logits.argmax(-1) == target) & (target != IGNORE)
        metrics = {"acc0": hit[~is_mask.to(device)].float().mean().item(),
                   "acc_mask": hit[is_mask.to(device)].float().mean().item() if is_mask.any() else 0.0}

    # EAGLE-3 training-time test: chain the drafter's own state for ar_steps more steps
    ar_steps = min(fit.ar_steps, L - 2)
    if ar_steps > 0 and fit.ar_weight > 0:
        base_rows = L - 1
        prev_state = state[:base_rows]
        for s in range(1, ar_steps + 1):
            anchor, d = group_rows(L, s + 1)
            offsets = row_offsets(L, s + 1)
            chained = d > 0
            tokens = ids[(anchor + 1 + d).clamp_max(L - 1)]
            # row (r, j) takes the state of row (r, j-1) from the previous pass
            prev_rows = torch.cat([torch.arange(offsets[j - 1], offsets[j - 1] + offsets[j + 1] - offsets[j])
                                   for j in range(1, s + 1)])
            hidden = torch.cat([drafter.combine(aux[anchor[~chained]]), prev_state[prev_rows.to(device)]])
            normed, state = drafter(tokens.to(device), hidden, (start + anchor + d).to(device),
                                    attn_mask=group_mask(anchor, d).to(device))
            newest = (d == s).to(device)
            target = labels[anchor + 1 + d].to(device)
            ar_loss = F.cross_entropy(drafter.logits(normed[newest]).float(), target[newest], ignore_index=IGNORE)
            loss = loss + fit.ar_weight * ar_loss / ar_steps
            prev_state = state
    return loss, metrics


def fit_drafter(drafter: Drafter, traces: list[TargetTrace], fit: FitConfig, progress=None) -> Drafter:
    """Train `drafter` in place on target traces; returns it in eval mode with mask_state refreshed."""
    rng = random.Random(fit.seed)
    torch.manual_seed(fit.seed)
    index = draft_index_map(drafter)
    drafter.train().requires_grad_(True)
    params = [p for p in drafter.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=fit.lr, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
    warmup = max(1, fit.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, fit.steps) / fit.steps)))
    t0 = time.perf_counter()
    running = None
    for step in range(fit.steps):
        trace = rng.choice(traces)
        length = min(fit.window, len(trace.ids))
        start = rng.randint(0, len(trace.ids) - length)
        loss, metrics = window_loss(drafter, trace, start, length, fit, index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running = metrics if running is None else {k: 0.9 * running[k] + 0.1 * v for k, v in metrics.items()}
        if progress and ((step + 1) % fit.log_every == 0 or step + 1 == fit.steps):
            progress(f"  step {step + 1}/{fit.steps} loss {loss.item():.3f} acc@bonus {running['acc0']:.2f} "
                     f"acc@mask {running['acc_mask']:.2f} ({time.perf_counter() - t0:.0f}s)")
    drafter.eval().requires_grad_(False)
    drafter.refresh()
    return drafter


def drafter_config_for(target_config, *, num_layers: int = 2, draft_vocab_size: int = 1024,
                       depth: int = 8, layer_style: str = "llama", mask_token_id: int = DEFAULT_MASK_TOKEN_ID,
                       aux_layer_ids: tuple[int, ...] | None = None) -> DrafterConfig:
    """A drafter shaped like the target (same hidden size and heads, as vLLM's Llama EAGLE-3 path
    expects), `num_layers` deep including the fusion midlayer."""
    t = getattr(target_config, "get_text_config", lambda: target_config)()
    rope = getattr(t, "rope_parameters", None) or {}
    return DrafterConfig(
        hidden_size=t.hidden_size, num_hidden_layers=num_layers, num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        head_dim=getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads,
        intermediate_size=getattr(t, "intermediate_size", 2 * t.hidden_size),
        vocab_size=t.vocab_size, draft_vocab_size=min(draft_vocab_size, t.vocab_size),
        target_hidden_size=t.hidden_size, mask_token_id=min(mask_token_id, t.vocab_size - 1),
        aux_layer_ids=tuple(aux_layer_ids or distinct_aux_layer_ids(t.num_hidden_layers)),
        layer_style=layer_style, rms_norm_eps=t.rms_norm_eps,
        rope_theta=float(rope.get("rope_theta") or getattr(t, "rope_theta", 10000.0)),
        max_position_embeddings=t.max_position_embeddings, trained_depth=depth)


def train_drafter_for(target_model, prompts: list[list[int]], *, new_tokens: int = 64, num_layers: int = 2,
                      draft_vocab_size: int = 1024, layer_style: str = "llama", own_embeddings: bool = False,
                      aux_layer_ids: tuple[int, ...] | None = None, fit: FitConfig | None = None,
                      progress=None) -> Drafter:
    """Trace the target on `prompts`, pick a draft vocabulary, initialise and fit a drafter."""
    fit = fit or FitConfig()
    cfg = drafter_config_for(target_model.config, num_layers=num_layers, draft_vocab_size=draft_vocab_size,
                             depth=fit.depth, layer_style=layer_style, aux_layer_ids=aux_layer_ids)
    if progress:
        progress(f"tracing the target on {len(prompts)} prompts x {new_tokens} greedy tokens")
    traces = greedy_traces(target_model, prompts, new_tokens, cfg.aux_layer_ids, progress)
    vocab = draft_vocabulary(traces, cfg.draft_vocab_size, cfg.vocab_size)
    drafter = init_drafter(cfg, seed=fit.seed, own_embeddings=own_embeddings, draft_to_target=vocab,
                           target_model=target_model)
    if own_embeddings:   # start from the target's table (P-EAGLE then trains it, the MASK row included)
        with torch.no_grad():
            drafter.embed_tokens.weight.copy_(target_model.get_input_embeddings().weight)
    if progress:
        progress(f"fitting a {num_layers}-layer drafter for {fit.steps} steps (depth {fit.depth})")
    return fit_drafter(drafter, traces, fit, progress)


def code_prompts(tokenizer, count: int, length: int, seed: int = 0) -> list[list[int]]:
    """Prompts cut from the Python standard library's own source (offline, always present)."""
    import sysconfig
    from pathlib import Path

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    rng = random.Random(seed)
    prompts = []
    while len(prompts) < count:
        text = rng.choice(files).read_text(errors="replace")
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > length:
            start = rng.randint(0, len(ids) - length)
            prompts.append(ids[start:start + length])
    return prompts


def main(argv: list[str] | None = None) -> int:
    """`python -m completion.training.drafter_fit --target DIR --out DIR`: fit and save a drafter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from completion.speculative import save_drafter

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="target model directory")
    ap.add_argument("--out", required=True, help="where to write the drafter (vLLM layout)")
    ap.add_argument("--layers", type=int, default=2, help="drafter layers incl. the fusion midlayer")
    ap.add_argument("--depth", type=int, default=8, help="K_train: parallel drafts trained per anchor")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--ar-steps", type=int, default=2, help="EAGLE-3 chained training steps")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--draft-vocab", type=int, default=1024)
    ap.add_argument("--layer-style", choices=("llama", "qwen3"), default="llama")
    ap.add_argument("--own-embeddings", action="store_true", help="train a private embedding table")
    args = ap.parse_args(argv)

    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    prompts = code_prompts(tokenizer, args.prompts, args.prompt_tokens)
    fit = FitConfig(steps=args.steps, lr=args.lr, depth=args.depth, ar_steps=args.ar_steps)
    drafter = train_drafter_for(target, prompts, new_tokens=args.new_tokens, num_layers=args.layers,
                                draft_vocab_size=args.draft_vocab, layer_style=args.layer_style,
                                own_embeddings=args.own_embeddings, fit=fit,
                                progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(save_drafter(drafter, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
