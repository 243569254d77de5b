"""A lean Qwen3 / Qwen3-MoE / Qwen2 / Llama forward in plain torch over a static KV cache.

Same arithmetic as the Hugging Face model (RMSNorm in float32, per-head q/k RMSNorm for Qwen3,
q/k/v biases for Qwen2, RoPE with rotate-half, GQA attention, SiLU-gated MLP, softmax top-k
routing), without its per-call
machinery: projections are fused (q|k|v, gate|up), RoPE comes from precomputed tables, keys and
values are written in place into preallocated buffers, and MoE experts run as two grouped matmuls.

`hidden_states` is the part worth compiling (fixed shapes for a given token count and attention
length); `logits` applies lm_head to just the rows the caller keeps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import native
from ..target import PrefillStopped
from .cache import RopeTables, StaticKVCache
from .config import LeanConfig
from .weights import (FEW_ROWS, Int4Weight, Int8Weight, LayerWeights, LeanWeights, PackedWeight, TileWeight,
                      can_pack, dense_matrices, pack, weights_from_hf)

ROW_BY_ROW_MAX = 19   # rows of a verification (K + 1, K <= 18) that attend one by one below float32
assert ROW_BY_ROW_MAX <= FEW_ROWS   # verification rows must run the decode step's kernels


def linear(x: torch.Tensor, w, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w.T + bias for every kind of weight the lean model holds. Below float32 a row's bits
    must not depend on how many rows come with it (verification rows equal decode steps): the
    kernels keep that for the rows `independent_rows` measured on this CPU, and longer
    verifications run in blocks of that many."""
    n = x.shape[0]   # tested last: a test on it would guard compiled graphs on their row count
    if not torch.compiler.is_compiling() and x.dtype != torch.float32 and x.device.type == "cpu" \
            and 1 < n <= ROW_BY_ROW_MAX:
        block = independent_rows(w)
        if block < n:
            return torch.cat([product(x[i:i + block], w, bias) for i in range(0, n, block)])
    return product(x, w, bias)


def product(x: torch.Tensor, w, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w.T + bias through the kernel that suits this weight and this many rows."""
    if isinstance(w, TileWeight):
        if x.shape[0] <= FEW_ROWS and not torch.compiler.is_compiling():
            return w.mm(x, bias)
        w = w.dense
    if isinstance(w, (Int8Weight, Int4Weight)):
        if x.shape[0] <= FEW_ROWS:
            return w.mm(x.contiguous(), bias)
        w = w.dense
    if isinstance(w, PackedWeight):
        if not torch.compiler.is_compiling():   # inductor cannot lower the packed op
            return w.mm(x, bias)
        w = w.dense
    if x.dtype == torch.float32 or x.device.type != "cpu":
        return F.linear(x, w, bias)
    # one row: torch's bf16 GEMM takes a slow path for it where GEMV (mv) streams the weight at
    # full speed (lm_head of Qwen2.5-Coder-0.5B, 2 threads: 15.7 vs 10.9 ms); the bias goes apart
    # so that one row and several round alike
    out = torch.mv(w, x[0])[None] if x.shape[0] == 1 else F.linear(x, w)
    return out if bias is None else out + bias


_independent_rows: dict[tuple, int] = {}
# outputs compared at two rows (more at more rows): where a kernel rounds several rows apart from
# one, about 1 output in 2,000 differs (oneDNN's packed [896, 4864] on AVX512-BF16: 12-21 in 60,000)
PROBE_OUTPUTS = 20_000


def independent_rows(w) -> int:
    """How many rows (up to ROW_BY_ROW_MAX) `product` takes together with each row's bits equal to
    that row's alone, measured once per kind of weight, shape and thread count on this CPU. The
    kernels' blocking differs between CPUs: oneDNN's packed bf16 matrices keep rows apart with AMX,
    but with AVX512-BF16 alone the [896, 4864] down projection of Qwen2.5-Coder-0.5B rounds two
    rows apart from one (and a CI machine parted verification rows from decode steps), so
    losslessness is measured here, not assumed."""
    plain = w
    while not isinstance(plain, torch.Tensor):
        plain = plain.dense
    key = (type(w), tuple(plain.shape), plain.dtype, torch.get_num_threads())
    if key not in _independent_rows:
        block = ROW_BY_ROW_MAX
        for draw in range(-(-PROBE_OUTPUTS // (2 * plain.shape[0]))):
            x = torch.randn(block, plain.shape[1], generator=torch.Generator().manual_seed(draw)).to(plain.dtype)
            alone = torch.cat([product(x[i:i + 1], w) for i in range(block)])
            n = 2
            while n <= block and torch.equal(product(x[:n], w), alone[:n]):
                n += 1
            block = n - 1
            if block == 1:
                break
        _independent_rows[key] = block
    return _independent_rows[key]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """As Hugging Face's Qwen3RMSNorm (normalise in float32, cast back, then scale), with torch's
    one-kernel normalisation instead of five elementwise ops: decode steps are op-count bound.
    In float32 the scale goes inside that kernel too (same rounding, one op fewer); `weight` may
    also hold one row per head ([heads, D] for x [n, heads, D])."""
    if x.dtype == torch.float32 and weight.shape == x.shape[-1:]:
        return F.rms_norm(x, x.shape[-1:], weight, eps)
    if weight.shape == x.shape[-1:] and native.rows_ready(x) and not torch.compiler.is_compiling():
        return native.rms_norm(x, weight, eps)   # the same bits in one pass (kernels/rows.c)
    return weight * F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the rotate-half convention. x: [n, heads, D]; cos, sin: [n, 1, D] with `sin`
    signed as RopeTables stores it, so rotate-half's slice-negate-cat is one flip of the halves."""
    swapped = x.unflatten(-1, (2, x.shape[-1] // 2)).flip(-2).flatten(-2)
    return torch.addcmul(x * cos, swapped, sin)


def attend_one(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, length: int) -> torch.Tensor:
    """One query's attention over cache rows [0, length): q [heads, D] -> [heads, D]. The query
    heads that share a KV head go in as that head's rows (heads are KV-major, as Hugging Face's
    repeat_kv orders them), which SDPA runs ~1.7x faster than one row with enable_gqa (Qwen2.5's
    14 / 2 heads over 1k rows, 1 thread: 51 vs 87 us). Decode steps and verification rows both
    come here, so they keep the same bits."""
    kv_heads, d = k_cache.shape[0], q.shape[-1]
    out = F.scaled_dot_product_attention(q.view(1, kv_heads, -1, d), k_cache[None, :, :length], v_cache[None, :, :length])
    return out.view(-1, d)


class LeanModel:
    def __init__(self, cfg: LeanConfig, weights: LeanWeights):
        self.cfg, self.w = cfg, weights
        self.dtype, self.device = weights.embed.dtype, weights.embed.device
        self.rope = RopeTables(cfg, self.dtype, self.device)
        self.compiled_steps = None   # its CompiledSteps, one for every engine over it (torch_engine.compile_lean)

    @classmethod
    def from_hf(cls, hf_model) -> "LeanModel":
        cfg = LeanConfig.from_hf(hf_model.config)
        weights = weights_from_hf(hf_model, cfg)
        if can_pack(weights):
            pack(weights)
        return cls(cfg, weights)

    def measure_independent_rows(self) -> None:
        """Measure, now, how many verification rows each matrix's kernel takes together
        (independent_rows), so that the first verification does not pay for it (~1-2 s)."""
        if self.dtype != torch.float32 and self.device.type == "cpu":
            for w in dense_matrices(self.w):
                independent_rows(w)

    def new_cache(self, capacity: int = 0) -> StaticKVCache:
        return StaticKVCache(self.cfg, self.dtype, self.device, capacity)

    def reserve(self, cache: StaticKVCache, needed: int) -> None:
        """Make room for `needed` positions in the cache and the RoPE tables."""
        cache.reserve(needed)
        self.rope.reserve(cache.capacity)

    @torch.inference_mode()   # the cache and RoPE tables are inference tensors (see cache.py)
    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: StaticKVCache,
                      attend_len: int, hidden_layers: tuple[int, ...] = (),
                      masked: bool = True, should_stop=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids, positions: [n], positions consecutive up to attend_len - 1. Writes the tokens'
        keys/values at `positions`, attends over cache rows [0, attend_len), and returns
        (final-normed states [n, H], the residual streams entering `hidden_layers` concatenated
        [n, len * H] or None). `masked=False` is for a single
        token whose position is attend_len - 1 (it may see every row, so no mask is built).
        `should_stop()`, when given, is asked before each layer: True raises PrefillStopped."""
        return self.layers(input_ids, positions, cache.k, cache.v, self.rope.cos, self.rope.sin, attend_len,
                           hidden_layers, masked, should_stop)

    def layers(self, input_ids, positions, k_cache, v_cache, cos_table, sin_table, attend_len: int,
               hidden_layers: tuple[int, ...], masked: bool, should_stop=None):
        """hidden_states with every growable buffer passed in, so that a compiled graph takes
        them as inputs (of any size) instead of baking in the ones it was traced with."""
        x = F.embedding(input_ids, self.w.embed)
        cos, sin = cos_table[positions].unsqueeze(1), sin_table[positions].unsqueeze(1)
        n = input_ids.shape[0]
        attend = "one" if not masked else "rows" if self.dtype != torch.float32 and n <= ROW_BY_ROW_MAX \
            else "tiles" if self.attends_on_tiles() else "mask"
        mask = None
        if attend == "mask":   # causal with an offset: row i sees cache rows up to its own position
            # additive (0 / -inf) rather than boolean: SDPA turns a boolean mask into this in every
            # layer; built once, the same bits come out ~5% faster (1k-token prefill, 128-row chunks)
            unseen = torch.arange(attend_len, device=x.device)[None, :] > positions[:, None]
            mask = torch.zeros(unseen.shape, dtype=x.dtype, device=x.device).masked_fill_(unseen, float("-inf"))
            # one block of rows per query head of a KV head (see attention)
            mask = mask.repeat(self.cfg.num_heads // self.cfg.num_kv_heads, 1)
        # references to the residual stream, no copies until the one cat below. Matched by
        # comparison, not looked up by key: a compiled graph sees the layer numbers as symbolic
        # ints, and a dict keyed by them raised KeyError there (dynamo then skipped the whole graph)
        captured = [None] * len(hidden_layers)
        for i, layer in enumerate(self.w.layers):
            if should_stop is not None and should_stop():
                raise PrefillStopped()
            for j, wanted in enumerate(hidden_layers):
                if wanted == i:
                    captured[j] = x
            h = rms_norm(x, layer.input_norm, self.cfg.rms_norm_eps)
            x = x + self.attention(h, layer, cos, sin, positions, k_cache[i], v_cache[i], attend_len, attend, mask)
            h = rms_norm(x, layer.post_norm, self.cfg.rms_norm_eps)
            x = x + (self.experts(h, layer) if layer.router is not None else self.mlp(h, layer))
        aux = torch.cat(captured, dim=-1) if hidden_layers else None
        return rms_norm(x, self.w.norm, self.cfg.rms_norm_eps), aux

    def logits(self, normed: torch.Tensor) -> torch.Tensor:
        return linear(normed, self.w.lm_head).float()

    def attends_on_tiles(self) -> bool:
        """Whether a prefill chunk's attention runs on the AMX tile unit (kernels/attention.c)."""
        return (self.dtype == torch.bfloat16 and self.device.type == "cpu" and self.cfg.head_dim % 64 == 0
                and self.cfg.head_dim <= 256 and native.has_amx() and not torch.compiler.is_compiling())

    def attention(self, x, w: LayerWeights, cos, sin, positions, k_cache, v_cache, attend_len, attend: str, mask):
        cfg, n = self.cfg, x.shape[0]
        qkv = linear(x, w.qkv, w.qkv_bias)
        if w.qk_norm is None and native.rows_ready(qkv) and cfg.head_dim % 32 == 0 and not torch.compiler.is_compiling():
            # one pass: rotate as Hugging Face rounds, write keys and values into the cache (kernels/rows.c)
            q = native.rope_to_cache(qkv, cfg.num_heads, cfg.num_kv_heads, positions, cos[:, 0], sin[:, 0],
                                     k_cache, v_cache)
        else:
            # queries and keys side by side: one norm (per-head weights, Qwen3 only) and one rotation for both
            qk = qkv[:, : cfg.q_size + cfg.kv_size].view(n, cfg.num_heads + cfg.num_kv_heads, cfg.head_dim)
            if w.qk_norm is not None:
                qk = rms_norm(qk, w.qk_norm, cfg.rms_norm_eps)
            q, k = rotate(qk, cos, sin).split([cfg.num_heads, cfg.num_kv_heads], 1)
            v = qkv[:, cfg.q_size + cfg.kv_size:].view(n, cfg.num_kv_heads, cfg.head_dim)
            # cache layout [kv_heads, T, D]: the rows one attention reads are a plain slice
            k_cache.index_copy_(1, positions, k.transpose(0, 1))
            v_cache.index_copy_(1, positions, v.transpose(0, 1))
        if attend in ("one", "rows") and native.decode_attention_ready(q, k_cache):
            out = native.decode_attention(q, k_cache, v_cache, attend_len - n)   # rows apart, K and V read once
        elif attend == "one":   # one token at the end: it sees every row
            out = attend_one(q[0], k_cache, v_cache, attend_len)[None]
        elif attend == "rows":
            out = self.attend_row_by_row(q, k_cache, v_cache, attend_len)
        elif attend == "tiles":   # a prefill chunk: positions attend_len - n .. attend_len - 1
            out = native.prefill_attention(q, k_cache, v_cache, attend_len - n)
        else:   # as attend_one: a KV head's query heads as its rows, ~18% faster than enable_gqa
            kv_heads, d = cfg.num_kv_heads, cfg.head_dim
            out = F.scaled_dot_product_attention(q.transpose(0, 1).reshape(1, kv_heads, -1, d),
                                                 k_cache[None, :, :attend_len], v_cache[None, :, :attend_len],
                                                 attn_mask=mask).view(cfg.num_heads, n, d).transpose(0, 1)
        return linear(out.reshape(n, cfg.q_size), w.o, w.o_bias)

    @staticmethod
    def attend_row_by_row(q, k_cache, v_cache, attend_len: int) -> torch.Tensor:
        """Attention for a few consecutive rows (a verification), each row as the one-token step
        at its position computes it. In bf16 the projections already give every row the same bits
        whatever the row count, but SDPA over several queries rounds differently from one query
        (tests/test_lean_forward.py fails with one batched call); row by row, they agree. float32
        keeps the one batched call: there speculative and plain outputs agreed on every prompt
        measured (eval acceptance, engines bench), and one-row projections round differently anyway."""
        n = q.shape[0]
        first = attend_len - n
        return torch.stack([attend_one(q[i], k_cache, v_cache, first + i + 1) for i in range(n)])

    @staticmethod
    def mlp(x, w: LayerWeights):
        gate_up = linear(x, w.gate_up)
        if native.rows_ready(gate_up) and not torch.compiler.is_compiling():
            return linear(native.silu_mul(gate_up), w.down)   # the same bits in one pass (kernels/rows.c)
        gate, up = gate_up.chunk(2, dim=-1)
        return linear(F.silu(gate) * up, w.down)

    def experts(self, x, w: LayerWeights):
        """Top-k routing, then every (token, expert) pair in two grouped matmuls: pairs are sorted
        by expert and each expert multiplies its contiguous run of rows, so no loop over experts
        and the shapes depend only on the number of tokens."""
        n, k = x.shape[0], self.cfg.num_experts_per_tok
        num_experts = w.router.shape[0]
        router_logits = F.linear(x, w.router)
        weights, chosen = F.softmax(router_logits, dim=-1, dtype=torch.float32).topk(k, dim=-1)
        if self.cfg.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        pair_expert = chosen.flatten()                          # [n * k], pair p is token p // k
        order = pair_expert.argsort(stable=True)
        per_expert = (pair_expert[:, None] == torch.arange(num_experts, device=x.device)).sum(0)
        ends = per_expert.cumsum(0).to(torch.int32)             # grouped_mm's row offsets
        rows = x[order // k]
        gate, up = torch._grouped_mm(rows, w.experts_gate_up.transpose(1, 2), offs=ends).chunk(2, dim=-1)
        out_sorted = torch._grouped_mm(F.silu(gate) * up, w.experts_down.transpose(1, 2), offs=ends)
        out = torch.empty_like(out_sorted).index_copy_(0, order, out_sorted)
        return (out.view(n, k, -1) * weights.to(x.dtype)[..., None]).sum(dim=1)
