"""Choosing the forward (lean by default where it supports the model, Hugging Face otherwise), its
settings in the CLI and the server, and the compiled lean path against the eager one."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from completion.engine.lean import unsupported_reason
from completion.engine.torch_engine import resolve_impl, new_runner
from completion.training.synthetic import random_target, random_target_config


def test_lean_is_the_default_where_it_supports_the_model():
    from transformers import MistralConfig

    qwen = SimpleNamespace(config=random_target_config(num_layers=2, hidden_size=32, vocab_size=64))
    mistral = SimpleNamespace(config=MistralConfig(num_hidden_layers=2, hidden_size=32, vocab_size=64))
    assert resolve_impl(qwen, None) == "lean" and resolve_impl(qwen, "hf") == "hf"
    assert resolve_impl(mistral, None) == "hf"
    with pytest.raises(ValueError, match="model_type 'mistral'"):
        resolve_impl(mistral, "lean")
    with pytest.raises(ValueError, match="unknown impl"):
        resolve_impl(qwen, "fast")


@pytest.mark.parametrize("change, reason", [
    ({"layer_types": ["full_attention", "sliding_attention"]}, "sliding-window"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}}, "rope_type 'yarn'"),
    ({"attention_bias": True}, "attention_bias"),
])
def test_what_lean_does_not_implement_is_refused(change, reason):
    cfg = random_target_config(num_layers=2, hidden_size=32, vocab_size=64)
    assert unsupported_reason(cfg) is None
    for key, value in change.items():
        setattr(cfg, key, value)
    assert reason in unsupported_reason(cfg)


def test_impl_and_compile_settings_in_cli_and_server():
    from completion.cli import main
    from lsp_server.config import ServerConfig

    with pytest.raises(SystemExit):
        main(["complete", "--impl", "fast", "x.py"])
    with pytest.raises(SystemExit, match="torch engine"):
        main(["complete", "--engine", "openai", "--compile", "x.py"])
    cfg, problems = ServerConfig().merged({"eyas": {"impl": "hf"}})
    assert cfg.impl == "hf" and not problems and cfg.needs_reload(ServerConfig())
    assert ServerConfig().merged({"impl": "fast"})[1]
    cfg, problems = ServerConfig().merged({"eyas": {"compile": True}})
    assert cfg.compile and not problems and cfg.needs_reload(ServerConfig())
    assert ServerConfig().merged({"compile": "yes"})[1]
    cfg, problems = ServerConfig().merged({"eyas": {"precision": "int4"}})
    assert cfg.precision == "int4" and not problems and cfg.needs_reload(ServerConfig())
    assert "unknown precision 'int2'" in ServerConfig().merged({"precision": "int2"})[1][0]
    with pytest.raises(SystemExit):
        main(["complete", "--precision", "int2", "x.py"])


def test_precision_auto_is_measured_per_device():
    from completion.engine.lean import native
    from completion.engine.torch_engine import resolve_precision
    assert resolve_precision("auto", "cpu") == ("bf16" if native.has_amx() else "int8")   # docs/qwen2.5-coder-0.5b.md
    assert resolve_precision("auto", "cuda") == "bf16" and resolve_precision(None, "cuda:1") == "bf16"
    assert resolve_precision(None, "cpu") == "float32" and resolve_precision("int4", "cpu") == "int4"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", "cpu")


def test_compiled_steps_equal_eager():
    """Compiled steps (about 40 s to compile on 2 cores) agree with eager ones and never recompile
    once warm, across aux-layer sets and a cache growth."""
    from completion.engine.lean import LeanTargetRunner, lean_model_for
    from completion.engine.lean.compiled import CompiledSteps

    target = random_target(seed=1, num_layers=2, hidden_size=32, vocab_size=256, init_std=0.2)
    lean = lean_model_for(target)
    compiled = CompiledSteps(lean)
    assert compiled.warm_up(((), (0, 1)))
    eager, fast = new_runner(target), LeanTargetRunner(lean, compiled)
    seq = torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(0)).tolist()
    steps = [(seq[:20], ()), (seq[20:21], ()), (seq[21:26], (0, 1)), (seq[26:27], (0, 1))]
    steps += [([t], ()) for t in seq[27:270]]          # through a cache growth
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for ids, layers in steps:
        (a, ha), (b, hb) = eager.forward(ids, layers), fast.forward(ids, layers)
        assert (a - b).abs().max() < 1e-4
        assert (ha is None) == (hb is None) and (ha is None or (ha - hb).abs().max() < 1e-4)
    assert not compiled.failed
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs, "recompiled after the warm-up"


def test_a_speculative_engine_below_float32_is_not_compiled():
    """Compiled bf16 steps round differently from the eager verification rows (not lossless)."""
    from completion.engine.lean import lean_model_for
    from completion.engine.torch_engine import compile_lean

    target = random_target(seed=1, num_layers=2, hidden_size=32, vocab_size=256).to(torch.bfloat16)
    assert compile_lean(lean_model_for(target), drafter=object()) is None


def test_int8_weights_stay_close_to_bf16_and_decode(tiny_model_dir):
    """Weight-only int8 (per-row scales, bf16 activations): logits close to the bf16 lean forward,
    the same greedy choice on almost every position, and generation (plain and speculative) runs."""
    import asyncio

    from completion.engine import GenerationParams
    from completion.engine.lean import lean_model_for
    from completion.engine.lean.weights import Int8Weight
    from completion.engine.torch_engine import TorchEngine

    bf16 = TorchEngine.load(str(tiny_model_dir), device="cpu", precision="bf16")
    int8 = TorchEngine.load(str(tiny_model_dir), device="cpu", precision="int8")
    lean8 = lean_model_for(int8.model)
    assert isinstance(lean8.w.lm_head, Int8Weight) and isinstance(lean8.w.layers[0].qkv, Int8Weight)
    assert int8.info.precision == "int8"
    ids = torch.randint(0, 1000, (48,))
    logits = []
    for engine in (bf16, int8):
        lean = lean_model_for(engine.model)
        cache = lean.new_cache()
        lean.reserve(cache, len(ids))
        normed, _ = lean.hidden_states(ids, torch.arange(len(ids)), cache, len(ids))
        logits.append(lean.logits(normed))
    scale = logits[0].abs().max()
    assert (logits[0] - logits[1]).abs().max() < 0.1 * scale
    assert (logits[0].argmax(-1) == logits[1].argmax(-1)).float().mean() > 0.8

    async def generate():
        out = []
        async for chunk in int8.generate(ids.tolist(), GenerationParams(max_tokens=8)):
            out += chunk.token_ids
        return out
    assert len(asyncio.run(generate())) == 8
    with pytest.raises(ValueError, match="lean forward"):
        TorchEngine.load(str(tiny_model_dir), device="cpu", precision="int8", impl="hf")
    with pytest.raises(ValueError, match="unknown precision"):
        TorchEngine.load(str(tiny_model_dir), device="cpu", precision="int2")
