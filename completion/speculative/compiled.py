"""torch.compile for the drafter's inference pass, as lean/compiled.py does for the target.

A draft pass is a few small matmuls and ~150 elementwise ops; compiled, the elementwise ops fuse
and what remains is mostly reading the weights (draft ms a step on HumanEval at 1 thread: P-EAGLE
K=3 3.56 eager, 2.78 compiled). One graph with dynamic sizes (rows, attention length, cache capacity)
serves every pass; one row and several rows are the two graphs that get warmed (an EAGLE-3 chained
pass is one row; dynamo specialises size 1 anyway). Drafts need no bit-equality with the eager
pass (the target's verification keeps decoding lossless), so this holds at every dtype. A pass
whose graph was not warmed runs eager; any failure switches to eager for good.
"""
from __future__ import annotations

import logging
import time

import torch

from completion.engine.lean.compiled import SPARE_ROWS, compile_dynamic

from .cache import DraftCache
from .drafter import Drafter

log = logging.getLogger(__name__)

MAX_COMPILED_ROWS = 64   # longer passes (the first one after a prefill) are matmul-bound


class CompiledDraft:
    def __init__(self, drafter: Drafter):
        self.drafter = drafter
        self.fn = compile_dynamic(drafter.cached_forward, [drafter.inv_freq])   # parameters are static anyway
        self.warmed: set[bool] = set()   # multi-row?
        self.failed = False
        self.compile_s = 0.0

    def handles(self, n: int) -> bool:
        return not self.failed and n <= MAX_COMPILED_ROWS and (n > 1) in self.warmed

    def warm_up(self) -> bool:
        t0 = time.perf_counter()
        d = self.drafter
        try:
            for n in (1, 3):
                cache = DraftCache(d)
                with torch.inference_mode():   # as proposers call it: grad mode is in the guards
                    for start, rows in ((0, n + 1), (n + 1, n)):   # a first pass, then the shape that matters
                        cache.reserve(start + rows + SPARE_ROWS)
                        ids = torch.zeros(rows, dtype=torch.long, device=cache.device)
                        hidden = d.mask_state.expand(rows, -1).clone()   # an inference tensor, as in use
                        positions = torch.arange(start, start + rows, device=cache.device)
                        self.fn(ids, hidden, positions, cache.keys, cache.values, start)
                self.warmed.add(n > 1)
        except Exception:
            log.warning("torch.compile failed for the drafter; it runs eager", exc_info=True)
            self.failed = True
        self.compile_s = time.perf_counter() - t0
        return not self.failed

    def __call__(self, input_ids, hidden, positions, cache: DraftCache, start: int):
        cache.reserve(start + input_ids.shape[0] + SPARE_ROWS)
        if hidden.storage_offset():   # a row of the last pass's output (EAGLE-3 chaining): dynamo
            hidden = hidden.clone()   # specialises offsets 0 and 1, so each would be a new graph
        try:
            return self.fn(input_ids, hidden, positions, cache.keys, cache.values, start)
        except Exception:
            log.warning("compiled draft pass failed; running eager from now on", exc_info=True)
            self.failed = True
            return self.drafter.cached_forward(input_ids, hidden, positions, cache.keys, cache.values, start)


def compile_drafter(drafter: Drafter) -> bool:
    """Compile and warm the drafter's inference pass in place; False leaves it eager."""
    compiled = CompiledDraft(drafter)
    if compiled.warm_up():
        drafter.compiled = compiled
    return drafter.compiled is not None
