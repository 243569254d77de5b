"""Where each drafter query row comes from: the input layout of one draft pass (batch 1).

A parallel (P-EAGLE) draft pass over C pending rows and K drafts, starting at absolute position
s = cache.length (the first position the drafter has not committed):

    row       0 .. C-2                     C-1             C .. C+K-2
    region    accepted, shifted by one     bonus slot      MASK slots
    token     ids[s+1 .. s+C-1]            bonus           MASK_ID x (K-1)
    hidden    fc(aux[0 .. C-2])            fc(aux[C-1])    fc(mask_hidden)   (one vector, shared)
    position  s .. s+C-2                   s+C-1           s+C .. s+C+K-2    (consecutive)
    KV        committed                    committed       written, never committed
    output    -                            -> d1           -> d2 .. dK

`aux[j]` is the target's fused hidden state at position s+j and the token is the one *after* it
(the EAGLE shift); the last pending row therefore carries the bonus token, which the target has
chosen but not yet run. vLLM's layout also has rejected-token padding slots after the MASK slots;
at batch 1 we crop both caches to the accepted length instead, so that region is empty.

An EAGLE-3 autoregressive pass is the same layout with K = 1, followed by K-1 single-row passes
(token = previous draft, hidden = the drafter's own output state, position + 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DraftInputs:
    input_ids: torch.Tensor        # [C + K - 1] token ids
    positions: torch.Tensor        # [C + K - 1] absolute positions
    is_mask: torch.Tensor          # [C + K - 1] bool, True on MASK slots
    num_committed: int             # C: leading rows whose KV the cache keeps
    sample_rows: slice             # the K rows whose outputs are the drafts


def pending_row_tokens(context_ids: list[int], bonus: int, start: int) -> list[int]:
    """Tokens of the rows at positions start .. len(context_ids)-1: each row carries the next token."""
    return context_ids[start + 1:] + [bonus]


def parallel_draft_inputs(context_ids: list[int], bonus: int, start: int, num_drafts: int, mask_token_id: int,
                          device=None) -> DraftInputs:
    """The P-EAGLE query for drafting `num_drafts` tokens after `context_ids + [bonus]`, given that the
    drafter has committed rows for positions < `start`."""
    tokens = pending_row_tokens(context_ids, bonus, start)
    num_pending = len(tokens)
    if num_pending < 1:
        raise ValueError("the drafter is ahead of the target: nothing pending to draft from")
    num_masks = num_drafts - 1
    input_ids = torch.tensor(tokens + [mask_token_id] * num_masks, device=device)
    positions = torch.arange(start, start + num_pending + num_masks, device=device)
    is_mask = torch.zeros(num_pending + num_masks, dtype=torch.bool, device=device)
    is_mask[num_pending:] = True
    return DraftInputs(input_ids, positions, is_mask, num_pending,
                       slice(num_pending - 1, num_pending - 1 + num_drafts))


def draft_hidden(fused_pending: torch.Tensor, mask_state: torch.Tensor, num_masks: int) -> torch.Tensor:
    """[C, H] fused target states followed by the shared MASK state repeated `num_masks` times."""
    if num_masks == 0:
        return fused_pending
    return torch.cat([fused_pending, mask_state.expand(num_masks, -1)], dim=0)
