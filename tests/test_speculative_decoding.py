"""Greedy speculative decoding is lossless: token for token equal to plain greedy decoding (fp32,
CPU), for dense Qwen3 and Qwen3-MoE targets, P-EAGLE and EAGLE-3 drafting, K in {1, 4, 10, 18},
prompts of several lengths, with and without prefix reuse. Plus streaming, cancellation, stats.
Speculation runs on the lean forward (and once on the Hugging Face forward); the plain reference
always runs on the Hugging Face forward.

The drafters are fitted for a few seconds on the targets' own continuations of the test prompts,
so that steps see full acceptance, partial acceptance and immediate rejection (asserted below:
a test that never accepts a draft would prove little).
"""
from __future__ import annotations

import asyncio

import pytest
import torch

from completion.engine.base import EngineInfo, GenerationParams, Stats
from completion.engine.target import TargetRunner
from completion.engine.torch_engine import PlainDecoder, TorchEngine, new_runner

MAX_TOKENS = 24
PROMPT_LENGTHS = (1, 7, 40)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices on a shared 2-core machine: one thread is much faster
    yield
    torch.set_num_threads(before)


def prompts_for(vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(100, vocab - 1000, (n,), generator=gen).tolist() for n in PROMPT_LENGTHS]


@pytest.fixture(scope="module", params=["dense", "moe", "dense-hf"])
def pair(request):
    from completion.training.drafter_fit import FitConfig, train_drafter_for
    from completion.training.synthetic import random_target

    kind, _, impl = request.param.partition("-")
    target = random_target(seed=3, moe=kind == "moe", num_layers=4, hidden_size=64)
    prompts = prompts_for(target.config.vocab_size)
    drafter = train_drafter_for(target, prompts, new_tokens=MAX_TOKENS + 8, aux_layer_ids=(1, 2, 3),
                                draft_vocab_size=256, fit=FitConfig(steps=80, depth=18, ar_steps=1, window=48))
    plain = [decode(PlainDecoder(TargetRunner(target), GenerationParams(), Stats(), None), p) for p in prompts]
    return {"kind": request.param, "impl": impl or "lean", "target": target, "drafter": drafter, "prompts": prompts, "plain": plain,
            "accepted": [], "drafted": []}


def decode(decoder, prompt, n=MAX_TOKENS) -> list[int]:
    decoder.prefill(prompt)
    out = []
    while len(out) < n:
        out += decoder.step()
    return out[:n]


@pytest.mark.parametrize("mode", ["peagle", "eagle3"])
@pytest.mark.parametrize("k", [1, 4, 10, 18])
def test_greedy_speculation_equals_plain(pair, mode, k):
    from completion.speculative import SpeculativeDecoder

    for prompt, expected in zip(pair["prompts"], pair["plain"]):
        stats = Stats()
        decoder = SpeculativeDecoder(new_runner(pair["target"], pair["impl"]), pair["drafter"],
                                     GenerationParams(num_speculative_tokens=k), stats, None,
                                     parallel=mode == "peagle")
        got = decode(decoder, prompt)
        assert got == expected, f"{pair['kind']} {mode} K={k} prompt of {len(prompt)} tokens diverged"
        assert len(stats.accepted_per_pos) == k and stats.drafts > 0
        assert all(a >= b for a, b in zip(stats.accepted_per_pos, stats.accepted_per_pos[1:]))
        pair["accepted"].append(sum(stats.accepted_per_pos))
        pair["drafted"].append(stats.drafts * k)


def test_drafts_were_both_accepted_and_rejected(pair):
    """Guards the test above: it must have exercised acceptance and rejection."""
    if not pair["drafted"]:
        pytest.skip("runs after test_greedy_speculation_equals_plain")
    assert 0 < sum(pair["accepted"]) < sum(pair["drafted"])


def test_lookup_drafts_are_copied_from_the_context():
    from completion.speculative.lookup import lookup_drafts

    assert lookup_drafts([1, 2, 3, 9, 8, 1, 2, 3], 4) == [9, 8, 1, 2]     # the 3-token suffix occurred
    assert lookup_drafts([1, 2, 3, 4, 5, 2, 3], 3) == [4, 5, 2]           # only the 2-token one did
    assert lookup_drafts([7, 2, 3, 1, 2, 3, 5, 2, 3], 2) == [5, 2]        # the latest occurrence wins
    assert lookup_drafts([1, 2, 3, 9, 1, 2, 3], 8) == [9, 1, 2, 3]        # fewer than k near the end
    assert lookup_drafts([5, 6, 7, 5], 2) == [] and lookup_drafts([3], 2) == []   # one token is not enough


def test_lookup_mixed_with_the_drafter_stays_lossless_and_in_step(pair):
    """Mode "peagle+lookup": steps whose drafts are copied from a repetitive context skip the
    drafter, whose pending rows then wait; the output still equals plain greedy decoding, both
    kinds of step happen, and each drafter step proposes what a drafter that never skipped a step
    proposes at the same context."""
    from completion.speculative import SpeculativeDecoder

    target, drafter = pair["target"], pair["drafter"]
    gen = torch.Generator().manual_seed(11)
    motif = torch.randint(100, target.config.vocab_size - 1000, (6,), generator=gen).tolist()
    prompts = [motif * 4 + [5, 6], pair["prompts"][2] + motif + pair["prompts"][1] + motif[:3]]
    lookups = drafter_steps = caught_up = 0
    for prompt in prompts:
        stats = Stats()
        decoder = SpeculativeDecoder(new_runner(target, pair["impl"]), drafter,
                                     GenerationParams(num_speculative_tokens=4), stats, None, lookup=True)
        after_lookups, propose = [], decoder.proposer.propose

        def recording(cache, context_ids, bonus, *rest):
            drafts = propose(cache, context_ids, bonus, *rest)
            if stats.lookups:       # a drafter step after some skipped ones
                after_lookups.append((list(context_ids) + [bonus], drafts.token_ids))
            return drafts
        decoder.proposer.propose = recording
        n = 40
        expected = decode(PlainDecoder(TargetRunner(target), GenerationParams(), Stats(), None), prompt, n)
        assert decode(decoder, prompt, n) == expected
        lookups += stats.lookups
        drafter_steps += stats.drafts - stats.lookups
        for context, drafts in after_lookups[:4]:
            fresh = SpeculativeDecoder(new_runner(target, pair["impl"]), drafter,
                                       GenerationParams(num_speculative_tokens=4), Stats(), None)
            fresh.prefill(context[:-1])
            again = fresh.proposer.propose(fresh.cache, fresh.runner.ids, context[-1], fresh.pending_aux,
                                           fresh.sampling)
            assert again.token_ids == drafts
            caught_up += 1
    assert lookups > 0 and drafter_steps > 0 and caught_up > 0


def engine_for(pair) -> TorchEngine:
    from transformers import AutoTokenizer

    from completion.models.tiny import qwen_tokenizer_dir
    return TorchEngine(pair["target"], AutoTokenizer.from_pretrained(qwen_tokenizer_dir()),
                       EngineInfo(engine="torch", model="test", device="cpu"), drafter=pair["drafter"],
                       impl=pair["impl"])


async def collect(engine, prompt, **params) -> tuple[list[int], Stats]:
    ids, stats = [], None
    async for chunk in engine.generate(prompt, GenerationParams(max_tokens=MAX_TOKENS, **params)):
        ids += chunk.token_ids
        stats = chunk.stats
    return ids, stats


def test_prefix_reuse_keeps_speculation_lossless(pair):
    """One document edited like a user types: each request reuses the KV (target and drafter) of
    the previous one and must still produce exactly the plain output from scratch."""
    engine = engine_for(pair)
    target = pair["target"]
    base = pair["prompts"][2]
    steps = [("peagle", 4, base), ("peagle", 4, base + [500, 501, 502]), ("eagle3", 5, base[:-6] + [777, 778]),
             ("plain", None, base + [500, 501]), ("peagle", 10, base + [500, 501, 502, 503]),
             ("peagle", 10, base + [500, 501, 502, 503])]

    async def run():
        reused = []
        for mode, k, prompt in steps:
            got, stats = await collect(engine, prompt, mode=mode, num_speculative_tokens=k, cache_key="doc")
            expected = decode(PlainDecoder(TargetRunner(target), GenerationParams(), Stats(), None), prompt)
            assert got == expected, f"{mode} K={k} after reuse diverged"
            reused.append(stats.reused_tokens)
        return reused

    reused = asyncio.run(run())
    assert reused[0] == 0
    assert reused[1] > len(base) // 2          # the drafter cache kept up with the target's
    assert reused[-1] >= len(base)             # the same prompt again: almost everything reused


def test_streaming_and_cancellation_in_speculative_modes(pair):
    engine = engine_for(pair)
    prompt = pair["prompts"][1]

    async def run():
        for mode in ("peagle", "eagle3"):
            chunks = []
            agen = engine.generate(prompt, GenerationParams(max_tokens=MAX_TOKENS, mode=mode,
                                                            num_speculative_tokens=4, cache_key="c"))
            async for chunk in agen:
                chunks.append(chunk)
                if len(chunks) == 2:
                    break
            await agen.aclose()
            assert chunks[0].token_ids and chunks[-1].stats.finish_reason == "cancelled"
            # the document's caches are still usable after a cancelled request
            got, stats = await collect(engine, prompt, mode=mode, num_speculative_tokens=4, cache_key="c")
            assert got == decode(PlainDecoder(TargetRunner(pair["target"]), GenerationParams(), Stats(), None),
                                 prompt)
            assert stats.finish_reason == "length" and stats.generated_tokens == MAX_TOKENS

    asyncio.run(run())


def test_stats_and_k_limits(pair):
    from completion.speculative import SpeculativeDecoder

    engine = engine_for(pair)
    _, stats = asyncio.run(collect(engine, pair["prompts"][2], mode="peagle", num_speculative_tokens=4))
    assert stats.drafts >= 1 and stats.draft_ms > 0 and stats.verify_ms > 0
    assert len(stats.accepted_per_pos) == 4
    # AL = generated / target forwards, each forward yields accepted drafts + 1
    assert stats.target_steps == stats.drafts + 1
    assert stats.acceptance_length == pytest.approx(stats.generated_tokens / stats.target_steps)
    with pytest.raises(ValueError, match="trained depth"):
        SpeculativeDecoder(new_runner(pair["target"], pair["impl"]), pair["drafter"],
                           GenerationParams(num_speculative_tokens=19),
                           Stats(), None)
    with pytest.raises(ValueError, match="needs a drafter"):
        asyncio.run(collect(TorchEngine(pair["target"], None, EngineInfo("torch", "t", "cpu")), [1, 2],
                            mode="peagle"))


def test_rows_a_request_leaves_behind_are_reused(pair):
    """A cancelled prefill keeps the chunks it finished, and a request that ends before its
    drafter ran keeps its rows too: the target's states the drafter has not consumed stay on the
    drafter's cache, so the next request reuses those rows (exactly: its output is still plain)."""
    from completion.engine.target import PREFILL_CHUNK, PrefillStopped
    from completion.speculative import SpeculativeDecoder

    if pair["impl"] != "lean":
        pytest.skip("the Hugging Face runner stops only between chunks; the lean one is what serves")
    target, drafter = pair["target"], pair["drafter"]
    prompt = (pair["prompts"][2] * (PREFILL_CHUNK // len(pair["prompts"][2]) + 2))[:PREFILL_CHUNK + 40]
    runner = new_runner(target, "lean")

    def request():
        return SpeculativeDecoder(runner, drafter, GenerationParams(num_speculative_tokens=4), Stats(), None,
                                  lookup=True)
    with pytest.raises(PrefillStopped):   # a key came after the first chunk
        request().prefill(prompt, should_stop=lambda: len(runner.ids) >= PREFILL_CHUNK)
    longer = prompt + [500, 501]
    second = request()
    second.prefill(longer)
    assert second.stats.reused_tokens == PREFILL_CHUNK
    assert second.step()   # the first token comes from the prefill: the drafter has not run
    third = request()
    out = decode(third, longer + [502])
    assert third.stats.reused_tokens == len(longer)
    assert out == decode(PlainDecoder(TargetRunner(target), GenerationParams(), Stats(), None), longer + [502])
