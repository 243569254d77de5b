"""The P-EAGLE drafter trainer (and its EAGLE-3 baseline) on synthesized target data.

    eyas train drafter --data out/pocket/synth --target DIR --out DIR [--method peagle|eagle3]
                       [--steps N] [--depth 18] [--work out/pocket/peagle-work] [--resume]

P-EAGLE (research/peagle.md §3, arXiv 2602.01469):
  * rows: sample row j (0 <= j <= T-2) carries token x[j+1], the target's aux state g[j], RoPE
    position j, and learns the target's distribution at position j+1 (the EAGLE shift);
  * COD sampling (`cod_sample`): depth 0 keeps every row; depth d >= 1 keeps
    int((n_valid - d) * max(r^d, r_min)) elements drawn from the successors of the depth d-1
    elements, so each element (anchor a, depth d) has its whole chain (a, 1..d-1); a depth-d
    element is a MASK token with the learned `mask_hidden` at position a + d and learns the target's
    distribution at a + d + 1;
  * the parallel-group mask (`drafter_fit.group_mask`): an element sees the depth-0 rows up to its
    anchor and the earlier depths of its own chain: what MASK slot d sees at inference;
  * loss: KL(target || drafter) over the draft vocabulary, summed over every supervised element and
    divided by their count (no per-depth weights: the paper's); or, with `depth_decay` g > 0,
    sum_d g^d mean_d KL, each depth averaged over its own elements, as the EAGLE-3 baseline weighs
    its unrolled steps (a small drafter otherwise spends its capacity on the MASK depths, which
    hold ~80% of the elements COD keeps, and is weaker at the first depths, where most drafts
    are accepted); the target's logits are recomputed from its
    stored final hidden state with its lm_head; elements whose target top-1 lies outside the draft
    vocabulary are dropped (as EAGLE-3 / SpecForge do) but still count as misses in the accuracy;
  * trainable embeddings (initialised from the target's; the MASK row learns) and `mask_hidden`;
  * sequence partitioning (the paper's Algorithm 1, `partition_elements`): segments of the sequence
    each carry the depth-0 prefix before them as context-only rows; forward + backward per segment
    with weights fixed for the whole sequence accumulates exactly the single-pass gradient.
Supervision covers the generated region only (rows j >= prompt_len - 1, as the responses are the
target's own; prompt rows are context), and a chain only where all its tokens are generated.

EAGLE-3 (the autoregressive baseline, `--method eagle3`): training-time test unrolled `ttt_steps`
times: step 0 is the teacher-forced pass; step k feeds row j the true token x[j+1+k] and the
drafter's own output state of step k-1 at position j + k, attending to the step-0 rows up to j and
to its own earlier steps (their keys/values are reused, not recomputed); loss = sum_k 0.8^k KL_k.
Its embeddings are the target's, frozen (as in EAGLE-3).

Output: `save_drafter` (vLLM layout, bf16 by default). Progress lines go to the log; a resumable
checkpoint (drafter, optimizer, data order, RNG) is written to --work every --ckpt-every seconds.
A GPU is used when present.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from completion.speculative.config import DrafterConfig
from completion.speculative.drafter import Drafter, init_drafter
from completion.training import TimeBudget, log_line

from .drafter_fit import drafter_config_for, group_mask

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TrainConfig:
    method: str = "peagle"          # "peagle" (parallel) or "eagle3" (autoregressive baseline)
    steps: int = 2000
    seqs_per_step: int = 1          # sequences whose gradients one optimizer step accumulates
    lr: float = 1e-3
    warmup: int = 50
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    depth: int = 18                 # K_train (P-EAGLE)
    shallow_steps: int = 0          # first train at K_train = 2 for this many steps (0: off)
    r: float = 0.7                  # COD retention per depth
    r_min: float = 0.2              # COD retention floor
    depth_decay: float = 0.0        # > 0: loss sum_d depth_decay^d mean_d KL (0: one mean over all elements)
    ttt_steps: int = 7              # EAGLE-3 unrolled steps
    ttt_decay: float = 0.8
    max_rows: int = 4096            # P-EAGLE elements per forward before sequence partitioning
    segments: int = 0               # force this many segments (0: from max_rows)
    num_layers: int = 2
    draft_vocab: int = 4096
    intermediate: int = 0           # the drafter's MLP width (0: the target's)
    embeddings: str = "own"         # P-EAGLE: "own" (trained, shipped) or "shared" (the target's, frozen, not shipped)
    warm: str = "none"              # "last-layer": start from the target's last layer (warm_start)
    supervise: str = "generated"    # rows that learn: "generated" (the target's continuations) or "all"
    seed: int = 0
    log_every: int = 25
    eval_every: int = 0             # > 0 (and held-out data given): held-out AL every this many steps
    ckpt_every: float = 120.0       # seconds
    minutes: float = 0.0            # > 0: fit `steps` to this wall-clock budget (TimeBudget)
    autocast: str = "none"          # "bf16": forward and backward matmuls in bf16 (fp32 master weights)

    def __post_init__(self):
        if self.method not in ("peagle", "eagle3"):
            raise ValueError(f"method must be peagle or eagle3, got {self.method!r}")
        if self.method == "peagle" and not 0 < self.r_min <= self.r <= 1:
            raise ValueError("COD needs 0 < r_min <= r <= 1")
        for name, allowed in (("embeddings", ("own", "shared")), ("warm", ("none", "last-layer")),
                              ("supervise", ("generated", "all")), ("autocast", ("none", "bf16"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @property
    def num_depths(self) -> int:
        return self.depth if self.method == "peagle" else self.ttt_steps

    def depth_at(self, step: int) -> int:
        """K_train at this step: 2 (one MASK depth) for the first `shallow_steps`, then `depth`.
        On the pocket pair, training with every depth from the start left the MASK rows (one token,
        one hidden state, told apart only by their RoPE positions) with one guess for all depths:
        0.2-0.3 training accuracy from depth 2 to 18 alike, AL 2.08 at K=4. Learning the first MASK
        depth alone first, then all 18, gave 0.48 at depth 2 and 0.34 at depth 3."""
        return min(2, self.depth) if step < self.shallow_steps else self.depth


# ---------------------------------------------------------------------------------------------------
# COD sampling, masks, partitioning
# ---------------------------------------------------------------------------------------------------

def supervised_rows(length: int, prompt_len: int) -> torch.Tensor:
    """[length-1] bool: row j is supervised when it lies in the generated region (its token and
    label are the target's own): prompt_len - 1 <= j <= length - 2."""
    j = torch.arange(max(0, length - 1))
    return j >= prompt_len - 1


def first_supervised(sample, cfg: "TrainConfig") -> int:
    """The prompt length supervised_rows is given: the sample's, or 1 (every row) with supervise
    "all". On real code the prompt rows still learn the target's own distribution (its final
    state is stored at every position), and a prompt token costs a fraction of a generated one."""
    return sample.prompt_len if cfg.supervise == "generated" else 1


def cod_sample(valid: torch.Tensor, depth: int, r: float = 0.7, r_min: float = 0.2,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """COD position sampling over n rows (`valid` [n] bool: rows that may be supervised).
    Returns (anchor, depth) [R], depth-major: all n rows at depth 0, then for d >= 1
    int((n_valid - d) * max(r^d, r_min)) elements whose position a + d is a valid successor of a
    depth d-1 element (chains are contiguous, never cross the end of the sequence)."""
    n = valid.shape[0]
    n_valid = int(valid.sum())
    anchors, depths = [torch.arange(n)], [torch.zeros(n, dtype=torch.long)]
    prev = torch.arange(n)                    # positions (anchor + depth) of the previous depth
    for d in range(1, depth):
        pool = prev + 1
        pool = pool[pool < n]
        pool = pool[valid[pool]]
        k = min(int((n_valid - d) * max(r ** d, r_min)), pool.numel())
        if k <= 0:
            break
        pick = torch.randperm(pool.numel(), generator=generator)[:k]
        chosen = pool[pick].sort().values
        anchors.append(chosen - d)
        depths.append(torch.full((k,), d, dtype=torch.long))
        prev = chosen
    return torch.cat(anchors), torch.cat(depths)


def element_supervision(anchor: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Depth-0 rows are supervised where valid; deeper elements always (COD drew them from valid
    positions)."""
    return torch.where(depth == 0, valid[anchor], torch.ones_like(valid[anchor]))


def partition_elements(anchor: torch.Tensor, depth: torch.Tensor, num_rows: int,
                       segments: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Sequence partitioning (P-EAGLE Algorithm 1). Boundaries B_s = ceil(s * n / S). A depth-0
    element belongs to bucket(anchor), a deeper one to bucket(anchor + 1) (the bucket of its depth-1
    element: whole chains stay together). Segment s = its own elements plus, as context only, the
    depth-0 rows before B_s. Returns per segment (element indices, own mask) in the input order."""
    bounds = [math.ceil(s * num_rows / segments) for s in range(segments + 1)]
    key = torch.where(depth == 0, anchor, anchor + 1)
    seg = torch.bucketize(key, torch.tensor(bounds[1:-1]), right=True)
    out = []
    for s in range(segments):
        own = seg == s
        context = (depth == 0) & (anchor < bounds[s])
        idx = torch.nonzero(own | context).flatten()
        if own.any():
            out.append((idx, own[idx]))
    return out


# ---------------------------------------------------------------------------------------------------
# Forward passes and losses
# ---------------------------------------------------------------------------------------------------

class PastKV:
    """Stands in for a DraftCache during EAGLE-3 training: every layer's keys/values of earlier
    unrolled steps, concatenated with the new rows' (gradients flow through all of them)."""

    def __init__(self, num_layers: int):
        self.k: list = [None] * num_layers
        self.v: list = [None] * num_layers

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if self.k[layer] is not None:
            k, v = torch.cat([self.k[layer], k], dim=1), torch.cat([self.v[layer], v], dim=1)
        self.k[layer], self.v[layer] = k, v
        return k, v


def forward_rows(drafter: Drafter, tokens, hidden, positions, mask, past: PastKV | None = None):
    """Drafter.forward with an explicit [rows, keys] mask and optional earlier keys/values."""
    return drafter.run_layers(tokens, hidden, positions, mask, past)


@dataclass
class Targets:
    """What the loss needs from the target: its lm_head rows for the draft vocabulary, and the map
    target id -> draft id (-1 outside the draft vocabulary)."""
    head: torch.Tensor          # [Vd, Ht] float32
    to_draft: torch.Tensor      # [V] long


def make_targets(target_model, drafter: Drafter) -> Targets:
    cfg = drafter.config
    device = drafter.fc.weight.device
    draft_ids = drafter.to_target_ids(torch.arange(cfg.draft_vocab_size, device=drafter.d2t.device)).to(device)
    head = target_model.get_output_embeddings().weight.detach().float().to(device)[draft_ids]
    to_draft = torch.full((cfg.vocab_size,), -1, dtype=torch.long, device=device)
    to_draft[draft_ids] = torch.arange(cfg.draft_vocab_size, device=device)
    return Targets(head, to_draft)


def kl_terms(drafter: Drafter, targets: Targets, normed: torch.Tensor, final: torch.Tensor,
             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-element KL(target || drafter) over the draft vocabulary [m], a mask of the elements kept
    (target top-1 inside the draft vocabulary) [m], and per-element top-1 hits [m]. Computed as
    the cross-entropy from the target's distribution (one fused kernel, forward and backward)
    minus the target's entropy (a constant to the drafter): the same values and gradients as
    sum p (log p - log q) with less work over the [m, Vd] matrices (~1/3 on a CPU)."""
    logits = drafter.logits(normed).float()
    with torch.no_grad():
        logp = F.log_softmax(final.float() @ targets.head.T, dim=-1)
        p = logp.exp()
        entropy = -(p * logp).sum(-1)
    kl = F.cross_entropy(logits, p, reduction="none") - entropy
    keep = targets.to_draft[labels] >= 0
    with torch.no_grad():
        hit = drafter.to_target_ids(logits.argmax(-1)) == labels
    return kl, keep, hit


class Metrics:
    """Loss and per-depth top-1 agreement with the target, accumulated between log lines."""

    def __init__(self, depths: int):
        self.depths = depths
        self.reset()

    def reset(self):
        self.loss, self.loss_n, self.elements, self.supervised = 0.0, 0, 0, 0
        self.hits = [0] * self.depths
        self.total = [0] * self.depths

    def add_depth(self, d: int, hit: torch.Tensor):
        self.hits[d] += int(hit.sum())
        self.total[d] += int(hit.numel())

    def acc(self) -> list[float]:
        return [h / t if t else float("nan") for h, t in zip(self.hits, self.total)]


def peagle_forward(drafter: Drafter, sample, anchor: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Normed drafter outputs [R, H] of the elements (anchor, depth) of one sequence: depth-0 rows
    carry x[a+1] and fc(aux[a]), deeper ones MASK and fc(mask_hidden); position a + d; the
    parallel-group mask."""
    cfg = drafter.config
    device, dtype = drafter.fc.weight.device, drafter.fc.weight.dtype
    ids, aux = sample.ids.to(device), sample.aux.to(device)
    anchor, depth = anchor.to(device), depth.to(device)
    is0 = depth == 0
    tokens = torch.where(is0, ids[anchor + 1], torch.full_like(anchor, cfg.mask_token_id))
    fused = drafter.combine(aux[anchor].to(dtype))
    mask_state = drafter.combine(drafter.mask_hidden.view(1, -1))
    hidden = torch.where(is0[:, None], fused, mask_state)
    normed, _ = forward_rows(drafter, tokens, hidden, anchor + depth, group_mask(anchor, depth))
    return normed


def element_weights(depth: torch.Tensor, counted: torch.Tensor, decay: float) -> torch.Tensor:
    """[R] loss weight of each element (`counted`: supervised, target top-1 in the draft vocabulary).
    decay 0: 1 / (elements counted); else decay^d / (elements counted at depth d)."""
    if decay <= 0:
        return torch.full(depth.shape, 1.0 / max(int(counted.sum()), 1))
    per_depth = torch.bincount(depth[counted], minlength=int(depth.max()) + 1).clamp(min=1).float()
    return decay ** depth.float() / per_depth[depth]


def peagle_segment_loss(drafter: Drafter, targets: Targets, sample, anchor, depth, supervise, weight: torch.Tensor,
                        metrics: Metrics | None = None) -> torch.Tensor:
    """Loss (sum of weight x KL) of one segment's elements (all of a sequence's, unpartitioned)."""
    device = drafter.fc.weight.device
    normed = peagle_forward(drafter, sample, anchor, depth)
    anchor, depth, supervise = anchor.to(device), depth.to(device), supervise.to(device)
    label_pos = (anchor + depth)[supervise] + 1
    labels = sample.labels.to(device)[label_pos]
    kl, keep, hit = kl_terms(drafter, targets, normed[supervise], sample.final.to(device)[label_pos], labels)
    if metrics is not None:
        d_sup = depth[supervise]
        for d in range(metrics.depths):
            sel = d_sup == d
            if sel.any():
                metrics.add_depth(d, hit[sel])
        metrics.elements += int(anchor.numel())
    return (kl * keep * weight.to(device)[supervise]).sum()


def peagle_sequence_step(drafter: Drafter, targets: Targets, sample, cfg: TrainConfig,
                         generator: torch.Generator, metrics: Metrics | None = None, *,
                         segments: int | None = None, scale: float = 1.0) -> float:
    """COD-sample one sequence, run forward + backward (partitioned when it is large); returns the
    sequence's loss. Gradients accumulate in the drafter's .grad."""
    n = len(sample.ids) - 1
    valid = supervised_rows(len(sample.ids), first_supervised(sample, cfg))
    anchor, depth = cod_sample(valid, cfg.depth, cfg.r, cfg.r_min, generator)
    supervise = element_supervision(anchor, depth, valid)
    labels = sample.labels[anchor + depth + 1]
    counted = supervise & (targets.to_draft.cpu()[labels] >= 0)
    weight = element_weights(depth, counted, cfg.depth_decay)
    if segments is None:
        segments = cfg.segments or max(1, math.ceil(anchor.numel() / cfg.max_rows))
    total = 0.0
    for idx, own in partition_elements(anchor, depth, n, segments):
        loss = peagle_segment_loss(drafter, targets, sample, anchor[idx], depth[idx], supervise[idx] & own,
                                   weight[idx], metrics)
        (loss * scale).backward()
        total += float(loss.detach())
    if metrics is not None:
        metrics.loss += total
        metrics.loss_n += 1
        metrics.supervised += int(counted.sum())
    return total


def eagle3_unroll(drafter: Drafter, sample, steps: int, prompt_len: int | None = None):
    """EAGLE-3 training-time test over one sequence. Yields (k, rows, normed [rows, H]) per unrolled
    step: step 0 runs every row j (token x[j+1], fc(aux[j]), position j, causal); step k >= 1 runs
    the generated-region rows with token x[j+1+k], the drafter's own state from step k-1 and
    position j + k, attending to the step-0 rows up to j and to row j's earlier steps (whose
    keys/values are kept, not recomputed). `prompt_len` (default the sample's) bounds the
    unrolled rows as supervised_rows does."""
    device, dtype = drafter.fc.weight.device, drafter.fc.weight.dtype
    ids, aux = sample.ids.to(device), sample.aux.to(device)
    L = len(sample.ids)
    n = L - 1
    rows = torch.arange(n, device=device)
    sel = torch.nonzero(supervised_rows(L, sample.prompt_len if prompt_len is None else prompt_len)
                        .to(device)).flatten()
    eye = torch.eye(sel.numel(), dtype=torch.bool, device=device)
    past = PastKV(len(drafter.layers))
    hidden = drafter.combine(aux[:n].to(dtype))
    for k in range(min(steps, n)):
        if k == 0:
            q, mask = rows, rows[None, :] <= rows[:, None]
        else:
            q = sel
            mask = torch.cat([rows[None, :] <= sel[:, None]] + [eye] * k, dim=1)
        tokens = ids[(q + 1 + k).clamp_max(L - 1)]
        normed, state = forward_rows(drafter, tokens, hidden, q + k, mask, past)
        yield k, q, normed
        if sel.numel() == 0:
            break
        hidden = state if k else state[sel]


def eagle3_sequence_step(drafter: Drafter, targets: Targets, sample, cfg: TrainConfig,
                         metrics: Metrics | None = None, *, scale: float = 1.0) -> float:
    """The EAGLE-3 loss of one sequence, sum_k decay^k KL_k (each count-normalised); backward once."""
    device = drafter.fc.weight.device
    labels_all, final_all = sample.labels.to(device), sample.final.to(device)
    L = len(sample.ids)
    start = first_supervised(sample, cfg)
    valid = supervised_rows(L, start).to(device)
    total = torch.zeros((), device=device)
    for k, q, normed in eagle3_unroll(drafter, sample, cfg.ttt_steps, start):
        sup = valid[q] & (q + k <= L - 2)          # row j at step k predicts position j+1+k
        label_pos = (q + 1 + k)[sup]
        labels = labels_all[label_pos]
        kl, keep, hit = kl_terms(drafter, targets, normed[sup], final_all[label_pos], labels)
        count = int(keep.sum())
        total = total + cfg.ttt_decay ** k * (kl * keep).sum() / max(count, 1)
        if metrics is not None and k < metrics.depths:
            metrics.add_depth(k, hit)
            metrics.supervised += count
            metrics.elements += int(q.numel())
    (total * scale).backward()
    if metrics is not None:
        metrics.loss += float(total.detach())
        metrics.loss_n += 1
    return float(total.detach())


# ---------------------------------------------------------------------------------------------------
# Building the drafter
# ---------------------------------------------------------------------------------------------------

def pick_mask_token(tokenizer_vocab: dict[str, int] | None, vocab_size: int) -> int:
    """`<|fim_pad|>` when the tokenizer has it (the target never sees it), else the last id."""
    if tokenizer_vocab and "<|fim_pad|>" in tokenizer_vocab:
        return tokenizer_vocab["<|fim_pad|>"]
    return vocab_size - 1


def draft_vocabulary_from_counts(counts: torch.Tensor, size: int) -> torch.Tensor:
    """The `size` most frequent target choices (ties by id), topped up with the lowest unused ids; sorted."""
    size = min(size, counts.numel())
    order = sorted(range(counts.numel()), key=lambda i: (-int(counts[i]), i))
    return torch.tensor(sorted(order[:size]))


def build_drafter(target_model, dataset, cfg: TrainConfig, *, mask_token_id: int,
                  attention_bias: bool = False) -> Drafter:
    """A drafter shaped like the target, its draft vocabulary from the data, initialised from the
    target where it helps (embeddings, lm_head rows) and with fc scaled to the aux states' size.
    q/k/v biases where asked (a drafter continued from one that has them) or where the warm start
    brings them."""
    t = target_model.config
    dcfg: DrafterConfig = drafter_config_for(t, num_layers=cfg.num_layers, draft_vocab_size=cfg.draft_vocab,
                                             depth=cfg.num_depths, mask_token_id=mask_token_id,
                                             aux_layer_ids=dataset.aux_layer_ids)
    if cfg.intermediate:
        dcfg = replace(dcfg, intermediate_size=cfg.intermediate)
    if attention_bias or cfg.warm == "last-layer" and target_model.model.layers[-1].self_attn.q_proj.bias is not None:
        dcfg = replace(dcfg, attention_bias=True)   # Qwen2's q/k/v biases come with its layer
    counts = dataset.label_counts(t.vocab_size, every_row=cfg.supervise == "all")
    vocab = draft_vocabulary_from_counts(counts, dcfg.draft_vocab_size)
    # P-EAGLE trains its embeddings (the paper's); EAGLE-3 shares the target's. "shared" keeps a
    # real target's table out of the checkpoint (Qwen2.5-Coder-0.5B's is 272 MB in bf16)
    own = cfg.method == "peagle" and cfg.embeddings == "own"
    drafter = init_drafter(dcfg, seed=cfg.seed, own_embeddings=own, draft_to_target=vocab, target_model=target_model)
    drafter.float()
    with torch.no_grad():
        if own:
            drafter.embed_tokens.weight.copy_(target_model.get_input_embeddings().weight.float())
        drafter.lm_head.weight.copy_(target_model.get_output_embeddings().weight.float()[vocab.to(drafter.d2t.device)])
        # fc: outputs of unit size for the aux states' scale; mask_hidden lives in the same space
        s = dataset[0].aux.float()
        rms = float(s.pow(2).mean().sqrt())
        drafter.fc.weight.normal_(0.0, 1.0 / (math.sqrt(dcfg.fc_input_size) * rms),
                                  generator=torch.Generator().manual_seed(cfg.seed))
        drafter.mask_hidden.normal_(0.0, rms, generator=torch.Generator().manual_seed(cfg.seed + 1))
    if cfg.warm == "last-layer":
        warm_start(drafter, target_model)
    drafter.vocab_coverage = float(counts[vocab].sum()) / max(1, int(counts.sum()))
    return drafter


@torch.no_grad()
def warm_start(drafter: Drafter, target_model) -> None:
    """Start the drafter where the target ends: `fc` passes the top aux layer's state through
    unchanged, the fusion layer is the target's last decoder layer reading that state (its q/k/v
    columns for the token embedding start at zero), and the final norm is the target's (the
    output rows already are). A narrower MLP keeps the target's channels with the largest
    |gate| x |up| x |down| norms. Later drafter layers add nothing at first (their output rows are
    zero). At step 0 the drafter thus computes the target's last layer on a stream two layers
    early: features the target uses, not a random projection."""
    t_cfg = getattr(target_model.config, "get_text_config", lambda: target_model.config)()
    last = target_model.model.layers[-1]
    mid = drafter.layers[0]
    H = drafter.config.hidden_size
    if H != t_cfg.hidden_size or (drafter.config.num_attention_heads, drafter.config.num_key_value_heads) != \
            (t_cfg.num_attention_heads, t_cfg.num_key_value_heads) or not hasattr(last.mlp, "gate_proj"):
        raise ValueError("a last-layer warm start needs the target's hidden size, heads and a dense MLP")
    fc = drafter.fc.weight
    fc.zero_()
    fc[:, fc.shape[1] - H:] = torch.eye(H)
    attn = last.self_attn
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        mine, theirs = getattr(mid.self_attn, name), getattr(attn, name)
        if name == "o_proj":
            mine.weight.copy_(theirs.weight.float())
        else:
            mine.weight.zero_()
            mine.weight[:, H:] = theirs.weight.float()
        if mine.bias is not None:
            mine.bias.copy_(theirs.bias.float() if theirs.bias is not None else torch.zeros_like(mine.bias))
    mid.hidden_norm.weight.copy_(last.input_layernorm.weight.float())
    mid.post_attention_layernorm.weight.copy_(last.post_attention_layernorm.weight.float())
    gate, up, down = (getattr(last.mlp, n).weight.float() for n in ("gate_proj", "up_proj", "down_proj"))
    width = mid.mlp.gate_proj.weight.shape[0]
    keep = (gate.norm(dim=1) * up.norm(dim=1) * down.norm(dim=0)).topk(width).indices.sort().values
    mid.mlp.gate_proj.weight.copy_(gate[keep])
    mid.mlp.up_proj.weight.copy_(up[keep])
    mid.mlp.down_proj.weight.copy_(down[:, keep])
    drafter.norm.weight.copy_(target_model.model.norm.weight.float())
    for layer in drafter.layers[1:]:     # later layers start as the identity (their residual adds 0)
        layer.self_attn.o_proj.weight.zero_()
        if layer.self_attn.o_proj.bias is not None:
            layer.self_attn.o_proj.bias.zero_()
        layer.mlp.down_proj.weight.zero_()


def continue_from(drafter: Drafter, path: str | Path, target_model, dataset) -> None:
    """Start from a trained drafter's weights (more training on new data) instead of the
    target-derived initialisation; it keeps its own draft vocabulary and mask token."""
    from completion.speculative import load_drafter

    trained = load_drafter(str(path), target_model, device="cpu", dtype=torch.float32)
    a, b = trained.config, drafter.config
    for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "draft_vocab_size", "aux_layer_ids",
                "attention_bias"):
        if getattr(a, key) != getattr(b, key):
            raise SystemExit(f"--init {path}: its {key} {getattr(a, key)} differs from this run's {getattr(b, key)}")
    with torch.no_grad():
        for name, tensor in trained.state_dict().items():
            drafter.state_dict()[name].copy_(tensor)
    drafter.config = replace(b, mask_token_id=a.mask_token_id)
    counts = dataset.label_counts(target_model.config.vocab_size)
    vocab = trained.to_target_ids(torch.arange(a.draft_vocab_size))
    drafter.vocab_coverage = float(counts[vocab].sum()) / max(1, int(counts.sum()))


# ---------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


class DrafterTrainer:
    def __init__(self, drafter: Drafter, target_model, dataset, cfg: TrainConfig, *, work: Path | None = None,
                 log: Path | None = None, heldout=None):
        self.drafter, self.dataset, self.cfg, self.work, self.log = drafter, dataset, cfg, work, log
        self.heldout = heldout          # a SynthDataset whose AL is logged every cfg.eval_every steps
        self.targets = make_targets(target_model, drafter)
        drafter.train().requires_grad_(True)
        self.params = [p for p in drafter.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay,
                                     fused=True)   # one kernel: 34 vs 145 ms a step for a 19M drafter on 2 cores
        self.step, self.seen, self.tokens, self.elapsed = 0, 0, 0, 0.0
        self.epoch, self.cursor = 0, 0
        self.order = self._order()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.metrics = Metrics(cfg.num_depths)
        self.history: list[dict] = []
        self.clock = time.perf_counter   # what cfg.minutes is measured on (eyas adapt: CPU time)

    def _order(self) -> list[int]:
        return torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.cfg.seed * 1000 +
                                                                                        self.epoch)).tolist()

    def next_sample(self):
        if self.cursor >= len(self.order):
            self.epoch, self.cursor = self.epoch + 1, 0
            self.order = self._order()
        i = self.order[self.cursor]
        self.cursor += 1
        return self.dataset[i]

    # -- checkpoints ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"drafter": self.drafter.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                "seen": self.seen, "tokens": self.tokens, "elapsed": self.elapsed, "epoch": self.epoch, "cursor": self.cursor,
                "generator": self.generator.get_state(), "config": asdict(self.cfg), "history": self.history,
                "drafter_config": self.drafter.config.to_json()}

    def save(self) -> None:
        if self.work is None:
            return
        self.work.mkdir(parents=True, exist_ok=True)
        tmp = self.work / "ckpt.tmp"
        torch.save(self.state(), tmp)
        tmp.replace(self.work / "ckpt.pt")

    def restore(self, path: Path) -> None:
        ck = torch.load(path, weights_only=False, map_location="cpu")
        saved = {**asdict(TrainConfig()), **ck["config"]}   # fields added since keep their defaults
        if self.cfg.minutes:            # a time-boxed run keeps the total it fitted
            self.cfg.steps = saved["steps"]
        elif self.cfg.steps != saved["steps"]:   # allowed: the cosine re-plans its end from here
            if self.cfg.steps <= ck["step"]:
                raise SystemExit(f"--steps {self.cfg.steps}: the checkpoint is already at step {ck['step']}")
            log_line(self.log, f"--steps {saved['steps']} -> {self.cfg.steps}: the cosine now ends there")
            saved["steps"] = self.cfg.steps
        if saved != asdict(self.cfg):
            diff = {k: (v, asdict(self.cfg).get(k)) for k, v in saved.items() if asdict(self.cfg).get(k) != v}
            raise SystemExit(f"--resume with other settings than the checkpoint: {diff}")
        self.drafter.load_state_dict(ck["drafter"])
        self.opt.load_state_dict(ck["opt"])
        self.step, self.seen, self.elapsed = ck["step"], ck["seen"], ck["elapsed"]
        self.tokens = ck.get("tokens", 0)
        self.epoch, self.cursor = ck["epoch"], ck["cursor"]
        self.order = self._order()
        self.generator.set_state(ck["generator"])
        self.history = ck["history"]

    # -- steps ---------------------------------------------------------------------------------------
    def train_step(self) -> float:
        cfg = self.cfg
        lr = lr_at(self.step, cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss = 0.0
        device = self.drafter.fc.weight.device.type
        for _ in range(cfg.seqs_per_step):
            sample = self.next_sample()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.autocast == "bf16"):
                if cfg.method == "peagle":
                    now = replace(cfg, depth=cfg.depth_at(self.step))
                    loss += peagle_sequence_step(self.drafter, self.targets, sample, now, self.generator,
                                                 self.metrics, scale=1.0 / cfg.seqs_per_step)
                else:
                    loss += eagle3_sequence_step(self.drafter, self.targets, sample, cfg, self.metrics,
                                                 scale=1.0 / cfg.seqs_per_step)
            self.seen += 1
            self.tokens += len(sample.ids)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return loss / cfg.seqs_per_step

    def evaluate(self) -> dict[int, float]:
        """Held-out AL at K = 4 and 10 (completion.training.heldout), logged and kept in the history."""
        from .heldout import heldout_acceptance

        self.drafter.eval()
        al = heldout_acceptance(self.drafter, self.heldout, self.cfg.method)
        self.drafter.train()
        self.history.append({"step": self.step, "tokens": self.tokens, "elapsed": round(self.elapsed, 1),
                             "heldout_al": al})
        log_line(self.log, f"held-out step {self.step} tokens {self.tokens}: " +
                 " ".join(f"AL@{k} {v:.2f}" for k, v in al.items()))
        return al

    def run(self, until: int | None = None) -> dict:
        """Train to cfg.steps (or stop early at step `until`, as an interruption would)."""
        cfg = self.cfg
        budget = TimeBudget(cfg.minutes, clock=self.clock)
        log_line(self.log, f"train {cfg.method}: {sum(p.numel() for p in self.params) / 1e6:.2f}M trainable params, "
                           f"{len(self.dataset)} sequences, step {self.step}/{cfg.steps}, device "
                           f"{self.drafter.fc.weight.device}, threads {torch.get_num_threads()}")
        if self.heldout is not None and cfg.eval_every and self.step == 0:
            self.evaluate()             # where the initialisation starts (warm against cold)
        t_start = time.perf_counter() - self.elapsed
        last_ckpt = time.perf_counter()
        window_t = time.perf_counter()
        while self.step < (cfg.steps if until is None else min(cfg.steps, until)):
            self.train_step()
            self.elapsed = time.perf_counter() - t_start
            cfg.steps = budget.fit(self.step, cfg.steps, self.log)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                m = self.metrics
                acc = m.acc()
                rate = (time.perf_counter() - window_t) / max(1, cfg.log_every)
                window_t = time.perf_counter()
                eta = rate * (cfg.steps - self.step)
                shown = " ".join(f"{a:.2f}" if a == a else "-" for a in acc)
                entry = {"step": self.step, "seqs": self.seen, "tokens": self.tokens, "loss": m.loss / max(1, m.loss_n),
                         "acc": acc, "supervised": m.supervised, "elements": m.elements,
                         "lr": lr_at(self.step - 1, cfg), "elapsed": round(self.elapsed, 1)}
                self.history.append(entry)
                log_line(self.log, f"step {self.step}/{cfg.steps} seqs {self.seen} loss {entry['loss']:.4f} "
                                   f"acc/depth [{shown}] sup {m.supervised} rows {m.elements} lr {entry['lr']:.2e} "
                                   f"{rate:.2f}s/step elapsed {self.elapsed:.0f}s ETA {eta:.0f}s")
                m.reset()
            if self.heldout is not None and cfg.eval_every and (self.step % cfg.eval_every == 0
                                                                or self.step == cfg.steps):
                self.evaluate()
            if self.work is not None and time.perf_counter() - last_ckpt > cfg.ckpt_every:
                self.save()
                last_ckpt = time.perf_counter()
                log_line(self.log, f"checkpoint step {self.step} -> {self.work / 'ckpt.pt'}")
        self.save()
        self.drafter.eval().requires_grad_(False)
        self.drafter.refresh()
        trained = [h for h in self.history if "loss" in h]
        return {"steps": self.step, "sequences": self.seen, "tokens": self.tokens, "wall_s": round(self.elapsed, 1),
                "final": trained[-1] if trained else None,
                "heldout_al": [h for h in self.history if "heldout_al" in h]}


def export_drafter(drafter: Drafter, out_dir: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Save a bf16 copy of the drafter in the vLLM layout (the trained fp32 copy is left as is)."""
    import copy

    from completion.speculative import save_drafter

    shared = drafter._shared
    drafter._shared = {}
    clone = copy.deepcopy(drafter)
    drafter._shared = shared
    clone.to(dtype)
    clone.d2t = drafter.d2t.long()
    path = save_drafter(clone, out_dir)
    for f in path.iterdir():
        f.chmod(0o644)          # shipped files: readable like the target's
    return path


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from completion.models import resolve_model
    from completion.training.synthesis import SynthDataset

    d = TrainConfig()
    ap = argparse.ArgumentParser(prog="eyas train drafter", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default=str(REPO_ROOT / "out/pocket/synth"), help="synthesis output (manifest.json)")
    ap.add_argument("--target", default="pocket", help="model name (eyas models) or directory")
    ap.add_argument("--heldout", default=None, help="held-out synthesis output: AL logged every --eval-every steps")
    ap.add_argument("--out", default=None, help="drafter directory (default: the shipped P-EAGLE drafter, or "
                                                "out/pocket/eagle3-drafter for --method eagle3)")
    ap.add_argument("--work", default=None, help="checkpoint directory (default: out/pocket/<method>-work)")
    ap.add_argument("--log", default=None, help="progress log (default: out/pocket/<method>-train.log)")
    ap.add_argument("--resume", action="store_true", help="continue from <work>/ckpt.pt")
    ap.add_argument("--init", default=None, metavar="DIR",
                    help="start from this trained drafter (same shape) instead of from the target")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--save-dtype", default="bfloat16", choices=("bfloat16", "float32"))
    for f in asdict(d):
        ap.add_argument("--" + f.replace("_", "-"), type=type(getattr(d, f)), default=getattr(d, f))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(d)})
    if args.target != "pocket" and not (args.out and args.work and args.log):
        ap.error("a target other than pocket needs --out, --work and --log (the defaults are the pocket pair's)")
    out = Path(args.out or (REPO_ROOT / ("completion/models/pocket/drafter" if cfg.method == "peagle"
                                         else "out/pocket/eagle3-drafter")))
    work = Path(args.work or REPO_ROOT / f"out/pocket/{cfg.method}-work")
    log = Path(args.log or REPO_ROOT / f"out/pocket/{cfg.method}-train.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    log_line(log, f"eyas train drafter {' '.join(argv if argv is not None else sys.argv[1:])}")

    target_dir = resolve_model(args.target)
    target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    dataset = SynthDataset(args.data)
    torch.manual_seed(cfg.seed)
    init_bias = bool(args.init) and json.loads((Path(args.init) / "config.json").read_text()).get("attention_bias", False)
    drafter = build_drafter(target, dataset, cfg, mask_token_id=pick_mask_token(tokenizer.get_vocab(),
                                                                                target.config.vocab_size),
                            attention_bias=init_bias)
    if args.init:
        continue_from(drafter, args.init, target, dataset)
    drafter.to(device)
    drafter.inv_freq = drafter.inv_freq.to(device)
    log_line(log, f"data {args.data}: {len(dataset)} sequences, {dataset.manifest and sum(s['tokens'] for s in dataset.manifest['shards'])} "
                  f"tokens; draft vocab {drafter.config.draft_vocab_size} covers {100 * drafter.vocab_coverage:.1f}% "
                  f"of the target's generated tokens; mask token {drafter.config.mask_token_id}")
    trainer = DrafterTrainer(drafter, target, dataset, cfg, work=work, log=log,
                             heldout=SynthDataset(args.heldout) if args.heldout else None)
    ckpt = work / "ckpt.pt"
    if args.resume and ckpt.exists():
        trainer.restore(ckpt)
        log_line(log, f"resumed from {ckpt} at step {trainer.step}")
    elif ckpt.exists() and not args.resume:
        log_line(log, f"{ckpt} exists: pass --resume to continue it (or remove it to start over)")
        return 2
    summary = trainer.run()
    path = export_drafter(drafter, out, getattr(torch, args.save_dtype))
    summary.update(out=str(path), method=cfg.method, config=asdict(cfg),
                   size_bytes=sum(f.stat().st_size for f in path.iterdir()),
                   vocab_coverage=drafter.vocab_coverage)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    log_line(log, f"saved {path} ({summary['size_bytes'] / 1e6:.1f} MB): {json.dumps(summary['final'])}")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
