"""Verification: named greedy scenarios, and statistical tests that speculative sampling leaves
the target's distribution unchanged (fixed seeds; tolerance: a chi-square goodness-of-fit test
against the exact target distribution must not reject at p < 0.001).
"""
from __future__ import annotations

import pytest
import torch

from completion.speculative.verify import verify_greedy, verify_sampled

P_VALUE_FLOOR = 1e-3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices on a shared 2-core machine: one thread is much faster
    yield
    torch.set_num_threads(before)


def one_hot_logits(ids: list[int], vocab: int = 10) -> torch.Tensor:
    logits = torch.zeros(len(ids), vocab)
    logits[torch.arange(len(ids)), torch.tensor(ids)] = 5.0
    return logits


@pytest.mark.parametrize("drafts, target, accepted, next_token", [
    ([1, 2, 3], [1, 2, 3, 4], 3, 4),     # all accepted: the target adds its bonus token
    ([7, 2, 3], [1, 2, 3, 4], 0, 1),     # first draft wrong: the target's own token replaces it
    ([1, 2, 9], [1, 2, 3, 4], 2, 3),     # mismatch in the middle: later matches do not count
    ([1, 5, 3], [1, 2, 3, 4], 1, 2),
    ([6], [6, 8], 1, 8),                 # K = 1
    ([6], [5, 8], 0, 5),
])
def test_greedy_scenarios(drafts, target, accepted, next_token):
    verdict = verify_greedy(drafts, one_hot_logits(target))
    assert (verdict.num_accepted, verdict.next_token) == (accepted, next_token)


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Goodness of fit of observed counts to probs (cells with tiny expectation merged away)."""
    n = counts.sum()
    expected = probs * n
    keep = expected >= 5
    obs = torch.cat([counts[keep].double(), counts[~keep].sum().double().view(1)])
    exp = torch.cat([expected[keep].double(), expected[~keep].sum().double().view(1)])
    obs, exp = obs[exp > 0], exp[exp > 0]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


def test_rejection_sampling_preserves_each_position_distribution():
    """Synthetic p (target) and q (drafter) per position: the first emitted token follows p0, and
    the second (when the first draft was accepted) follows p1, whatever q is."""
    gen = torch.Generator().manual_seed(0)
    vocab, k, draws = 8, 3, 20000
    target = torch.distributions.Dirichlet(torch.full((vocab,), 0.7)).sample((k + 1,))
    draft = torch.distributions.Dirichlet(torch.full((vocab,), 0.7)).sample((k,))
    first, second = torch.zeros(vocab), torch.zeros(vocab)
    naive_first = torch.zeros(vocab)
    for _ in range(draws):
        ids = [int(torch.multinomial(draft[i], 1, generator=gen)) for i in range(k)]
        verdict = verify_sampled(ids, draft, target, gen)
        out = ids[:verdict.num_accepted] + [verdict.next_token]
        first[out[0]] += 1
        if len(out) > 1:
            second[out[1]] += 1
        naive_first[ids[0]] += 1          # what accepting every draft would emit
    assert chi_square_p_value(first, target[0]) > P_VALUE_FLOOR
    assert chi_square_p_value(second, target[1]) > P_VALUE_FLOOR
    # the test has power: emitting the drafts unverified is rejected outright
    assert chi_square_p_value(naive_first, target[0]) < 1e-12


def test_greedy_drafts_under_sampling_are_lossless_too():
    """One-hot q (greedy drafts, vLLM's default) is a valid proposal as well."""
    gen = torch.Generator().manual_seed(1)
    vocab, draws = 6, 20000
    target = torch.distributions.Dirichlet(torch.ones(vocab)).sample((2,))
    draft = torch.zeros(1, vocab)
    draft[0, 2] = 1.0
    counts = torch.zeros(vocab)
    for _ in range(draws):
        verdict = verify_sampled([2], draft, target, gen)
        counts[2 if verdict.num_accepted else verdict.next_token] += 1
    assert chi_square_p_value(counts, target[0]) > P_VALUE_FLOOR


@pytest.fixture(scope="module")
def tiny_vocab_pair():
    """A 16-token target and a drafter over 12 of those tokens (d2t mapping in play)."""
    from completion.speculative import DrafterConfig, init_drafter
    from completion.training.synthetic import random_target

    target = random_target(seed=5, num_layers=4, hidden_size=32, vocab_size=16, init_std=0.3)
    cfg = DrafterConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=8, intermediate_size=64, vocab_size=16, draft_vocab_size=12,
                        target_hidden_size=32, mask_token_id=15, aux_layer_ids=(1, 2, 3), trained_depth=4)
    drafter = init_drafter(cfg, seed=2, std=0.1, draft_to_target=torch.tensor([0, 1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 14]),
                           target_model=target)
    return target, drafter


def exact_marginals(target, prompt: list[int], temperature: float, top_p: float, depth: int) -> list[torch.Tensor]:
    """Exact distribution of generated tokens 1..depth, by enumerating every prefix."""
    from completion.engine.sampling import probabilities

    marginals = []
    frontier = {(): 1.0}
    with torch.inference_mode():
        for _ in range(depth):
            nxt, marginal = {}, torch.zeros(target.config.vocab_size, dtype=torch.float64)
            for prefix, mass in frontier.items():
                logits = target(input_ids=torch.tensor([prompt + list(prefix)])).logits[0, -1]
                probs = probabilities(logits, temperature, top_p).double()
                marginal += mass * probs
                for tok in torch.nonzero(probs > 1e-9).flatten().tolist():
                    nxt[prefix + (tok,)] = mass * float(probs[tok])
            marginals.append(marginal)
            frontier = nxt
    return marginals


@pytest.mark.parametrize("mode", ["peagle", "eagle3"])
def test_sampled_speculation_matches_target_distribution(tiny_vocab_pair, mode):
    """Generate 3 tokens many times with K=3 speculation; tokens 2 and 3 come out of speculative
    steps and must follow the target's exact marginals."""
    from completion.engine.base import GenerationParams, Stats
    from completion.engine.torch_engine import new_runner
    from completion.speculative import SpeculativeDecoder

    target, drafter = tiny_vocab_pair
    prompt, temperature, top_p, draws = [3, 7, 1, 12], 1.0, 0.95, 1200
    exact = exact_marginals(target, prompt, temperature, top_p, 3)
    counts = [torch.zeros(16) for _ in range(3)]
    gen = torch.Generator().manual_seed(11)
    runner = new_runner(target)       # the lean forward; the exact marginals come from Hugging Face
    accepted = 0
    for _ in range(draws):
        stats = Stats()
        decoder = SpeculativeDecoder(runner, drafter, GenerationParams(temperature=temperature, top_p=top_p,
                                                                       num_speculative_tokens=3),
                                     stats, gen, parallel=mode == "peagle")
        decoder.prefill(prompt)          # reuses the prompt's KV from the previous draw
        out = []
        while len(out) < 3:              # always 3 tokens: conditioning on acceptance would bias
            out += decoder.step()
        for i in range(3):
            counts[i][out[i]] += 1
        accepted += sum(stats.accepted_per_pos)
    assert accepted > draws // 4, "drafts should often be accepted for the test to mean something"
    for i in range(3):
        assert chi_square_p_value(counts[i], exact[i].float()) > P_VALUE_FLOOR, f"token {i + 1}"


@pytest.mark.parametrize("impl", ["lean", "hf"])
def test_seeded_sampling_is_reproducible(tiny_vocab_pair, impl):
    from completion.engine.base import GenerationParams, Stats
    from completion.engine.torch_engine import new_runner
    from completion.speculative import SpeculativeDecoder

    target, drafter = tiny_vocab_pair

    def draw(seed):
        gen = torch.Generator().manual_seed(seed)
        decoder = SpeculativeDecoder(new_runner(target, impl), drafter,
                                     GenerationParams(temperature=0.8, num_speculative_tokens=4), Stats(), gen)
        decoder.prefill([1, 2, 3])
        out = []
        while len(out) < 20:
            out += decoder.step()
        return out[:20]

    assert draw(4) == draw(4)
    assert draw(4) != draw(5)
