"""Proposers: turn the drafter into K draft tokens per step.

`ParallelProposer` (P-EAGLE) runs the drafter once over [pending rows, MASK x (K-1)].
`AutoregressiveProposer` (EAGLE-3, the baseline) runs it once over the pending rows, then K-1
more times on one row each, feeding back its own output state. Both commit exactly the pending
rows to the drafter's cache, so either can follow the other on the same document.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from completion.engine.sampling import probabilities

from .cache import DraftCache
from .drafter import Drafter
from .layout import draft_hidden, parallel_draft_inputs
from .verify import argmax_ids


@dataclass
class Proposal:
    token_ids: list[int]                  # K drafts, target vocabulary
    probs: torch.Tensor | None = None     # [K, V] the distributions they were drawn from (sampling only)


@dataclass
class DraftSampling:
    temperature: float = 0.0              # 0: greedy drafts (argmax over the draft vocabulary)
    top_p: float = 1.0
    generator: torch.Generator | None = None


class Proposer:
    def __init__(self, drafter: Drafter, num_speculative_tokens: int):
        self.drafter, self.k = drafter, num_speculative_tokens

    def propose(self, cache: DraftCache, context_ids: list[int], bonus: int, pending_aux: torch.Tensor,
                sampling: DraftSampling) -> Proposal:
        """`context_ids`: the tokens in the target's cache; `pending_aux` [C, 3Ht]: the target's
        states at positions cache.length .. len(context_ids)-1, the rows the drafter still lacks."""
        raise NotImplementedError

    def _choose(self, normed: torch.Tensor, sampling: DraftSampling) -> tuple[list[int], torch.Tensor | None]:
        logits = self.drafter.logits(normed).float()
        if sampling.temperature == 0:
            draft_ids = torch.tensor(argmax_ids(logits), device=logits.device)
            return self.drafter.to_target_ids(draft_ids).tolist(), None
        probs = probabilities(self.drafter.target_vocab_logits(logits), sampling.temperature, sampling.top_p)
        return torch.multinomial(probs, 1, generator=sampling.generator)[:, 0].tolist(), probs

    def _first_pass(self, cache, context_ids, bonus, pending_aux, num_drafts):
        drafter = self.drafter
        inputs = parallel_draft_inputs(context_ids, bonus, cache.length, num_drafts,
                                       drafter.config.mask_token_id, device=pending_aux.device)
        if inputs.num_committed != pending_aux.shape[0]:
            raise RuntimeError(f"drafter cache out of step: {inputs.num_committed} pending rows but "
                               f"{pending_aux.shape[0]} target states")
        hidden = draft_hidden(drafter.combine(pending_aux.to(drafter.fc.weight.dtype)), drafter.mask_state,
                              num_drafts - 1)
        normed, state = drafter(inputs.input_ids, hidden, inputs.positions, cache=cache)
        cache.commit(inputs.num_committed, context_ids + [bonus])
        return normed[inputs.sample_rows], state[inputs.sample_rows], inputs.positions[inputs.sample_rows]


class ParallelProposer(Proposer):
    @torch.inference_mode()
    def propose(self, cache, context_ids, bonus, pending_aux, sampling) -> Proposal:
        normed, _, _ = self._first_pass(cache, context_ids, bonus, pending_aux, self.k)
        ids, probs = self._choose(normed, sampling)
        return Proposal(ids, probs)


class AutoregressiveProposer(Proposer):
    @torch.inference_mode()
    def propose(self, cache, context_ids, bonus, pending_aux, sampling) -> Proposal:
        normed, state, position = self._first_pass(cache, context_ids, bonus, pending_aux, 1)
        ids, probs = self._choose(normed, sampling)
        all_probs = [probs]
        for _ in range(self.k - 1):
            # the chained rows land past cache.length: dead entries the next pass overwrites
            position = position + 1
            normed, state = self.drafter(torch.tensor(ids[-1:], device=position.device), state, position,
                                         cache=cache)
            new, probs = self._choose(normed, sampling)
            ids += new
            all_probs.append(probs)
        return Proposal(ids, None if all_probs[0] is None else torch.cat(all_probs))
