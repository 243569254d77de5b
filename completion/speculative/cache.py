"""The drafter's own KV cache for one document, kept beside the target's `TargetRunner`.

Static buffers (grown by doubling) with a committed length, the way vLLM's paged cache behaves for
a drafter: a forward writes K/V at absolute positions; only rows below `length` are committed.
Rows past `length` (MASK slots, autoregressive draft rows) stay in the buffer as dead entries
that the next forward overwrites, so "never keeping" them costs nothing.

Row p of the drafter pairs the token at p+1 with the target's hidden state at p (the EAGLE
shift), so the committed rows depend on `ids[: length + 1]`.

The target's states for the rows past `length` that the drafter has not consumed yet (`pending`,
computed from `pending_ids`) are kept here too: a request that ends, or is cancelled, before its
drafter ran leaves them for the next one, which then reuses the target's rows they belong to
instead of recomputing them.
"""
from __future__ import annotations

import torch

from completion.engine.target import common_prefix_len

from .drafter import Drafter

INITIAL_CAPACITY = 256


class DraftCache:
    def __init__(self, drafter: Drafter):
        cfg = drafter.config
        self.owner = drafter
        self.shape = (cfg.num_key_value_heads, cfg.head_dim)
        self.device, self.dtype = drafter.fc.weight.device, drafter.fc.weight.dtype
        self.num_layers = cfg.num_hidden_layers
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.capacity = 0
        self.length = 0                # committed rows
        self.ids: list[int] = []       # tokens 0..length the committed rows were computed from
        self.pending: torch.Tensor | None = None   # target states for positions length.. [P, 3Ht]
        self.pending_ids: list[int] = []           # tokens 0..length+P-1 they were computed from

    def reserve(self, end: int) -> None:
        """Make room for absolute positions [0, end)."""
        if end <= self.capacity:
            return
        capacity = max(INITIAL_CAPACITY, self.capacity)
        while capacity < end:
            capacity *= 2
        kv_heads, head_dim = self.shape
        def grow(old):
            new = torch.zeros(kv_heads, capacity, head_dim, device=self.device, dtype=self.dtype)
            if old is not None:
                new[:, : self.capacity] = old[:, : self.capacity]
            return new
        olds = (self.keys, self.values) if self.keys else ([None] * self.num_layers,) * 2
        self.keys = [grow(k) for k in olds[0]]
        self.values = [grow(v) for v in olds[1]]
        self.capacity = capacity

    def commit(self, rows: int, ids: list[int]) -> None:
        """Rows [length, length+rows) become permanent; `ids` lists tokens 0..length+rows."""
        self.length += rows
        self.ids = list(ids[: self.length + 1])

    def crop(self, rows: int) -> None:
        self.length = min(self.length, rows)
        self.ids = self.ids[: self.length + 1] if self.length else []

    def valid_rows(self, prompt_ids: list[int]) -> int:
        """How many committed rows a new prompt can reuse: row p needs tokens 0..p+1 unchanged."""
        if not self.length:
            return 0
        return min(self.length, max(0, common_prefix_len(self.ids, prompt_ids) - 1))

    def keep(self, prompt_ids: list[int], target_rows: int) -> tuple[int, torch.Tensor | None]:
        """For a new prompt whose first `target_rows` positions the target still holds: how many
        positions both caches keep, and the pending states of those past `length`. Crops the
        committed rows to that."""
        rows = self.valid_rows(prompt_ids)
        if rows == self.length and self.pending is not None:   # the pending states follow on
            same = common_prefix_len(self.pending_ids, prompt_ids) - self.length
            rows += max(0, min(len(self.pending), same))
        keep = min(rows, target_rows)
        self.crop(keep)
        pending = self.pending[: keep - self.length] if keep > self.length else None
        self.set_pending(pending, prompt_ids)
        return keep, pending

    def set_pending(self, states: torch.Tensor | None, ids: list[int]) -> None:
        """The target's states for positions length.., computed from `ids`."""
        self.pending = states
        self.pending_ids = list(ids[: self.length + (0 if states is None else len(states))])
