"""`eyas bench engines`: our Qwen3 -> GGUF converter, llama.cpp agreeing with our engine, and a
--quick run on a tiny random pair (every requested column measured or skipped with a reason)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import need_llama_cpp


VOCAB = 640          # model rows; the tokenizer has 600 tokens, so the converter pads 40
SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
            "<|repo_name|>", "<|file_sep|>"]


def write_small_tokenizer(out_dir) -> None:
    """A byte-level BPE with Qwen's control tokens, trained on argparse.py in seconds: a 152k-token
    Qwen vocabulary makes every GGUF write and read here minutes slower on a busy machine."""
    import sysconfig
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([(Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIALS[0], pad_token=SPECIALS[0]).save_pretrained(out_dir)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A random Qwen3 target with a small BPE tokenizer, and a P-EAGLE and an EAGLE-3 random drafter."""
    from transformers import AutoModelForCausalLM

    from completion.speculative import init_drafter, save_drafter
    from completion.training.drafter_fit import drafter_config_for
    from completion.training.synthetic import random_target

    root = tmp_path_factory.mktemp("engines")
    target_dir = root / "target"
    model = random_target(seed=0, num_layers=4, hidden_size=32, vocab_size=VOCAB, init_std=0.2)
    model.config.bos_token_id = model.config.eos_token_id = model.config.pad_token_id = 0   # <|endoftext|>
    model.save_pretrained(target_dir)
    write_small_tokenizer(target_dir)
    target = AutoModelForCausalLM.from_pretrained(target_dir)
    dirs = {}
    for name, depth, own in (("peagle", 18, True), ("eagle3", 7, False)):
        cfg = drafter_config_for(target.config, num_layers=1, draft_vocab_size=128, depth=depth)
        vocab = torch.arange(0, VOCAB, VOCAB // 128)[:128]
        drafter = init_drafter(cfg, seed=1, std=0.2, own_embeddings=own, draft_to_target=vocab, target_model=target)
        dirs[name] = save_drafter(drafter, root / name)
    return target_dir, dirs["peagle"], dirs["eagle3"]


def hf_tensors(model_dir) -> dict[str, np.ndarray]:
    from completion.evaluation.gguf_export import gguf_name, read_tensors
    return {gguf_name(k): v for k, v in read_tensors(model_dir).items()}


def test_gguf_export_f32_round_trip(tiny_pair, tmp_path):
    import gguf
    from completion.evaluation.gguf_export import export_gguf

    target_dir = tiny_pair[0]
    reader = gguf.GGUFReader(export_gguf(target_dir, tmp_path / "t.gguf", "f32"))
    expected = hf_tensors(target_dir)
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(expected)
    assert {"token_embd.weight", "output.weight", "blk.3.attn_q_norm.weight", "blk.0.ffn_down.weight"} <= set(got)
    for name, array in expected.items():
        t = got[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == list(reversed(array.shape)), name        # GGUF lists dims innermost first
        np.testing.assert_array_equal(np.asarray(t.data).reshape(array.shape), array)
    field = lambda key: reader.fields[key].contents()
    assert field("general.architecture") == "qwen3" and field("tokenizer.ggml.model") == "gpt2"
    assert field("qwen3.block_count") == 4 and field("qwen3.embedding_length") == 32
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    assert len(tokens) == VOCAB and tokens[1] == "<|fim_prefix|>" and tokens[VOCAB - 1] == f"[PAD{VOCAB - 1}]"
    assert types[1] == gguf.TokenType.CONTROL and types[VOCAB - 1] == gguf.TokenType.UNUSED
    assert field("tokenizer.ggml.fim_pre_token_id") == 1 and field("tokenizer.ggml.eos_token_id") == 0
    assert len(field("tokenizer.ggml.merges")) > 300


@pytest.mark.parametrize("precision", ["q8_0", "bf16"])
def test_gguf_export_quantized_within_tolerance(tiny_pair, tmp_path, precision):
    import gguf
    from completion.evaluation.gguf_export import export_gguf

    target_dir = tiny_pair[0]
    reader = gguf.GGUFReader(export_gguf(target_dir, tmp_path / "t.gguf", precision))
    expected = hf_tensors(target_dir)
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "bf16": gguf.GGMLQuantizationType.BF16}[precision]
    for t in reader.tensors:
        array = expected[t.name]
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(array.shape)
        if array.ndim == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32   # norms stay exact
            np.testing.assert_array_equal(values, array)
            continue
        assert t.tensor_type == qtype, t.name
        # Q8_0: one scale per 32 values, error <= half a step of amax/127; bf16: 8 mantissa bits
        step = np.abs(array).max() / 127 if precision == "q8_0" else np.abs(array).max() / 128
        assert np.abs(values - array).max() <= step, t.name


def bench_setup(target_dir, tmp_path, **kw):
    from completion.evaluation.engine_peers import BenchSetup
    prompts = {"40": [list(range(100, 140))], "fim": [list(range(200, 230)), list(range(300, 350))]}
    return BenchSetup(target=target_dir, peagle=None, eagle3=None, prompts=prompts, new_tokens=16, repeats=2,
                      threads=1, ks={}, work=tmp_path, **kw)


def our_greedy(target_dir, prompts: list[list[int]], n: int) -> list[int]:
    import asyncio

    from completion.engine.base import GenerationParams
    from completion.engine.torch_engine import TorchEngine

    engine = TorchEngine.load(str(target_dir), device="cpu", precision="float32", draft="none")

    async def run():
        ids = []
        for prompt in prompts:
            async for chunk in engine.generate(prompt, GenerationParams(max_tokens=n, mode="plain")):
                ids += chunk.token_ids
        await engine.close()
        return ids
    return asyncio.run(run())


def test_llama_cpp_programs_not_built_say_how_to_build_them(tmp_path, monkeypatch):
    from completion.evaluation.llama_cpp import NotBuilt, home, program

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert home().is_relative_to(tmp_path)
    with pytest.raises(NotBuilt, match="make install-peers"):
        program("llama-server")
    (home() / "build" / "bin").mkdir(parents=True)
    (home() / "build" / "bin" / "llama-server").touch()
    with pytest.raises(NotBuilt):   # no stamp: an interrupted build is not a build
        program("llama-server")


def test_llama_server_greedy_equals_our_engine(tiny_pair, tmp_path):
    """llama-server (the peer's plain column) decodes our converter's f32 GGUF to the same greedy
    tokens as our engine, every repeat, and its n-gram speculation to the same tokens again."""
    need_llama_cpp()
    from completion.evaluation.engine_peers import SERVER_SPECULATION, measure_llama_server_plain, measure_llama_server_spec

    setup = bench_setup(tiny_pair[0], tmp_path)
    plain = measure_llama_server_plain(setup, "f32")
    for name, prompts in setup.prompts.items():
        m = plain[name]
        assert m["token_ids"] == our_greedy(tiny_pair[0], prompts, 16) and m["repeats_agree"]
        assert m["acceptance_length"] is None and m["decode_ms_per_token"] > 0 and m["prefill_ms"] > 0
        assert m["bytes_per_token"] > 0
    spec = measure_llama_server_spec(setup, "f32")
    for name, m in spec.items():
        assert not m["failed_k"] and set(m["by_k"]) == set(SERVER_SPECULATION)
        for config, figures in m["by_k"].items():   # every mode, every repeat: the plain tokens
            assert figures["token_ids"] == plain[name]["token_ids"] and figures["repeats_agree"], config
            assert figures["acceptance_length"] >= 1.0


def test_llama_server_with_a_draft_model(tiny_pair, tmp_path, monkeypatch):
    """The draft-model configurations (a 1.5B target's 0.5B): `-md` reaches llama-server, the output
    stays the plain one, and a step's bytes count the draft model's K forwards. (The tiny target
    drafts for itself here: the registry's pair is 1.1 GB.)"""
    need_llama_cpp()
    from types import SimpleNamespace

    from completion.evaluation import engine_peers

    setup = bench_setup(tiny_pair[0], tmp_path, llama_draft=SimpleNamespace(name="tiny-0.5b"))
    target = engine_peers.gguf_file(setup, "f32")
    monkeypatch.setattr(engine_peers, "gguf_file", lambda setup, precision, packaged=None: target)
    monkeypatch.setattr(engine_peers, "SERVER_SPECULATION", {})
    plain = engine_peers.measure_llama_server_plain(setup, "f32")
    spec = engine_peers.measure_llama_server_spec(setup, "f32")
    step = engine_peers.gguf_decode_bytes(target)
    for name, m in spec.items():
        assert set(m["by_k"]) == {f"draft-0.5b/{k}" for k in engine_peers.DRAFT_MODEL_KS} and not m["failed_k"]
        for config, figures in m["by_k"].items():
            assert figures["token_ids"] == plain[name]["token_ids"], config
            assert figures["acceptance_length"] > 1.0            # a model drafting for itself is accepted
            k = int(config.rsplit("/", 1)[1])
            assert figures["bytes_per_token"] == pytest.approx(step * (1 + k) / figures["acceptance_length"])


def test_llama_bench_column_times_each_sets_context(tiny_pair, tmp_path):
    """The llama-bench column: prefill at each set's (mean) prompt length from an empty context,
    decode of N tokens after that much context, llama-bench's own figures, bytes per token from
    the GGUF."""
    need_llama_cpp()
    import gguf

    from completion.evaluation.engine_peers import gguf_file, measure_llama_bench

    setup = bench_setup(tiny_pair[0], tmp_path)
    sets = measure_llama_bench(setup, "f32")
    assert {n: m["context"] for n, m in sets.items()} == {"40": 40, "fim": 40}
    for m in sets.values():
        assert m["prefill_ms"] > 0 and m["decode_ms_per_token"] > 0 and m["token_ids"] == []
        assert abs(m["tokens_per_s"] - m["llama_bench"]["decode_tokens_per_s"]) <= 0.01 * m["tokens_per_s"]
    tensors = gguf.GGUFReader(gguf_file(setup, "f32")).tensors
    embed = next(t for t in tensors if t.name == "token_embd.weight")
    assert sets["40"]["bytes_per_token"] == sum(int(t.n_bytes) for t in tensors) - int(embed.n_bytes) + 32 * 4


def test_quick_bench_writes_every_column(tiny_pair, tmp_path, capsys):
    from completion.evaluation.engine_bench import main
    from completion.evaluation.engine_peers import PEERS

    target_dir, peagle_dir, eagle3_dir = tiny_pair
    out = tmp_path / "engines.json"
    threads = torch.get_num_threads()
    try:   # vLLM is pointed at a missing venv: its columns must be skipped with that reason, quickly
        assert main(["--quick", "--model", str(target_dir), "--draft", str(peagle_dir), "--eagle3", str(eagle3_dir),
                     "--precisions", "f32,bf16,int8,int4,int4-head8,q8_0,q4", "--threads", "1", "--vllm-python", str(tmp_path / "no-vllm" / "python"),
                     "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    cells = {(c["peer"], c["precision"]): c for c in report["cells"]}
    assert set(cells) == {(p, q) for p in PEERS for q in ("f32", "bf16", "int8", "int4", "int4-head8", "q8_0", "q4")}
    for c in cells.values():
        assert c["status"] in ("measured", "skipped")
        if c["status"] == "skipped":
            assert c["reason"]
            continue
        assert set(c["sets"]) == {"32", "64", "humaneval-fim"}    # --quick: one HumanEval FIM request
        for m in c["sets"].values():
            assert m["decode_ms_per_token"] > 0 and m["prefill_ms"] > 0 and m["bytes_per_token"] > 0
            assert len(m["token_ids"]) == (0 if c["peer"] == "llama-bench" else 8)
    for precision in ("f32", "bf16"):
        for peer in ("eyas-plain", "eyas-eagle3", "eyas-peagle", "eyas-lookup", "hf"):
            assert cells[(peer, precision)]["status"] == "measured", cells[(peer, precision)]
        for peer in ("eyas-eagle3", "eyas-peagle", "eyas-lookup"):   # greedy speculative decoding is lossless
            assert all(m["agree"] == 8 for m in cells[(peer, precision)]["sets"].values())
        assert "make install-vllm" in cells[("vllm-peagle", precision)]["reason"]
    assert "not offered" in cells[("eyas-plain", "q8_0")]["reason"]
    for peer in ("eyas-plain", "eyas-peagle"):   # int8 weights: Eyas only, lossless against its own plain
        assert cells[(peer, "int8")]["status"] == "measured", cells[(peer, "int8")]
    assert all(m["agree"] == 8 for m in cells[("eyas-peagle", "int8")]["sets"].values())
    assert "not offered" in cells[("hf", "int8")]["reason"]
    for peer in ("llama-bench", "llama-server", "llama-server-spec"):
        q4_reason = cells[(peer, "q4")]["reason"]       # q4 is a registry model's own GGUF
        assert "registry" in q4_reason or "install-peers" in q4_reason
    # int4 with an int8 output head reads more bytes a token than int4 throughout
    int4, head8 = cells[("eyas-plain", "int4")]["sets"]["64"], cells[("eyas-plain", "int4-head8")]["sets"]["64"]
    assert head8["bytes_per_token"] > int4["bytes_per_token"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "x llama" in printed and "prompt 64 tokens" in printed and "prompts humaneval-fim" in printed
    assert "skipped:" in printed
    assert report["config"]["prompt_sets"]["64"] == [64] and len(report["config"]["prompt_sets"]["humaneval-fim"]) == 1
    assert len(report["bars"]) == 5 and all(b.startswith(("[PASS]", "[FAIL]")) for b in report["bars"])
    assert "default decoding (P-EAGLE+lookup) tok/s / llama-bench plain decode" in printed and "MB/tok" in printed
    assert "[PASS] speculative output equals plain output in every Eyas column" in printed
    # a saved run printed again, measuring nothing: the same cells, the same verdicts
    assert main(["--from-json", str(out), "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["bars"] == report["bars"] and again["cells"] == report["cells"]


def test_median_round_takes_each_sets_middle_round():
    from completion.evaluation.engine_bench import median_round

    def cell(status, **ms):
        return {"peer": "eyas-plain", "precision": "bf16", "status": status, "wall_s": 1.0,
                "sets": {name: {"decode_ms_per_token": v, "prefill_ms": 10 * v} for name, v in ms.items()}}

    rounds = [cell("measured", a=30.0, b=20.0), cell("measured", a=25.0, b=40.0), cell("measured", a=45.0, b=21.0)]
    merged = median_round(rounds)
    assert merged["sets"]["a"]["decode_ms_per_token"] == 30.0 and merged["sets"]["a"]["prefill_ms"] == 300.0
    assert merged["sets"]["b"]["decode_ms_per_token"] == 21.0
    assert merged["sets"]["a"]["rounds_decode_ms_per_token"] == [30.0, 25.0, 45.0]
    assert merged["rounds"] == 3 and merged["wall_s"] == 3.0
    assert median_round(rounds[:2])["sets"]["a"]["decode_ms_per_token"] == 30.0     # even count: the slower middle
    skipped = {"peer": "hf", "precision": "int8", "status": "skipped", "reason": "not offered", "wall_s": 0.0}
    assert median_round([skipped, dict(skipped)]) == skipped
    assert median_round([skipped, rounds[0]])["sets"]["a"]["decode_ms_per_token"] == 30.0   # a failed round is left out
