"""Our own Hugging Face Qwen3 / Qwen2 -> GGUF converter, so llama.cpp can run the pocket target
(and tests can write real GGUF files for completion.models.gguf to read back).

llama.cpp's `convert_hf_to_gguf.py` refuses a self-trained BPE tokenizer it does not recognise by
hash; we only need what llama.cpp's loader reads, written with the `gguf` package's GGUFWriter:
the architecture keys, the tensors under llama.cpp's names (completion.models.gguf's table), and the byte-level BPE
tokenizer as `gpt2` (tokens, token types, merges) with the "qwen2" pre-tokenizer (the same split
regex as Qwen's). The benchmark feeds token ids directly, so the tokenizer only has to load.

    export_gguf("completion/models/pocket/target", "out/bench/pocket-q8_0.gguf", "q8_0")

Precisions: f32, bf16, q8_0 for the matrices; norms (1-D) stay f32 as llama.cpp expects.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from completion.models.gguf import gguf_name

PRECISIONS = ("f32", "bf16", "q8_0")
ARCHITECTURES = ("qwen2", "qwen3")
Q8_0_BLOCK = 32            # a Q8_0 row must be a whole number of 32-value blocks

# tokenizer.ggml.fim_*_token_id keys for Qwen's FIM / repo-level control tokens
FIM_KEYS = {"<|fim_prefix|>": "pre", "<|fim_suffix|>": "suf", "<|fim_middle|>": "mid",
            "<|fim_pad|>": "pad", "<|repo_name|>": "rep", "<|file_sep|>": "sep"}


def rope_theta(config: dict) -> float:
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise ValueError(f"rope scaling is not supported: {rope or config.get('rope_scaling')}")
    return float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0)


def read_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor as float32 numpy (bf16 -> f32 is exact, so bf16 export loses nothing)."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    out = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                out[name] = st.get_tensor(name).float().numpy()
    return out


def tokenizer_vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """(tokens, token types, merges, added token ids) from tokenizer.json, padded to the model's
    vocab size: embedding rows no token uses become "[PAD<id>]" entries of type UNUSED."""
    import gguf

    spec = json.loads((model_dir / "tokenizer.json").read_text())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"only byte-level BPE tokenizers are supported, not {model.get('type')}")
    by_id = {i: tok for tok, i in model["vocab"].items()}
    added = {a["content"]: a["id"] for a in spec.get("added_tokens", [])}
    by_id.update({i: tok for tok, i in added.items()})
    if max(by_id) >= vocab_size:
        raise ValueError(f"tokenizer id {max(by_id)} does not fit the model's vocab_size {vocab_size}")
    tokens, types = [], []
    added_ids = set(added.values())
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            # Qwen's added tokens (<|endoftext|>, FIM, ...) are control tokens, never text
            types.append(gguf.TokenType.CONTROL if i in added_ids else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges, added


def quantized(array: np.ndarray, precision: str):
    """(data, raw ggml type or None) for GGUFWriter.add_tensor."""
    import gguf

    if array.ndim == 1 or precision == "f32":
        return array.astype(np.float32), None
    if precision == "q8_0" and array.shape[-1] % Q8_0_BLOCK:
        return array.astype(np.float32), None       # rows that are not whole blocks stay exact
    qtype = gguf.GGMLQuantizationType.BF16 if precision == "bf16" else gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.quantize(array.astype(np.float32), qtype), qtype


def first_id(value) -> int | None:
    return value[0] if isinstance(value, list) else value


def write_metadata(writer, config: dict, precision: str, name: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_name(name)
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[precision]
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def write_tokenizer(writer, model_dir: Path, config: dict) -> None:
    tokens, types, merges, added = tokenizer_vocab(model_dir, config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")       # Qwen's split regex, which our tokenizer also uses
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, setter in (("eos_token_id", writer.add_eos_token_id), ("bos_token_id", writer.add_bos_token_id),
                        ("pad_token_id", writer.add_pad_token_id)):
        if first_id(config.get(key)) is not None:
            setter(first_id(config[key]))
    writer.add_add_bos_token(False)           # raw FIM prompts never start with a BOS
    for text, short in FIM_KEYS.items():
        if text in added:
            writer.add_uint32(f"tokenizer.ggml.fim_{short}_token_id", added[text])


def export_gguf(model_dir: str | Path, out_path: str | Path, precision: str = "f32") -> Path:
    """Write the dense Qwen3 / Qwen2 checkpoint in `model_dir` as one GGUF file; returns its path."""
    import gguf

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model_dir, out_path = Path(model_dir), Path(out_path)
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") not in ARCHITECTURES:
        raise ValueError(f"only model_type {' / '.join(ARCHITECTURES)} is supported, got {config.get('model_type')!r}")
    tensors = read_tensors(model_dir)
    if config.get("tie_word_embeddings"):
        tensors.pop("lm_head.weight", None)   # llama.cpp reuses token_embd when output is absent
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_path), config["model_type"])
    write_metadata(writer, config, precision, model_dir.name)
    write_tokenizer(writer, model_dir, config)
    for hf_name, array in tensors.items():
        data, raw_dtype = quantized(array, precision)
        writer.add_tensor(gguf_name(hf_name), data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path
