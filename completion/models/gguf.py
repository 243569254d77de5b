"""llama.cpp GGUF files -> Hugging Face directories (safetensors, config, tokenizer), done once.

Any GGUF of a supported architecture (qwen2, qwen3, qwen3moe, llama) converts, whatever its
quantization: every tensor is dequantized by the `gguf` package to float32 and stored in bf16
(tensors the file keeps in float32, norms and biases, stay float32). The tokenizer is rebuilt from
the file's vocabulary by transformers. The lean forward then quantizes again as the `precision`
setting asks, so a Q4 file costs no more memory than a bf16 one would at run time.

The tensor names are llama.cpp's (`blk.N.attn_q.weight`); `HF_NAMES` is the one table between
them and Hugging Face's, used both ways (completion/evaluation/gguf_export.py writes GGUF with it).
llama.cpp's converter permutes the rows of a llama's q and k projections (its RoPE pairs
neighbouring values where Hugging Face pairs the two halves); `unpermute_rows` undoes that.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

ARCHITECTURES = ("qwen2", "qwen3", "qwen3moe", "llama")
SHARD_BYTES = 2 << 30   # safetensors files of at most ~2 GB: a large model never sits whole in memory

GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_gate_inp.weight": "mlp.gate.weight",          # MoE router
}
# MoE expert stacks [E, out, in]: split into Hugging Face's per-expert tensors
EXPERT_NAMES = {"ffn_gate_exps.weight": "gate_proj", "ffn_up_exps.weight": "up_proj",
                "ffn_down_exps.weight": "down_proj"}


class GGUFError(ValueError):
    """A GGUF file this converter cannot read: the message says why."""


def hf_name(name: str) -> str:
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    parts = name.split(".", 2)   # blk, i, rest
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in LAYER_NAMES:
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}"
    raise GGUFError(f"unknown tensor {name!r}")


def gguf_name(hf: str) -> str:
    """The inverse of hf_name (for writers)."""
    for name, mapped in GLOBAL_NAMES.items():
        if mapped == hf:
            return name
    parts = hf.split(".", 3)   # model, layers, i, rest
    for name, mapped in LAYER_NAMES.items():
        if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] == mapped:
            return f"blk.{parts[2]}.{name}"
    raise GGUFError(f"no GGUF name for tensor {hf!r}")


def unpermute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order for a llama (within each head, rows interleaved in pairs)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order, from Hugging Face's (for writers and tests)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    return value


def read_config(reader) -> dict:
    """A Hugging Face config.json (as a dict) from the file's metadata."""
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    k = lambda key, default=None: _field(reader, f"{arch}.{key}", default)   # noqa: E731
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise GGUFError("the file has no token_embd.weight tensor: not a language model")
    heads = int(k("attention.head_count"))
    hidden = int(k("embedding_length"))
    scaling = k("rope.scaling.type")
    if scaling not in (None, "none"):
        raise GGUFError(f"RoPE scaling {scaling!r} is not supported")
    config = {
        "model_type": {"qwen3moe": "qwen3_moe"}.get(arch, arch),
        "architectures": [{"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                           "qwen3moe": "Qwen3MoeForCausalLM", "llama": "LlamaForCausalLM"}[arch]],
        "vocab_size": int(tensors["token_embd.weight"].shape[1]),
        "hidden_size": hidden,
        "num_hidden_layers": int(k("block_count")),
        "intermediate_size": int(k("feed_forward_length", 0)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(k("attention.head_count_kv", heads)),
        "head_dim": int(k("attention.key_length", hidden // heads)),
        "max_position_embeddings": int(k("context_length", 32768)),
        "rms_norm_eps": float(k("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(k("rope.freq_base", 10000.0)),
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in tensors,
        "torch_dtype": "bfloat16",
    }
    for key, gguf_key in (("bos_token_id", "tokenizer.ggml.bos_token_id"),
                          ("eos_token_id", "tokenizer.ggml.eos_token_id"),
                          ("pad_token_id", "tokenizer.ggml.padding_token_id")):
        value = _field(reader, gguf_key)
        if value is not None:
            config[key] = int(value)
    if arch == "qwen3moe":
        config.update(num_experts=int(k("expert_count")), num_experts_per_tok=int(k("expert_used_count")),
                      moe_intermediate_size=int(k("expert_feed_forward_length")), norm_topk_prob=True,
                      decoder_sparse_step=1)
    if arch == "qwen2":
        config["use_sliding_window"] = False
    return config


def hf_tensors(reader, config: dict):
    """For each GGUF tensor, in file order: it and its (Hugging Face name, float32 array) pairs (several
    for an MoE expert stack, one otherwise), dequantized one tensor at a time."""
    from gguf.quants import dequantize

    llama = config["model_type"] == "llama"
    for t in reader.tensors:
        array = dequantize(t.data, t.tensor_type)
        array = array.reshape([int(d) for d in reversed(t.shape.tolist())])   # GGUF lists dims inner first
        rest = t.name.split(".", 2)[-1]
        if t.name.startswith("blk.") and rest in EXPERT_NAMES:
            layer = t.name.split(".")[1]
            yield t, [(f"model.layers.{layer}.mlp.experts.{e}.{EXPERT_NAMES[rest]}.weight", array[e])
                   for e in range(array.shape[0])]
            continue
        if llama and rest in ("attn_q.weight", "attn_k.weight"):
            heads = config["num_attention_heads"] if rest == "attn_q.weight" else config["num_key_value_heads"]
            array = unpermute_rows(array, heads)
        yield t, [(hf_name(t.name), array)]


def stored(array: np.ndarray, keep_float32: bool):
    import torch

    tensor = torch.from_numpy(np.array(array, dtype=np.float32))   # a copy: the file is mapped read-only
    return tensor if keep_float32 else tensor.to(torch.bfloat16)


def convert(gguf_path: str | Path, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Write `gguf_path` as a Hugging Face directory at `out_dir` (which must not exist yet; the
    caller renames a temporary directory into place, so a crash leaves no half-written model)."""
    from gguf import GGMLQuantizationType, GGUFReader
    from safetensors.torch import save_file
    from tqdm import tqdm

    gguf_path, out = Path(gguf_path), Path(out_dir)
    try:
        reader = GGUFReader(str(gguf_path))
    except Exception as exc:   # the gguf package raises plain ValueErrors and struct errors
        raise GGUFError(f"{gguf_path} is not a readable GGUF file: {exc}") from exc
    config = read_config(reader)
    out.mkdir(parents=True)
    float32_types = {GGMLQuantizationType.F32, GGMLQuantizationType.F64}
    shard, shard_bytes, index = {}, 0, {}

    def flush():
        nonlocal shard, shard_bytes
        if shard:
            file = f"model-{len(set(index.values())) + 1:05d}.safetensors"
            save_file(shard, str(out / file), metadata={"format": "pt"})
            index.update({name: file for name in shard})
            shard, shard_bytes = {}, 0
    bar = tqdm(total=len(reader.tensors), desc=f"converting {gguf_path.name}", unit="tensor", disable=not progress)
    for source, pairs in hf_tensors(reader, config):
        for name, array in pairs:
            tensor = stored(array, keep_float32=source.tensor_type in float32_types)
            shard[name] = tensor
            shard_bytes += tensor.numel() * tensor.element_size()
            if shard_bytes >= SHARD_BYTES:
                flush()
        bar.update(1)
    flush()
    bar.close()
    files = sorted(set(index.values()))
    if len(files) == 1:
        (out / files[0]).rename(out / "model.safetensors")
    else:
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}, indent=1))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(gguf_path, out)
    return out


def write_tokenizer(gguf_path: Path, out: Path) -> None:
    """The tokenizer rebuilt from the file's vocabulary, saved as tokenizer.json & co."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer.save_pretrained(str(out))


def remove_quietly(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
