"""The shape of a Qwen3 / Qwen3-MoE / Qwen2 / Llama model as the lean forward needs it, read from a
Hugging Face config. The four differ only in details the forward switches on: per-head q/k RMSNorm
(Qwen3), biases on the q/k/v projections (Qwen2 always, Llama with attention_bias, which also
biases o_proj), and MoE layers (Qwen3-MoE)."""
from __future__ import annotations

from dataclasses import dataclass

ARCHITECTURES = {"qwen3": False, "qwen3_moe": True, "qwen2": False, "llama": False}   # model_type -> has MoE layers
QK_NORM = ("qwen3", "qwen3_moe")   # model types with a per-head RMSNorm on queries and keys


def unsupported_reason(hf_config) -> str | None:
    """Why the lean forward cannot run this model (None when it can). Anything it does not
    implement exactly is refused here, so the engine falls back to the Hugging Face model."""
    if hf_config.model_type not in ARCHITECTURES:
        return f"model_type {hf_config.model_type!r} (lean supports {', '.join(ARCHITECTURES)})"
    rope = getattr(hf_config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":   # llama3, yarn, linear, dynamic...: scaled frequencies
        return f"rope_type {rope['rope_type']!r} (lean supports the default RoPE only)"
    if getattr(hf_config, "attention_bias", False) and hf_config.model_type != "llama":
        return "attention_bias"   # Qwen3: no checkpoint uses it, so it is not built or tested
    if getattr(hf_config, "mlp_bias", False):
        return "mlp_bias"
    if getattr(hf_config, "use_sliding_window", False):
        return "use_sliding_window (sliding-window attention)"
    if any(t != "full_attention" for t in getattr(hf_config, "layer_types", None) or ()):
        return "sliding-window layers"
    if hf_config.hidden_act != "silu":
        return f"hidden_act {hf_config.hidden_act!r}"
    return None


@dataclass(frozen=True)
class LeanConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    moe_layers: tuple[bool, ...]        # per layer: sparse experts (True) or a dense MLP
    num_experts_per_tok: int = 0
    norm_topk_prob: bool = False
    qk_norm: bool = True                # per-head RMSNorm on queries and keys (Qwen3)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_hf(cls, c) -> "LeanConfig":
        reason = unsupported_reason(c)
        if reason:
            raise ValueError(f"the lean forward cannot run this model: {reason}; use impl='hf'")
        num_experts = getattr(c, "num_experts", 0) if ARCHITECTURES[c.model_type] else 0
        sparse_step = getattr(c, "decoder_sparse_step", 1)
        dense_only = set(getattr(c, "mlp_only_layers", None) or ())
        moe_layers = tuple(num_experts > 0 and i not in dense_only and (i + 1) % sparse_step == 0
                           for i in range(c.num_hidden_layers))
        return cls(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_layers=c.num_hidden_layers,
                   num_heads=c.num_attention_heads, num_kv_heads=c.num_key_value_heads,
                   head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
                   rms_norm_eps=c.rms_norm_eps, rope_theta=float(c.rope_parameters["rope_theta"]),
                   max_position_embeddings=c.max_position_embeddings, moe_layers=moe_layers,
                   num_experts_per_tok=getattr(c, "num_experts_per_tok", 0) if num_experts else 0,
                   norm_topk_prob=bool(getattr(c, "norm_topk_prob", False)), qk_norm=c.model_type in QK_NORM)
