"""The target model with one KV cache: the unit both plain and speculative decoding drive.

Synchronous on purpose: the torch engine calls it from its single model thread only.
`ids` always lists exactly the tokens whose keys/values are in the cache, so prefix reuse
and cropping after verification are plain list arithmetic.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache


# Tokens per prefill forward. Longer chunks ran faster only up to 256 (Qwen2.5-Coder-0.5B bf16, 2
# threads, a 1k-token prompt, lean forward: 128-token chunks ~1.1 s, 256 ~0.8 s, 512 ~1.0 s with
# torch's kernels, as fast as 256 with Eyas's own): past it, activations outgrow the caches. A
# cancel takes effect between chunks (and between layers in the lean runner).
PREFILL_CHUNK = 256


class PrefillStopped(Exception):
    """A prefill given up because its request was cancelled."""


def prefill(runner, new_ids: list[int], hidden_layers: tuple[int, ...] = (), should_stop=None, on_chunk=None,
            finish: int = 0):
    """runner.forward over `new_ids` in chunks, asking `should_stop()` between them (and the
    runner between its layers, where it can), so a cancelled request (a pre-fetch that a keystroke
    supersedes) frees the model within a chunk instead of after the whole prompt. The first
    `finish` rows are computed whatever `should_stop()` says (rows the next request will reuse; a
    chunk ends where they do). The cache stays consistent: `ids` lists what was computed, and
    `on_chunk(hidden)` sees each finished chunk's hidden states (with `hidden_layers`).
    Returns (the last position's logits [V], hidden states of every position or None)."""
    hidden, n = [], len(new_ids)
    finish = max(0, min(finish, n))
    if should_stop is not None and finish:
        asked, done_at = should_stop, len(runner.ids) + finish
        should_stop = lambda: len(runner.ids) >= done_at and asked()   # noqa: E731
    starts = [*range(0, finish, PREFILL_CHUNK), *range(finish, n, PREFILL_CHUNK)]
    for start, end in zip(starts, starts[1:] + [n]):
        if start and should_stop is not None and should_stop():
            raise PrefillStopped()
        last = end == n
        # only the last position's logits are wanted: an earlier chunk's one row of lm_head would
        # cost a decode step's largest matrix (Qwen2.5-Coder-0.5B, 1k tokens: 8 x 20 ms of 1.4 s)
        logits, h = runner.forward(new_ids[start:end], hidden_layers,
                                   logits_to_keep=1 if last else None, should_stop=should_stop)
        if h is not None:
            hidden.append(h)
            if on_chunk is not None:
                on_chunk(h)
    return logits[-1], (torch.cat(hidden) if hidden else None)


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class TargetRunner:
    def __init__(self, model):
        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.ids: list[int] = []
        # A speculative decoder's drafter KV for the same document (completion.speculative.cache),
        # kept here so it is reused and evicted together with the target's.
        self.draft_cache = None

    def crop(self, n: int) -> None:
        """Keep the KV of the first n tokens."""
        if n == 0:
            self.cache, self.ids = DynamicCache(config=self.model.config), []
        elif n < len(self.ids):
            self.cache.crop(n - len(self.ids))   # negative: the number of tokens to drop
            self.ids = self.ids[:n]

    def reuse_prefix(self, prompt_ids: list[int]) -> int:
        """Crop the cache to the longest prefix shared with `prompt_ids`; return its length.
        At least one prompt token is always left to compute, since its logits start decoding."""
        keep = min(common_prefix_len(self.ids, prompt_ids), len(prompt_ids) - 1)
        self.crop(keep)
        return keep

    @torch.inference_mode()
    def forward(self, new_ids: list[int], hidden_layers: tuple[int, ...] = (), *,
                logits_to_keep: int | None = 0, should_stop=None):
        """Append `new_ids` to the cache. Returns (logits [n, V] float32, hidden [n, len(layers)*H]
        or None) where hidden concatenates the residual streams *entering* the given layers.
        `logits_to_keep` > 0 computes logits for the last that many positions only (a prefill
        needs one row, not a [prompt, 152k] matrix); None computes none (logits [0, V]).
        `should_stop` is not asked here: Hugging Face's forward runs to its end."""
        if not new_ids:
            raise ValueError("forward needs at least one token")
        input_ids = torch.tensor([new_ids], device=self.model.device)
        if logits_to_keep is None:   # Hugging Face keeps the positions an index tensor lists: here none
            logits_to_keep = torch.empty(0, dtype=torch.long, device=self.model.device)
        out = self.model(input_ids=input_ids, cache=self.cache, use_cache=True,
                         output_hidden_states=bool(hidden_layers), logits_to_keep=logits_to_keep)
        self.ids.extend(new_ids)
        hidden = None
        if hidden_layers:
            # hidden_states[i] is the input of decoder layer i (index 0 = embeddings)
            hidden = torch.cat([out.hidden_states[i][0] for i in hidden_layers], dim=-1)
        return out.logits[0].float(), hidden
