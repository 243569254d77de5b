"""The lean model's weights, taken from an already-loaded Hugging Face Qwen3 / Qwen3-MoE / Qwen2 / Llama.

Going through the loaded model rather than the safetensors files means Hugging Face has already
done every checkpoint conversion (per-expert tensors stacked, tied embeddings resolved, dtype and
device applied), and nothing is held twice: norms, embeddings, lm_head and expert stacks are the
very same tensors, and the projections we fuse (q|k|v, gate|up, and the q|k|v biases) become the
storage that the Hugging Face parameters then view, so the reference model keeps working on the
same memory.

In float32 every projection and lm_head is stored column-major: the [out, in] matrix is a
transposed view of a contiguous [in, out] buffer. On a CPU in float32, MKL multiplies a few rows by
such a weight with fewer passes over it than by a row-major one, so a verification costs less
(pocket target, 1 thread, `forward_speed`'s verify_ms_by_rows: 5 rows 5.1 → 4.4-4.5 ms, 8 rows
6.6-6.7 → 4.9-6.1, one row unchanged). Below float32 they stay row-major: there one row times a
column-major bf16 matrix is the slower product (Qwen2.5-Coder-0.5B's lm_head, 2 threads: 15.5 ms
row-major, 19.2 column-major; gate|up 0.65 vs 0.65-0.9 ms for 1-8 rows).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from . import native
from .config import LeanConfig

PACK_ROWS = 128   # the row count oneDNN lays packed weights out for (256, a prefill chunk, measured no faster)


@dataclass
class PackedWeight:
    """A bf16 weight also held in oneDNN's blocked layout, packed once at load. torch's bf16
    `linear` on a CPU hands oneDNN the plain [N, K] matrix, which re-lays it out for the matrix
    units on every call: for a 128-row prefill chunk that copy costs about as much as the product
    (Qwen2.5-Coder-0.5B's gate|up, 24 distinct copies so none is cached, 1 thread: 5.8 ms plain,
    2.8 packed), and for a few rows it is the slower path too (5 rows 2.4 vs 1.6 ms; one row 2.2
    vs 1.55, `mv` 1.6). Rows of 1 to 32 get the bits one row gets
    alone (and that `mv` gets), so verification rows still equal decode steps. The cost is memory:
    a second copy of every packed matrix (the plain one stays, the Hugging Face model's own)."""
    packed: torch.Tensor   # opaque mkldnn tensor
    dense: torch.Tensor    # [N, K] the plain weight: torch.compile cannot take the packed one

    @classmethod
    def of(cls, w: torch.Tensor) -> "PackedWeight":
        return cls(torch.ops.mkldnn._reorder_linear_weight(w, PACK_ROWS), w)

    def mm(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")


def can_pack(weights: "LeanWeights") -> bool:
    return (weights.embed.dtype == torch.bfloat16 and weights.embed.device.type == "cpu"
            and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack(weights: "LeanWeights") -> None:
    """The dense projections as PackedWeight (lm_head stays plain for oneDNN: a prefill needs one
    row of it, which `mv` computes as fast, and packing it would copy the largest matrix); then,
    where the tile kernel runs, every projection and lm_head also as TileWeight for few rows."""
    for w in weights.layers:
        w.qkv, w.o = PackedWeight.of(w.qkv), PackedWeight.of(w.o)
        if w.gate_up is not None:
            w.gate_up, w.down = PackedWeight.of(w.gate_up), PackedWeight.of(w.down)
    if native.available() and all(tileable(m) for m in dense_matrices(weights)):
        for w in weights.layers:
            w.qkv, w.o = TileWeight.of(w.qkv), TileWeight.of(w.o)
            if w.gate_up is not None:
                w.gate_up, w.down = TileWeight.of(w.gate_up), TileWeight.of(w.down)
        weights.lm_head = TileWeight.of(weights.lm_head)


def dense_matrices(weights: "LeanWeights") -> list:
    mats = [weights.lm_head]
    for w in weights.layers:
        mats += [m for m in (w.qkv, w.o, w.gate_up, w.down) if m is not None]
    return mats


def tileable(w) -> bool:
    plain = w.dense if isinstance(w, PackedWeight) else w
    return plain.dtype == torch.bfloat16 and plain.shape[1] % native.K_MULTIPLE == 0


@dataclass
class TileWeight:
    """A bf16 weight also in the AMX tile kernel's layout (native.py, kernels/bf16_rows.c), for
    1 to FEW_ROWS rows: it reads the weight once for up to 16 rows, so a verification of K + 1
    rows costs about one decode step, and a row's bits never depend on the rows beside it.
    Qwen2.5-Coder-0.5B, all matrices of a step, 2 threads: 36 ms for 1 to 16 rows where oneDNN
    (packed) with `mv` for lm_head took 43 ms for one row and 48-51 for 8-16. Longer inputs
    (prefill chunks) use `dense`. The cost is memory: one more copy of the weights (~1 GB)."""
    packed: torch.Tensor                 # [N/64, K/2, 64, 2]
    n: int
    dense: torch.Tensor | PackedWeight   # the weight it came from, for long inputs

    @classmethod
    def of(cls, w: torch.Tensor | PackedWeight) -> "TileWeight":
        plain = w.dense if isinstance(w, PackedWeight) else w
        return cls(native.pack_rows(plain), plain.shape[0], w)

    def mm(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return native.rows_mm(x, self.packed, self.n, None if bias is None else bias.float())


# Rows up to which a quantized or tile weight runs its own kernel. torch's weight-only int8/int4 CPU
# kernels read fewer bytes, which wins while a product is bound by reading the weight (decode
# steps, verifications), but they do not use the matrix units: at 128 rows (a prefill chunk) they
# are ~10x slower than bf16 (Qwen2.5-Coder-0.5B's gate|up: 13-15 ms vs 1.5 ms). Longer inputs use
# the bf16 weight the quantized one came from (packed when it was). The
# bound covers every verification (model.ROW_BY_ROW_MAX rows), so each verification row still
# gets the bits of the one-token step at its position.
FEW_ROWS = native.FEW_ROWS


@dataclass
class Int8Weight:
    """A weight-only int8 matrix with one scale per output row. For few rows it runs on the tile
    kernel where the CPU has one (`tiles`: kernels/bf16_rows.c widens the int8 stream to bf16 block
    by block, so K + 1 verification rows cost about one decode step and P-EAGLE pays in int8:
    docs/bench-engines.md), else on torch's `_weight_int8pack_mm`, whose 5 rows cost ~2 steps. Both want
    bf16 activations (torch's f32 path is several times slower than f32 `linear`), so int8 runs
    with a bf16 model."""
    q: torch.Tensor       # [N, K] int8
    scale: torch.Tensor   # [N], the activations' dtype
    dense: torch.Tensor | PackedWeight   # the bf16 weight it came from (see FEW_ROWS)
    tiles: torch.Tensor | None = None    # q in the tile kernel's layout (native.pack_rows)
    tile_scale: torch.Tensor | None = None   # scale in float32, for the tile kernel

    @classmethod
    def of(cls, w: torch.Tensor) -> "Int8Weight":
        # one float32 copy, worked on in place: quantizing at every load is then 2x faster
        # (Qwen2.5-Coder-0.5B's lm_head: 1.45 -> 0.7 s at 1 thread), bits unchanged
        f = w.float()
        lo, hi = f.aminmax(dim=1)
        scale = torch.maximum(-lo, hi).clamp_(min=1e-8).div_(127)
        q = f.div_(scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
        weight = cls(q.contiguous(), scale.to(w.dtype), w)
        if w.device.type == "cpu" and q.shape[1] % native.K_MULTIPLE == 0 and native.available():
            weight.tiles, weight.tile_scale = native.pack_rows(weight.q), weight.scale.float()
        return weight

    def mm(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.tiles is not None and not torch.compiler.is_compiling():
            return native.rows_mm(x, self.tiles, self.q.shape[0], None if bias is None else bias.float(),
                                  scale=self.tile_scale)
        out = torch._weight_int8pack_mm(x, self.q, self.scale)
        return out if bias is None else out + bias


# Input columns per scale and zero point (see Int4Weight). Qwen2.5-Coder-0.5B over 768 tokens of
# this repo's source, every projection and lm_head int4, against bf16: groups of 32 / 64 / 128 keep
# the greedy token at 87% / 84% / 80% of positions (KL 0.063 / 0.098 / 0.163); the kernel runs
# within ~10% of the same speed for all three (lm_head, one row: 3.9 / 3.6 / 3.4 ms).
INT4_GROUP = 32


@dataclass
class Int4Weight:
    """A weight-only int4 matrix, asymmetric per group of INT4_GROUP input columns: each group
    keeps its min and max exactly apart (scale = (max - min) / 15), where one scale per row (as
    int8 has) would waste most of 16 levels on outliers. torch's CPU kernel
    (`_weight_int4pack_mm_for_cpu`) reads w as (q - 8) * scale + zero with q in 0..15, so zero
    is min + 8 * scale; like int8 it takes bf16 activations. Where Eyas's kernels run (groups of
    32), few rows take kernels/bf16_rows.c instead, which reads the weight once for all of them:
    torch's kernel costs 2-3 rows for a 5-row verification (docs/bench-engines.md)."""
    packed: torch.Tensor         # [N, K / 2] uint8, the kernel's own layout
    scales_zeros: torch.Tensor   # [K / group, N, 2] bf16
    group: int
    dense: torch.Tensor | PackedWeight   # the bf16 weight it came from (see FEW_ROWS)
    nibbles: torch.Tensor | None = None  # the same q, scale and min in Eyas's layout (native.pack_int4)
    scales_mins: torch.Tensor | None = None

    @classmethod
    def of(cls, w: torch.Tensor, group: int = INT4_GROUP) -> "Int4Weight":
        n, k = w.shape
        # the kernel takes groups of 32-256 that divide K, and N a multiple of 16
        group = next((g for g in (256, 128, 64, 32) if g <= group and k % g == 0), None)
        if group is None or n % 16:
            raise ValueError(f"int4 needs rows a multiple of 16 and columns of 32; this weight is {n}x{k}")
        grouped = w.float().view(n, k // group, group)
        lo, hi = grouped.amin(dim=-1), grouped.amax(dim=-1)
        scale = ((hi - lo) / 15).clamp(min=1e-8)
        q = ((grouped - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32).view(n, k)
        scales_zeros = torch.stack([scale.t(), (lo + 8 * scale).t()], dim=-1).to(torch.bfloat16).contiguous()
        weight = cls(torch._convert_weight_to_int4pack_for_cpu(q, 1), scales_zeros, group, w)
        if w.device.type == "cpu" and group == native.INT4_COLS and native.available():
            weight.nibbles, weight.scales_mins = native.pack_int4(q, scale, lo)
        return weight

    def mm(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.nibbles is not None and not torch.compiler.is_compiling():
            return native.int4_mm(x, self.nibbles, self.scales_mins, self.scales_zeros.shape[1],
                                  None if bias is None else bias.float())
        out = torch._weight_int4pack_mm_for_cpu(x, self.packed, self.group, self.scales_zeros)
        return out if bias is None else out + bias


QUANTIZERS = {"int8": Int8Weight.of, "int4": Int4Weight.of}


@dataclass
class LayerWeights:
    input_norm: torch.Tensor                      # [H]
    qkv: torch.Tensor                             # [q_size + 2 * kv_size, H]
    qk_norm: torch.Tensor | None                  # Qwen3: [heads + kv_heads, head_dim], q_norm per query head, then k_norm
    o: torch.Tensor                               # [H, q_size]
    post_norm: torch.Tensor                       # [H]
    qkv_bias: torch.Tensor | None = None          # Qwen2, Llama attention_bias: [q_size + 2 * kv_size]
    o_bias: torch.Tensor | None = None            # Llama attention_bias: [H]
    gate_up: torch.Tensor | None = None           # dense MLP: [2I, H], gate rows first
    down: torch.Tensor | None = None              # dense MLP: [H, I]
    router: torch.Tensor | None = None            # MoE: [E, H]
    experts_gate_up: torch.Tensor | None = None   # MoE: [E, 2I, H], gate rows first
    experts_down: torch.Tensor | None = None      # MoE: [E, H, I]


@dataclass
class LeanWeights:
    embed: torch.Tensor          # [V, H]
    layers: list[LayerWeights]
    norm: torch.Tensor           # [H]
    lm_head: torch.Tensor        # [V, H]; the embedding itself when tied
    quantized: str | None = None  # a QUANTIZED_PARTS key: the dense projections and lm_head are Int8Weight / Int4Weight


# precision -> (projections, output head): "int4-head8" keeps the head at 8 bits, as llama.cpp's
# Q4_K_M files keep theirs (Q6_K / Q8_0), for comparisons that read comparable bytes
QUANTIZED_PARTS = {"int8": ("int8", "int8"), "int4": ("int4", "int4"), "int4-head8": ("int4", "int8")}


def quantize(weights: LeanWeights, precision: str) -> None:
    """Dense projections and lm_head to weight-only `precision` (QUANTIZED_PARTS); MoE experts,
    norms, biases and the embedding stay as they are. The bf16 weights stay referenced (they are
    the Hugging Face model's own, and long inputs run on them: FEW_ROWS).
    lm_head is quantized too: it is the largest matrix a decode step reads (Qwen2.5-Coder-0.5B:
    15.5 ms of a step in bf16, 9 in int8, 3.9 in int4) and costs little agreement (greedy token
    kept at 97.9% of positions with it int8 vs 98.7% with it bf16; int4 84% vs 85% at groups of 64)."""
    if precision not in QUANTIZED_PARTS:
        raise ValueError(f"unknown precision {precision!r} (available: {', '.join(QUANTIZED_PARTS)})")
    if weights.quantized:
        raise ValueError(f"these weights are already {weights.quantized}")
    if weights.embed.dtype != torch.bfloat16:
        raise ValueError(f"{precision} weights run with bf16 activations; this model is {weights.embed.dtype}")
    if weights.embed.device.type != "cpu":   # torch has these kernels for the CPU only (int4 CUDA packs differently)
        raise ValueError(f"{precision} weights are CPU-only here; this model is on {weights.embed.device}")
    body, head = QUANTIZED_PARTS[precision]

    def of(w, to: str):
        if isinstance(w, TileWeight):     # the quantized kernel takes the few rows instead
            w = w.dense
        if isinstance(w, PackedWeight):   # quantize the plain matrix; long inputs keep the packed one
            q = QUANTIZERS[to](w.dense)
            q.dense = w
            return q
        return QUANTIZERS[to](w)
    for w in weights.layers:
        w.qkv, w.o = of(w.qkv, body), of(w.o, body)
        if w.gate_up is not None:
            w.gate_up, w.down = of(w.gate_up, body), of(w.down, body)
    weights.lm_head = of(weights.lm_head, head)
    weights.quantized = precision


def stored_bytes(w) -> int:
    """Bytes a matrix-vector product reads from this weight, in the form the decode step uses."""
    if isinstance(w, Int8Weight):
        return w.q.nbytes + w.scale.nbytes
    if isinstance(w, Int4Weight):
        return w.packed.nbytes + w.scales_zeros.nbytes
    if isinstance(w, TileWeight):
        return w.packed.nbytes
    if isinstance(w, PackedWeight):
        return w.dense.nbytes
    return 0 if w is None else w.nbytes


def decode_bytes(weights: LeanWeights) -> int:
    """Bytes of weights one decode step of one token reads: every layer's matrices, norms and
    biases, the final norm, the output head and one embedding row (an MoE counts every expert: an
    upper bound)."""
    per_layer = sum(stored_bytes(getattr(w, f.name)) for w in weights.layers for f in fields(w))
    row = weights.embed.nbytes // weights.embed.shape[0]
    return per_layer + weights.norm.nbytes + stored_bytes(weights.lm_head) + row


def column_major(linear: nn.Linear) -> torch.Tensor:
    """Re-store the linear's weight column-major (see above) and return it."""
    linear.weight.data = linear.weight.detach().t().contiguous().t()
    return linear.weight.detach()


def stored(linear: nn.Linear, cm: bool) -> torch.Tensor:
    """The linear's weight, re-stored column-major when `cm` (float32 models, see above)."""
    return column_major(linear) if cm else linear.weight.detach()


def fuse_rows(linears: list[nn.Linear], cm: bool) -> torch.Tensor:
    """Stack the linears' weights into one matrix (column-major when `cm`) and make each linear a
    view of its rows."""
    if cm:
        fused = torch.cat([lin.weight.detach().t() for lin in linears], dim=1).contiguous().t()
    else:
        fused = torch.cat([lin.weight.detach() for lin in linears])
    share_rows(fused, [lin.weight for lin in linears])
    return fused


def fuse_biases(linears: list[nn.Linear]) -> torch.Tensor | None:
    """The linears' biases as one vector (each bias then a view of its part), or None without biases."""
    if all(lin.bias is None for lin in linears):
        return None
    fused = torch.cat([lin.bias.detach() for lin in linears])
    share_rows(fused, [lin.bias for lin in linears])
    return fused


def share_rows(fused: torch.Tensor, params: list[nn.Parameter]) -> None:
    """Make each parameter a view of its consecutive rows of `fused`: nothing is held twice."""
    start = 0
    for param in params:
        rows = param.shape[0]
        param.data = fused[start:start + rows]
        start += rows


def weights_from_hf(hf_model, cfg: LeanConfig) -> LeanWeights:
    body = hf_model.model
    cm = body.embed_tokens.weight.dtype == torch.float32
    layers = []
    for i, layer in enumerate(body.layers):
        attn, mlp = layer.self_attn, layer.mlp
        projections = [attn.q_proj, attn.k_proj, attn.v_proj]
        w = LayerWeights(input_norm=layer.input_layernorm.weight.detach(),
                         qkv=fuse_rows(projections, cm), qkv_bias=fuse_biases(projections), qk_norm=None,
                         o=stored(attn.o_proj, cm), o_bias=None if attn.o_proj.bias is None else attn.o_proj.bias.detach(),
                         post_norm=layer.post_attention_layernorm.weight.detach())
        if cfg.qk_norm:
            w.qk_norm = torch.cat([attn.q_norm.weight.detach().expand(cfg.num_heads, -1),
                                   attn.k_norm.weight.detach().expand(cfg.num_kv_heads, -1)])
        if cfg.moe_layers[i]:
            w.router = mlp.gate.weight.detach()
            w.experts_gate_up = mlp.experts.gate_up_proj.detach()
            w.experts_down = mlp.experts.down_proj.detach()
        else:
            w.gate_up = fuse_rows([mlp.gate_proj, mlp.up_proj], cm)
            w.down = stored(mlp.down_proj, cm)
        layers.append(w)
    lm_head = stored(hf_model.lm_head, cm)     # first: a tied embedding then shares its storage
    return LeanWeights(embed=body.embed_tokens.weight.detach(), layers=layers, norm=body.norm.weight.detach(),
                       lm_head=lm_head)
