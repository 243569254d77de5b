"""The lean model's weights, taken from an already-loaded Hugging Face Qwen3 / Qwen3-MoE.

Going through the loaded model rather than the safetensors files means Hugging Face has already
done every checkpoint conversion (per-expert tensors stacked, tied embeddings resolved, dtype and
device applied), and nothing is held twice: norms, embeddings, lm_head and expert stacks are the
very same tensors, and the projections we fuse (q|k|v, gate|up) become the storage that the Hugging
Face parameters then view, so the reference model keeps working on the same memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import LeanConfig


@dataclass
class LayerWeights:
    input_norm: torch.Tensor                      # [H]
    qkv: torch.Tensor                             # [q_size + 2 * kv_size, H]
    q_norm: torch.Tensor                          # [head_dim]
    k_norm: torch.Tensor                          # [head_dim]
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
    lm_head: torch.Tensor        # [V, H]; the embedding itself when tied


def fuse_rows(linears: list[nn.Linear]) -> torch.Tensor:
    """Stack the linears' weights into one matrix and make each linear a view of its rows."""
    fused = torch.cat([lin.weight.detach() for lin in linears], dim=0)
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
                         q_norm=attn.q_norm.weight.detach(), k_norm=attn.k_norm.weight.detach(),
                         o=attn.o_proj.weight.detach(), post_norm=layer.post_attention_layernorm.weight.detach())
        if cfg.moe_layers[i]:
            w.router = mlp.gate.weight.detach()
            w.experts_gate_up = mlp.experts.gate_up_proj.detach()
            w.experts_down = mlp.experts.down_proj.detach()
        else:
            w.gate_up = fuse_rows([mlp.gate_proj, mlp.up_proj])
            w.down = mlp.down_proj.weight.detach()
        layers.append(w)
    return LeanWeights(embed=body.embed_tokens.weight.detach(), layers=layers, norm=body.norm.weight.detach(),
                       lm_head=hf_model.lm_head.weight.detach())
