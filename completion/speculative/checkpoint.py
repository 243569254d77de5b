"""Drafter checkpoints in exactly the layout vLLM loads for the public P-EAGLE drafters.

    config.json          DrafterConfig.to_json() (Llama/Qwen3 keys, eagle_config, ptd_token_id + pard_token)
    model.safetensors    names without a `model.` prefix (vLLM adds it back):
        fc.weight [H, 3Ht]   mask_hidden [1, 1, 3Ht]   norm.weight [H]   lm_head.weight [Vd, H]
        midlayer.{input_layernorm,hidden_norm,post_attention_layernorm}.weight
        midlayer.self_attn.{q,k,v}_proj.weight [*, 2H]   layers.{1..N-1}.* (inputs H)
        d2t [Vd] int64 (target = draft + d2t[draft]) and t2d [V] bool, when Vd < V
        embed_tokens.weight [V, H] optional (else the target's is shared)

Loading checks every name and shape before copying anything, and says which tensor is wrong.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .config import DrafterConfig, DrafterConfigError
from .drafter import Drafter

MIDLAYER = "midlayer."
WEIGHTS_FILE = "model.safetensors"


class DrafterCheckpointError(ValueError):
    """A drafter checkpoint is unreadable, incomplete or does not fit the target."""


def checkpoint_name(param_name: str) -> str:
    return MIDLAYER + param_name[len("layers.0."):] if param_name.startswith("layers.0.") else param_name


def param_name(checkpoint_tensor: str) -> str:
    if checkpoint_tensor.startswith(MIDLAYER):
        return "layers.0." + checkpoint_tensor[len(MIDLAYER):]
    return checkpoint_tensor


# ---- writing ---------------------------------------------------------------------------------

def drafter_tensors(drafter: Drafter) -> dict[str, torch.Tensor]:
    cfg = drafter.config
    tensors = {checkpoint_name(k): v.detach().contiguous() for k, v in drafter.state_dict().items()}
    if cfg.draft_vocab_size < cfg.vocab_size:
        t2d = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        t2d[drafter.to_target_ids(torch.arange(cfg.draft_vocab_size, device=drafter.d2t.device)).cpu()] = True
        tensors["t2d"] = t2d
    else:
        # vLLM has no d2t parameter when the vocabularies match and would reject the tensor
        tensors.pop("d2t")
    return {k: v.cpu() for k, v in tensors.items()}


def save_drafter(drafter: Drafter, out_dir: str | os.PathLike) -> Path:
    """Write config.json + model.safetensors that both `load_drafter` and vLLM load."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = drafter.config
    cfg.torch_dtype = str(drafter.fc.weight.dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
    save_file(drafter_tensors(drafter), str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    return out


# ---- reading ---------------------------------------------------------------------------------

def resolve_checkpoint_dir(path_or_hub_id: str) -> Path:
    """A local directory, or a hub id fetched with huggingface_hub (only config and weights)."""
    local = Path(path_or_hub_id).expanduser()
    if local.is_dir():
        return local
    if local.exists() or path_or_hub_id.count("/") != 1:
        raise DrafterCheckpointError(f"drafter {path_or_hub_id!r} is neither a directory nor a hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(path_or_hub_id, allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    except Exception as e:  # offline, unknown repo, no permission: all end the same way for the user
        raise DrafterCheckpointError(f"drafter {path_or_hub_id!r} is not a local directory and could not be "
                                     f"fetched from the Hugging Face hub: {e}") from e


def read_tensors(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = ckpt_dir / (WEIGHTS_FILE + ".index.json")
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in ckpt_dir.glob("*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    try:
        for name in files:
            tensors.update(load_file(str(ckpt_dir / name)))
        if not files and (ckpt_dir / "pytorch_model.bin").exists():   # older EAGLE-3 heads
            tensors = torch.load(ckpt_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, json.JSONDecodeError) as e:
        raise DrafterCheckpointError(f"cannot read the drafter weights in {ckpt_dir}: {e} "
                                     "(truncated or corrupted file?)") from e
    if not tensors:
        raise DrafterCheckpointError(f"no drafter weights (*.safetensors) in {ckpt_dir}")
    # some exporters keep a `model.` prefix (vLLM would add a second one) or call the fusion layer
    # `layers.0.` (vLLM's own name for it); both normalise to the AWS layout
    return {checkpoint_name(k.removeprefix("model.")): v for k, v in tensors.items()}


def expected_shapes(cfg: DrafterConfig, *, own_embeddings: bool, own_lm_head: bool) -> dict[str, tuple]:
    with torch.device("meta"):
        skeleton = Drafter(cfg, own_embeddings=own_embeddings, own_lm_head=own_lm_head)
    shapes = {checkpoint_name(k): tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if cfg.draft_vocab_size < cfg.vocab_size:
        shapes["t2d"] = (cfg.vocab_size,)
    else:
        shapes.pop("d2t")
    return shapes


def validate_tensors(cfg: DrafterConfig, tensors: dict[str, torch.Tensor], where: Path) -> None:
    shapes = expected_shapes(cfg, own_embeddings="embed_tokens.weight" in tensors,
                             own_lm_head="lm_head.weight" in tensors)
    optional = {"d2t", "t2d"} if cfg.draft_vocab_size == cfg.vocab_size else {"t2d"}
    missing = sorted(set(shapes) - set(tensors) - optional)
    unexpected = sorted(set(tensors) - set(shapes) - {"d2t", "t2d"})
    if missing:
        raise DrafterCheckpointError(f"drafter checkpoint {where} lacks tensor(s) {missing}"
                                     + (" (P-EAGLE drafters need 'mask_hidden')" if "mask_hidden" in missing else ""))
    if unexpected:
        raise DrafterCheckpointError(f"drafter checkpoint {where} has tensor(s) {unexpected} that its config.json "
                                     "does not describe (layer count, attention_bias or layer style disagree?)")
    for name, tensor in tensors.items():
        want = shapes.get(name)
        if name in ("d2t", "t2d") and name not in shapes:
            continue
        if tuple(tensor.shape) != want:
            raise DrafterCheckpointError(f"drafter tensor {name!r} has shape {list(tensor.shape)}, expected "
                                         f"{list(want)} from config.json and the target")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise DrafterCheckpointError(f"drafter tensor {name!r} contains NaN or inf (corrupted checkpoint?)")
    d2t = tensors.get("d2t")
    if d2t is not None:
        target = torch.arange(len(d2t)) + d2t.long()
        if target.min() < 0 or target.max() >= cfg.vocab_size:
            raise DrafterCheckpointError(f"drafter tensor 'd2t' maps draft ids outside the target vocabulary "
                                         f"0..{cfg.vocab_size - 1}")


def load_drafter(path_or_hub_id: str, target_model, *, device=None, dtype: torch.dtype | None = None) -> Drafter:
    """Load a P-EAGLE / EAGLE-3 drafter for `target_model` (a Hugging Face causal LM).
    Raises DrafterCheckpointError / DrafterConfigError naming the key or tensor at fault."""
    ckpt_dir = resolve_checkpoint_dir(path_or_hub_id)
    config_file = ckpt_dir / "config.json"
    if not config_file.exists():
        raise DrafterCheckpointError(f"drafter {ckpt_dir} has no config.json")
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise DrafterCheckpointError(f"drafter config {config_file} is not valid JSON: {e}") from e
    text_cfg = getattr(target_model.config, "get_text_config", lambda: target_model.config)()
    cfg = DrafterConfig.from_json(raw, num_target_layers=text_cfg.num_hidden_layers)
    cfg.check_target(target_model.config)
    tensors = read_tensors(ckpt_dir)
    validate_tensors(cfg, tensors, ckpt_dir)
    own_embed, own_head = "embed_tokens.weight" in tensors, "lm_head.weight" in tensors
    if not own_embed and cfg.hidden_size != text_cfg.hidden_size:
        raise DrafterConfigError(f"drafter has no embed_tokens and its hidden_size {cfg.hidden_size} differs "
                                 f"from the target's {text_cfg.hidden_size}, so it cannot share the target's")
    if not own_head and (cfg.draft_vocab_size != cfg.vocab_size or cfg.hidden_size != text_cfg.hidden_size):
        raise DrafterConfigError("drafter has no lm_head and cannot share the target's "
                                 "(draft_vocab_size or hidden_size differ)")

    param = next(target_model.parameters())
    device = device or param.device
    dtype = dtype or param.dtype
    with torch.device("meta"):
        drafter = Drafter(cfg, own_embeddings=own_embed, own_lm_head=own_head)
    state = {param_name(k): v for k, v in tensors.items() if k != "t2d"}
    if "d2t" not in state:
        state["d2t"] = torch.zeros(cfg.draft_vocab_size, dtype=torch.long)
    drafter.load_state_dict(state, strict=True, assign=True)
    drafter.to(device=device, dtype=dtype)
    drafter.d2t = drafter.d2t.long()
    drafter.share_target_modules(target_model)
    drafter.eval().requires_grad_(False)
    drafter.refresh()
    return drafter
