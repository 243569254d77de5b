"""`LeanTargetRunner`: the target runner interface (completion.engine.target) over the lean model.

Same contract as the Hugging Face `TargetRunner`: `ids` lists exactly the tokens whose keys and
values are cached, `crop(n)` keeps the first n (here it only moves the cache's length), and
`reuse_prefix` always leaves at least one prompt token to compute.
"""
from __future__ import annotations

import torch

from ..target import common_prefix_len
from .model import LeanModel


class LeanTargetRunner:
    def __init__(self, model: LeanModel, compiled=None):
        self.model = model
        self.compiled = compiled      # a CompiledSteps for the small fixed-shape steps, or None
        self.cache = model.new_cache()
        self.ids: list[int] = []
        self.draft_cache = None       # the drafter's KV for this document (see TargetRunner)

    def crop(self, n: int) -> None:
        """Keep the KV of the first n tokens."""
        if n < len(self.ids):
            self.ids = self.ids[:n]
            self.cache.length = n

    def reuse_prefix(self, prompt_ids: list[int]) -> int:
        keep = min(common_prefix_len(self.ids, prompt_ids), len(prompt_ids) - 1)
        self.crop(keep)
        return keep

    @torch.inference_mode()
    def forward(self, new_ids: list[int], hidden_layers: tuple[int, ...] = (), *,
                logits_to_keep: int | None = 0, should_stop=None):
        """Append `new_ids`; returns (logits [n, V] float32, hidden [n, len(layers) * H] or None),
        exactly as TargetRunner.forward (logits_to_keep None: no rows). `should_stop()` is asked
        between layers: True raises PrefillStopped with nothing appended (the rows written past
        the cache's length are overwritten later)."""
        if not new_ids:
            raise ValueError("forward needs at least one token")
        if any(not 0 <= i < self.model.cfg.num_layers for i in hidden_layers):
            raise ValueError(f"hidden layers must be in 0..{self.model.cfg.num_layers - 1}, got {hidden_layers}")
        n, start = len(new_ids), self.cache.length
        if self.compiled is not None and self.compiled.handles(n, tuple(hidden_layers)):
            normed, hidden = self.compiled.run(self.model, self.cache, new_ids, start, tuple(hidden_layers))
        else:
            normed, hidden = eager_step(self.model, self.cache, new_ids, start, tuple(hidden_layers), should_stop)
        self.cache.length = start + n
        self.ids.extend(new_ids)
        if logits_to_keep is None:
            return normed.new_empty(0, self.model.cfg.vocab_size, dtype=torch.float32), hidden
        keep = min(logits_to_keep or n, n)
        return self.model.logits(normed[n - keep:]), hidden


def eager_step(model: LeanModel, cache, new_ids: list[int], start: int, hidden_layers: tuple[int, ...],
               should_stop=None):
    n = len(new_ids)
    model.reserve(cache, start + n)
    ids = torch.tensor(new_ids, dtype=torch.long, device=model.device)
    positions = torch.arange(start, start + n, device=model.device)
    return model.hidden_states(ids, positions, cache, start + n, hidden_layers, masked=n > 1, should_stop=should_stop)
