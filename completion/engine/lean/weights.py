"""The lean model's weights, taken from an already-loaded Hugging Face Qwen3 / Qwen3-MoE.

Going through the loaded model rather than the safetensors files means Hugging Face has already
done every checkpoint conversion (per-expert tensors stacked, tied embeddings resolved, dtype and
device applied), and nothing is held twice: norms, embeddings, lm_head and expert stacks are the
very same tensors, and the projections we fuse (q|k|v, gate|up) become the storage that the Hugging
Face parameters then view, so the reference model keeps working on the same memory.

Every projection and lm_head is stored column-major: the [out, in] matrix is a transposed view of
a contiguous [in, out] buffer. On a CPU in float32, MKL multiplies a few rows by such a weight
with fewer passes over it than by a row-major one, so a verification costs less (pocket target,
1 thread, `forward_speed`'s verify_ms_by_rows: 5 rows 5.1 → 4.4-4.5 ms, 8 rows 6.6-6.7 → 4.9-6.1,
one row unchanged). bf16 runs at the same speed either way, and a tied embedding gathers from
the view (a few ms more to embed 2,048 prompt tokens, nothing per decode step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import LeanConfig


@dataclass
class Int8Weight:
    """A weight-only int8 matrix with one scale per output row. torch's CPU kernel for it
    (`_weight_int8pack_mm`) reads a quarter of the f32 bytes; it wants bf16 activations (its f32
    path is several times slower than f32 `linear`), so int8 runs with a bf16 model."""
    q: torch.Tensor       # [N, K] int8
    scale: torch.Tensor   # [N], the activations' dtype

    @classmethod
    def of(cls, w: torch.Tensor) -> "Int8Weight":
        scale = w.float().abs().amax(dim=1).clamp(min=1e-8) / 127
        q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(q.contiguous(), scale.to(w.dtype))


@dataclass
class LayerWeights:
    input_norm: torch.Tensor                      # [H]
    qkv: torch.Tensor                             # [q_size + 2 * kv_size, H]
    qk_norm: torch.Tensor                         # [heads + kv_heads, head_dim]: q_norm per query head, then k_norm
    o: torch.Tensor                               # [H, q_size]
    post_norm: torch.Tensor                       # [H]
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
    lm_head: torch.Tensor        # [V, H] (column-major); the embedding itself when tied
    quantized: str | None = None  # "int8": the projections and lm_head are Int8Weight


def quantize_int8(weights: LeanWeights) -> None:
    """Dense projections and lm_head to weight-only int8 (MoE experts, norms and the embedding
    stay as they are). The Hugging Face model keeps its own weights: the reference still works."""
    if weights.embed.dtype != torch.bfloat16:
        raise ValueError(f"int8 weights run with bf16 activations; this model is {weights.embed.dtype}")
    for w in weights.layers:
        w.qkv, w.o = Int8Weight.of(w.qkv), Int8Weight.of(w.o)
        if w.gate_up is not None:
            w.gate_up, w.down = Int8Weight.of(w.gate_up), Int8Weight.of(w.down)
    weights.lm_head = Int8Weight.of(weights.lm_head)
    weights.quantized = "int8"


def column_major(linear: nn.Linear) -> torch.Tensor:
    """Re-store the linear's weight column-major (see above) and return it."""
    linear.weight.data = linear.weight.detach().t().contiguous().t()
    return linear.weight.detach()


def fuse_rows(linears: list[nn.Linear]) -> torch.Tensor:
    """Stack the linears' weights into one column-major matrix and make each linear a view of its rows."""
    fused = torch.cat([lin.weight.detach().t() for lin in linears], dim=1).contiguous().t()
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = fused[start:start + rows]
        start += rows
    return fused


def weights_from_hf(hf_model, cfg: LeanConfig) -> LeanWeights:
    body = hf_model.model
    layers = []
    for i, layer in enumerate(body.layers):
        attn, mlp = layer.self_attn, layer.mlp
        w = LayerWeights(input_norm=layer.input_layernorm.weight.detach(),
                         qkv=fuse_rows([attn.q_proj, attn.k_proj, attn.v_proj]),
                         qk_norm=torch.cat([attn.q_norm.weight.detach().expand(cfg.num_heads, -1),
                                            attn.k_norm.weight.detach().expand(cfg.num_kv_heads, -1)]),
                         o=column_major(attn.o_proj), post_norm=layer.post_attention_layernorm.weight.detach())
        if cfg.moe_layers[i]:
            w.router = mlp.gate.weight.detach()
            w.experts_gate_up = mlp.experts.gate_up_proj.detach()
            w.experts_down = mlp.experts.down_proj.detach()
        else:
            w.gate_up = fuse_rows([mlp.gate_proj, mlp.up_proj])
            w.down = column_major(mlp.down_proj)
        layers.append(w)
    lm_head = column_major(hf_model.lm_head)     # first: a tied embedding then shares its storage
    return LeanWeights(embed=body.embed_tokens.weight.detach(), layers=layers, norm=body.norm.weight.detach(),
                       lm_head=lm_head)
