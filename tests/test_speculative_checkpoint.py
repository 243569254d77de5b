"""Drafter checkpoints: the vLLM layout (names, shapes, config keys), a bit-identical round trip,
and clear errors for corrupted or mismatching checkpoints."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from completion.speculative import (DrafterCheckpointError, DrafterConfig, DrafterConfigError, init_drafter,
                                    load_drafter, save_drafter)
from completion.speculative.checkpoint import WEIGHTS_FILE
from completion.training.synthetic import random_target

H, V, VD = 64, 4096, 300


@pytest.fixture(scope="module")
def target():
    return random_target(seed=1, num_layers=6, hidden_size=H, vocab_size=V)


def drafter_config(**overrides) -> DrafterConfig:
    cfg = dict(hidden_size=H, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               intermediate_size=128, vocab_size=V, draft_vocab_size=VD, target_hidden_size=H, mask_token_id=V - 7,
               aux_layer_ids=(1, 3, 4), trained_depth=10)
    cfg.update(overrides)
    return DrafterConfig(**cfg)


def make(target, **overrides):
    own_embeddings = overrides.pop("own_embeddings", True)
    cfg = drafter_config(**overrides)
    vocab = torch.randperm(V, generator=torch.Generator().manual_seed(0))[: cfg.draft_vocab_size].sort().values
    return init_drafter(cfg, seed=4, own_embeddings=own_embeddings, draft_to_target=vocab, target_model=target)


@pytest.mark.parametrize("style, own_embeddings, bias", [("llama", True, False), ("qwen3", False, False),
                                                          ("llama", False, True), ("qwen3", True, True)])
def test_round_trip_is_bit_identical(tmp_path, target, style, own_embeddings, bias):
    drafter = make(target, layer_style=style, own_embeddings=own_embeddings, attention_bias=bias)
    save_drafter(drafter, tmp_path)
    loaded = load_drafter(str(tmp_path), target)
    a, b = drafter.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    assert loaded.config.to_json() == drafter.config.to_json()
    assert torch.equal(loaded.mask_state, drafter.mask_state)


def test_layout_is_what_vllm_loads(tmp_path, target):
    save_drafter(make(target, own_embeddings=False), tmp_path)
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    assert not any(name.startswith("model.") for name in tensors)
    assert tensors["fc.weight"].shape == (H, 3 * H)
    assert tensors["mask_hidden"].shape == (1, 1, 3 * H)
    assert tensors["midlayer.self_attn.q_proj.weight"].shape == (4 * 16, 2 * H)     # fusion layer reads 2H
    assert tensors["layers.1.self_attn.q_proj.weight"].shape == (4 * 16, H)
    assert "midlayer.hidden_norm.weight" in tensors and "layers.1.hidden_norm.weight" not in tensors
    assert tensors["lm_head.weight"].shape == (VD, H)
    assert "embed_tokens.weight" not in tensors                                       # shared with the target
    d2t, t2d = tensors["d2t"], tensors["t2d"]
    assert d2t.dtype == torch.int64 and t2d.dtype == torch.bool and t2d.sum() == VD
    assert torch.equal(torch.nonzero(t2d).flatten(), torch.arange(VD) + d2t)        # target = draft + d2t[draft]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_hidden_layers"] == 3
    assert cfg["ptd_token_id"] == cfg["pard_token"] == V - 7
    assert cfg["eagle_config"] == {"use_aux_hidden_state": True, "eagle_aux_hidden_state_layer_ids": [1, 3, 4]}
    assert (cfg["draft_vocab_size"], cfg["target_hidden_size"], cfg["vocab_size"]) == (VD, H, V)


def test_full_vocabulary_drafter_omits_the_mapping(tmp_path, target):
    save_drafter(make(target, draft_vocab_size=V), tmp_path)
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    assert "d2t" not in tensors and "t2d" not in tensors    # vLLM has no d2t slot when vocabularies match
    assert torch.equal(load_drafter(str(tmp_path), target).d2t, torch.zeros(V, dtype=torch.long))


def test_default_aux_layers_and_mask_id_fallbacks(tmp_path):
    deeper = random_target(seed=1, num_layers=8, hidden_size=H, vocab_size=V)
    save_drafter(make(deeper), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["eagle_config"], cfg["ptd_token_id"]
    cfg["pard_token"] = 11
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = load_drafter(str(tmp_path), deeper)
    assert loaded.config.aux_layer_ids == (2, 4, 5)          # (2, L//2, L-3) for the 8-layer target
    assert loaded.config.mask_token_id == 11


def test_aux_layers_follow_vllm_capture_order(tmp_path, target):
    save_drafter(make(target), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] = [4, 1, 3]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert load_drafter(str(tmp_path), target).config.aux_layer_ids == (1, 3, 4)   # layer order, as vLLM
    cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] = [2, 3, 3]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DrafterConfigError, match="repeats a layer"):
        load_drafter(str(tmp_path), target)


def corrupt(tmp_path, target, edit):
    save_drafter(make(target), tmp_path)
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    edit(tensors)
    save_file(tensors, str(tmp_path / WEIGHTS_FILE))


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("mask_hidden"), "mask_hidden"),
    (lambda t: t.__setitem__("fc.weight", torch.zeros(H, 2 * H)), "'fc.weight' has shape"),
    (lambda t: t.__setitem__("layers.1.mlp.up_proj.weight", torch.zeros(100, H)), "layers.1.mlp.up_proj.weight"),
    (lambda t: t.__setitem__("layers.3.mlp.up_proj.weight", torch.zeros(128, H)), "layers.3.mlp.up_proj.weight"),
    (lambda t: t["norm.weight"].__setitem__(0, float("nan")), "'norm.weight' contains NaN"),
    (lambda t: t.__setitem__("d2t", t["d2t"] + V), "d2t"),
])
def test_bad_tensors_are_named(tmp_path, target, edit, message):
    corrupt(tmp_path, target, edit)
    with pytest.raises(DrafterCheckpointError, match=message):
        load_drafter(str(tmp_path), target)


def test_truncated_file_fails_clearly(tmp_path, target):
    save_drafter(make(target), tmp_path)
    data = (tmp_path / WEIGHTS_FILE).read_bytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(DrafterCheckpointError, match="corrupted"):
        load_drafter(str(tmp_path), target)


@pytest.mark.parametrize("key, value, message", [
    ("target_hidden_size", 96, "target_hidden_size 96 != target hidden_size 64"),
    ("vocab_size", 5000, "vocab_size 5000 != target vocab_size 4096"),
    ("eagle_config", {"eagle_aux_hidden_state_layer_ids": [1, 2, 9]}, "outside the target"),
    ("ptd_token_id", None, "mask token"),
    ("hidden_size", None, "'hidden_size'"),
])
def test_config_mismatch_is_named(tmp_path, target, key, value, message):
    save_drafter(make(target), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    if value is None:
        cfg.pop(key)
        cfg.pop("pard_token") if key == "ptd_token_id" else None
    else:
        cfg[key] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((DrafterConfigError, DrafterCheckpointError), match=message):
        load_drafter(str(tmp_path), target)


def test_drafter_for_another_target_is_refused(tmp_path, target):
    save_drafter(make(target), tmp_path)
    other = random_target(seed=1, num_layers=6, hidden_size=32, vocab_size=V)
    with pytest.raises(DrafterConfigError, match="target_hidden_size"):
        load_drafter(str(tmp_path), other)


def test_unknown_hub_id_fails_without_network(monkeypatch, target):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DrafterCheckpointError, match="hub"):
        load_drafter("eyas-tests/no-such-drafter", target)


def test_engine_loads_a_drafter_directory(tmp_path, target):
    from completion.engine.torch_engine import TorchEngine
    from completion.training.synthetic import write_random_target

    target_dir = write_random_target(tmp_path / "target", seed=1, num_layers=6, hidden_size=H, vocab_size=V)
    from transformers import AutoModelForCausalLM
    on_disk = AutoModelForCausalLM.from_pretrained(target_dir)
    save_drafter(make(on_disk), tmp_path / "draft")
    engine = TorchEngine.load(str(target_dir), device="cpu", draft=str(tmp_path / "draft"))
    assert engine.drafter is not None and engine.drafter.config.draft_vocab_size == VD


def test_speculators_format_loads_too(tmp_path, target):
    """vllm-project/speculators nests the layer config and may name the fusion layer `layers.0.`;
    vLLM accepts both, so do we."""
    drafter = make(target, layer_style="qwen3")
    save_drafter(drafter, tmp_path)
    flat = json.loads((tmp_path / "config.json").read_text())
    top = {k: flat.pop(k) for k in ("draft_vocab_size", "target_hidden_size", "norm_before_residual")}
    aux = flat.pop("eagle_config")["eagle_aux_hidden_state_layer_ids"]
    mask_id = flat.pop("ptd_token_id")
    flat.pop("pard_token")
    (tmp_path / "config.json").write_text(json.dumps({
        "speculators_model_type": "peagle", "transformer_layer_config": flat, "mask_token_id": mask_id,
        "eagle_aux_hidden_state_layer_ids": aux, **top}))
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    save_file({k.replace("midlayer.", "layers.0."): v for k, v in tensors.items()}, str(tmp_path / WEIGHTS_FILE))
    loaded = load_drafter(str(tmp_path), target)
    assert loaded.config.layer_style == "qwen3" and loaded.config.mask_token_id == mask_id
    for name, value in drafter.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name


def test_disagreeing_mask_ids_are_refused(tmp_path, target):
    save_drafter(make(target), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["pard_token"] = cfg["ptd_token_id"] + 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DrafterConfigError, match="different mask token ids"):
        load_drafter(str(tmp_path), target)


def test_the_measured_default_k_round_trips_and_is_capped_by_the_trained_depth():
    from completion.speculative.config import DEFAULT_K_KEY, DEFAULT_NUM_SPECULATIVE_TOKENS
    plain = drafter_config()
    assert plain.default_num_speculative_tokens == min(DEFAULT_NUM_SPECULATIVE_TOKENS, 10)
    tuned = drafter_config(default_k=2)
    assert tuned.to_json()[DEFAULT_K_KEY] == 2 and tuned.default_num_speculative_tokens == 2
    back = DrafterConfig.from_json(tuned.to_json())
    assert back.default_k == 2 and DEFAULT_K_KEY not in back.extra
    assert drafter_config(default_k=12, trained_depth=6).default_num_speculative_tokens == 6
