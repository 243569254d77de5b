"""Random Qwen3 / Qwen3-MoE targets for tests, cross-checks and benchmarks, written to disk with
the real Qwen3 tokenizer so every engine (ours, vLLM) loads the same files.

Unlike `engine.models.build_tiny_model` (tied embeddings: its greedy output collapses to one
repeated token), these untie the embeddings, so greedy continuations wander like text and a
drafter sees both accepted and rejected drafts.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def random_target_config(*, moe: bool = False, num_layers: int = 4, hidden_size: int = 128,
                         num_heads: int = 4, num_kv_heads: int = 2, vocab_size: int = 151936,
                         init_std: float = 0.02, max_positions: int = 4096):
    from transformers import Qwen3Config, Qwen3MoeConfig

    special = 151643 if vocab_size > 151643 else vocab_size - 1   # <|endoftext|>, or the last id of a toy vocab
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                  head_dim=hidden_size // num_heads, intermediate_size=2 * hidden_size,
                  max_position_embeddings=max_positions, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
                  tie_word_embeddings=False, initializer_range=init_std,
                  bos_token_id=special, eos_token_id=special, pad_token_id=special)
    if moe:
        return Qwen3MoeConfig(**common, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=hidden_size,
                              decoder_sparse_step=1)
    return Qwen3Config(**common)


def random_target(seed: int = 0, **kw):
    """An in-memory float32 model (eval mode)."""
    from transformers import Qwen3ForCausalLM, Qwen3MoeForCausalLM

    cfg = random_target_config(**kw)
    torch.manual_seed(seed)
    cls = Qwen3MoeForCausalLM if kw.get("moe") else Qwen3ForCausalLM
    return cls(cfg).eval()


def write_random_target(out_dir: str | os.PathLike, seed: int = 0, **kw) -> Path:
    """Save a random target plus the Qwen3 tokenizer; returns the directory."""
    from transformers import AutoTokenizer

    from completion.models.tiny import qwen_tokenizer_dir

    out = Path(out_dir)
    random_target(seed, **kw).save_pretrained(out)
    AutoTokenizer.from_pretrained(qwen_tokenizer_dir()).save_pretrained(out)
    return out
