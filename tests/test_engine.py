"""The torch engine (lean and Hugging Face forwards) against Hugging Face `generate` (the reference),
on tiny random models."""
import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM

from completion.engine import GenerationParams
from completion.models.tiny import build_tiny_model
from completion.engine.torch_engine import TextStream, TorchEngine


@pytest.fixture(scope="module", params=["dense", "moe", "dense-hf"])
def engine(request, tmp_path_factory):
    """The default (lean) forward on dense and MoE models; the Hugging Face forward once."""
    kind, _, impl = request.param.partition("-")
    path = build_tiny_model(tmp_path_factory.mktemp(kind), moe=kind == "moe", num_layers=3, seed=1)
    engine = TorchEngine.load(str(path), device="cpu", impl=impl or None)
    assert engine.impl == (impl or "lean") and engine.info.impl == engine.impl
    return engine


def run(engine, ids, **kw):
    async def go():
        out, stats = [], None
        async for chunk in engine.generate(ids, GenerationParams(**kw)):
            out += chunk.token_ids
            stats = chunk.stats
        return out, stats
    return asyncio.run(go())


def reference_greedy(engine, ids, n):
    out = engine.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                                min_new_tokens=n, pad_token_id=0)
    return out[0, len(ids):].tolist()


PROMPTS = [[5, 6, 7], list(range(100, 140)), [151659, 3, 4, 151661, 9, 151660]]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_equals_reference(engine, prompt):
    ids, stats = run(engine, prompt, max_tokens=12)
    assert ids == reference_greedy(engine, prompt, 12)
    assert stats.generated_tokens == 12 and stats.finish_reason == "length"
    assert stats.acceptance_length == 1.0


def test_prefix_reuse_gives_the_same_tokens(engine):
    base = list(range(200, 260))
    first, s1 = run(engine, base, max_tokens=8, cache_key="doc")
    edited = base[:50] + [7, 8, 9]
    second, s2 = run(engine, edited, max_tokens=8, cache_key="doc")
    assert s2.reused_tokens == 50
    assert second == reference_greedy(engine, edited, 8)
    # the cache now also holds generated tokens; a repeat of the first prompt reuses all but one
    again, s3 = run(engine, base, max_tokens=8, cache_key="doc")
    assert again == first and s3.reused_tokens == 50


def test_stop_ids_end_generation(engine):
    prompt = PROMPTS[1]
    free = reference_greedy(engine, prompt, 10)
    ids, stats = run(engine, prompt, max_tokens=10, stop_ids=[free[3]])
    assert ids == free[: free.index(free[3])] and stats.finish_reason == "stop"


def test_cancel_mid_stream_then_serve_again(engine):
    prompt = PROMPTS[1]

    async def cancel_after_two():
        got = []
        gen = engine.generate(prompt, GenerationParams(max_tokens=50, cache_key="c"))
        async for chunk in gen:
            got += chunk.token_ids
            if len(got) >= 2:
                break
        await gen.aclose()
        return got
    partial = asyncio.run(cancel_after_two())
    assert len(partial) == 2
    ids, _ = run(engine, prompt, max_tokens=6, cache_key="c")
    assert ids == reference_greedy(engine, prompt, 6)


def test_a_reader_that_stops_stops_the_model_thread(engine):
    """The request decodes ahead on the model thread; closing the stream must end that work, not
    leave it running to max_tokens in front of the next request."""
    from completion.engine.torch_engine import on_model_thread

    async def read_one_then_close():
        gen = engine.generate(PROMPTS[1], GenerationParams(max_tokens=4000, stop_ids=[]))
        chunk = await gen.__anext__()
        await gen.aclose()
        return chunk.stats
    stats = asyncio.run(read_one_then_close())
    on_model_thread(lambda: None)   # whatever was in flight has finished
    assert stats.finish_reason == "cancelled" and stats.generated_tokens < 4000


def test_all_model_work_runs_on_the_model_thread(tiny_model_dir, monkeypatch):
    """Loading and decoding on one thread: a second thread's OpenMP team made steps 3x slower."""
    import threading

    from completion.engine import torch_engine

    threads = set()
    load, decode = torch_engine.TorchEngine._load.__func__, torch_engine.decode

    def spy_load(cls, *args, **kwargs):
        threads.add(threading.current_thread().name)
        return load(cls, *args, **kwargs)

    def spy_decode(*args):
        threads.add(threading.current_thread().name)
        return decode(*args)
    monkeypatch.setattr(torch_engine.TorchEngine, "_load", classmethod(spy_load))
    monkeypatch.setattr(torch_engine, "decode", spy_decode)
    ids, _ = run(torch_engine.TorchEngine.load(str(tiny_model_dir), device="cpu"), PROMPTS[0], max_tokens=3)
    assert len(ids) == 3 and len(threads) == 1 and threads.pop().startswith("eyas-model")


def test_sampling_is_seeded_and_top_p_tiny_is_greedy(engine):
    prompt = PROMPTS[0]
    a, _ = run(engine, prompt, max_tokens=8, temperature=1.0, seed=3)
    b, _ = run(engine, prompt, max_tokens=8, temperature=1.0, seed=3)
    assert a == b
    nucleus, _ = run(engine, prompt, max_tokens=8, temperature=1.0, top_p=1e-6, seed=4)
    assert nucleus == reference_greedy(engine, prompt, 8)


def test_zero_max_tokens_and_bad_params(engine):
    assert run(engine, PROMPTS[0], max_tokens=0)[0] == []
    with pytest.raises(ValueError):
        GenerationParams(top_p=0)
    with pytest.raises(ValueError):
        GenerationParams(mode="warp")


def test_text_stream_never_splits_a_character(qwen_tokenizer):
    ids = qwen_tokenizer("a🎉b", add_special_tokens=False)["input_ids"]
    stream = TextStream(qwen_tokenizer)
    pieces = [stream.push([i]) for i in ids]
    assert "".join(pieces) == "a🎉b" and all("\ufffd" not in p for p in pieces)


def test_multiline_mode_overrides_the_syntax_decision(tiny_model_dir):
    """The editors' `multiline` setting: "never" keeps one line even where the syntax would allow a
    block, "always" allows a block at the end of a line."""
    from completion.context import DocumentTrees
    from completion.service import Completer

    trees = DocumentTrees()
    text = "def total(xs):\n    \n"
    trees.open("file:///t.py", "python", text)
    completer = Completer(TorchEngine.load(str(tiny_model_dir), device="cpu"), trees)
    cursor = text.index("\n    ") + 5

    async def go(mode):
        return await completer.complete("file:///t.py", cursor, multiline_mode=mode, max_tokens=24)
    auto, never, always = (asyncio.run(go(m)) for m in ("auto", "never", "always"))
    assert auto.multiline and not never.multiline and always.multiline
    assert "\n" not in never.text


def test_prefill_in_chunks_equals_one_pass_and_stops_where_asked(engine):
    """Chunked prefill gives the logits of a single pass; a stop request leaves the cache holding
    exactly the chunks computed, and the next prefill carries on from there. The lean runner asks
    between layers too, so a stop inside a chunk appends nothing of it."""
    from completion.engine.target import PREFILL_CHUNK, PrefillStopped, prefill
    from completion.engine.torch_engine import new_runner

    from completion.engine.lean import LeanTargetRunner

    chunked, chunk = new_runner(engine.model, engine.impl), PREFILL_CHUNK
    ids = [int(t) for t in torch.randint(0, 1000, (2 * chunk + 17,))]
    whole = new_runner(engine.model, engine.impl)
    reference, _ = whole.forward(ids, logits_to_keep=1)
    calls = []
    with pytest.raises(PrefillStopped):
        prefill(chunked, ids, should_stop=lambda: calls.append(1) or len(calls) == 2)
    within_chunks = isinstance(chunked, LeanTargetRunner)
    assert chunked.ids == ([] if within_chunks else ids[:2 * chunk]) and len(calls) == 2
    last, _ = prefill(chunked, ids[chunked.reuse_prefix(ids):])
    assert chunked.ids == ids
    assert torch.allclose(last, reference[-1], atol=1e-4)


def test_a_stop_does_not_cut_into_the_rows_to_finish(engine):
    """`finish` rows are computed even when a stop is asked from the start (the rows the next
    request of the document reuses), and the prefill stops right after them; those rows give the
    same logits as an uninterrupted prefill."""
    from completion.engine.target import PREFILL_CHUNK, PrefillStopped, prefill
    from completion.engine.torch_engine import new_runner

    ids = [int(t) for t in torch.randint(0, 1000, (PREFILL_CHUNK + 90,))]
    finish = PREFILL_CHUNK + 30
    runner = new_runner(engine.model, engine.impl)
    with pytest.raises(PrefillStopped):
        prefill(runner, ids, should_stop=lambda: True, finish=finish)
    assert runner.ids == ids[:finish]
    last, _ = prefill(runner, ids[finish:])
    reference, _ = new_runner(engine.model, engine.impl).forward(ids, logits_to_keep=1)
    assert torch.allclose(last, reference[-1], atol=1e-4)
