"""The speculative decoder the torch engine drives: prefill once, then draft K / verify / crop.

Invariant between steps: the target's cache holds `runner.ids` (everything emitted except the
pending bonus token); the drafter's cache holds rows for positions < cache.length, and
`pending_aux` holds the target's fused-layer states for positions cache.length .. len(ids)-1.
A step drafts from [pending rows, bonus], verifies [bonus, d1..dK] in one target forward, crops
both caches to what was accepted, and returns the accepted drafts plus the target's next token.
With `lookup` (greedy only) a step first looks for drafts in the context (lookup.py); where it
finds some, the drafter does not run and its pending rows wait for the next step it runs in.
"""
from __future__ import annotations

import time

import torch

from completion.engine.base import GenerationParams, Stats
from completion.engine.sampling import probabilities, sample
from completion.engine.target import TargetRunner, common_prefix_len, prefill

from .cache import DraftCache
from .drafter import Drafter
from .lookup import LOOKUP_K, lookup_drafts
from .proposer import AutoregressiveProposer, DraftSampling, ParallelProposer, Proposal
from .verify import verify_greedy, verify_sampled


def draft_cache_for(runner: TargetRunner, drafter: Drafter) -> DraftCache:
    """The drafter KV cache that lives beside this document's target cache (evicted with it)."""
    cache = getattr(runner, "draft_cache", None)
    if cache is None or cache.owner is not drafter:
        cache = DraftCache(drafter)
        runner.draft_cache = cache
    return cache


class SpeculativeDecoder:
    def __init__(self, runner: TargetRunner, drafter: Drafter, params: GenerationParams, stats: Stats,
                 generator: torch.Generator | None, *, parallel: bool = True, lookup: bool = False):
        cfg = drafter.config
        k = params.num_speculative_tokens or cfg.default_num_speculative_tokens
        if not 1 <= k <= cfg.max_depth:
            raise ValueError(f"num_speculative_tokens must be in 1..{cfg.max_depth} for this drafter "
                             f"(its trained depth), got {k}")
        self.runner, self.drafter, self.params, self.stats, self.generator = runner, drafter, params, stats, generator
        self.k = k
        self.cache = draft_cache_for(runner, drafter)
        self.proposer = (ParallelProposer if parallel else AutoregressiveProposer)(drafter, k)
        self.sampling = DraftSampling(params.temperature, params.top_p, generator)
        self.aux_layers = cfg.aux_layer_ids
        # copied drafts: greedy only (they have no distribution to sample), and at least LOOKUP_K of them
        self.lookup_k = max(k, LOOKUP_K) if lookup and params.temperature == 0 else 0
        if len(stats.accepted_per_pos) != max(k, self.lookup_k):
            stats.accepted_per_pos = [0] * max(k, self.lookup_k)
        self.bonus: int | None = None
        self.first_logits: torch.Tensor | None = None
        self.pending_aux: torch.Tensor | None = None

    def prefill(self, prompt_ids: list[int], should_stop=None) -> None:
        runner, cache = self.runner, self.cache
        # both caches keep the same prefix: a drafter row needs the target state at its position,
        # from its own KV or from the states an earlier request left pending
        target_rows = min(common_prefix_len(runner.ids, prompt_ids), len(prompt_ids) - 1)
        keep, self.pending_aux = cache.keep(prompt_ids, target_rows)
        runner.crop(keep)
        self.stats.reused_tokens = keep
        self.first_logits, _ = prefill(runner, prompt_ids[keep:], self.aux_layers, should_stop,
                                       on_chunk=self._pend, finish=self.params.keep_prefill - keep)

    def _pend(self, states: torch.Tensor) -> None:
        """Target states the drafter has not consumed yet, kept on its cache as they come (a
        cancelled prefill leaves the chunks it finished)."""
        self.pending_aux = states if self.pending_aux is None else torch.cat([self.pending_aux, states])
        self.cache.set_pending(self.pending_aux, self.runner.ids)

    def step(self) -> list[int]:
        params, stats, runner = self.params, self.stats, self.runner
        if self.bonus is None:        # the first token comes from the prefill forward, as in plain decoding
            stats.target_steps += 1
            self.bonus = int(sample(self.first_logits, params.temperature, params.top_p, self.generator))
            return [self.bonus]

        t0 = time.perf_counter()
        copied = lookup_drafts(runner.ids + [self.bonus], self.lookup_k) if self.lookup_k else []
        if copied:
            proposal = Proposal(copied)
            stats.lookups += 1
        else:
            proposal = self.proposer.propose(self.cache, runner.ids, self.bonus, self.pending_aux, self.sampling)
        t1 = time.perf_counter()
        base = len(runner.ids)
        # all K+1 rows of logits in one batch: on a CPU one lm_head row costs nearly as much as
        # many (the 152k x H weight is read either way), so stopping at a rejection saves nothing
        logits, aux = runner.forward([self.bonus] + proposal.token_ids, hidden_layers=self.aux_layers)
        if params.temperature == 0:
            verdict = verify_greedy(proposal.token_ids, logits)
        else:
            target_probs = probabilities(logits, params.temperature, params.top_p)
            verdict = verify_sampled(proposal.token_ids, proposal.probs, target_probs, self.generator)
        a = verdict.num_accepted
        runner.crop(base + 1 + a)     # keep the bonus and the accepted drafts
        # the drafter consumed the pending rows, unless it did not run
        if not copied:
            self.pending_aux = None
        self._pend(aux[: a + 1])
        self.bonus = verdict.next_token
        t2 = time.perf_counter()

        stats.drafts += 1
        stats.target_steps += 1
        for i in range(a):
            stats.accepted_per_pos[i] += 1
        stats.draft_ms += (t1 - t0) * 1e3
        stats.verify_ms += (t2 - t1) * 1e3
        return proposal.token_ids[:a] + [self.bonus]
