"""torch.compile for the lean forward's small steps, with the eager forward as the fallback.

Graphs: sizes are dynamic (token count, attention length, cache capacity are symbols), so one
graph serves every length and nothing recompiles as a document grows. What stays static is the
branching: one token vs several (a single token needs no mask, and dynamo specialises size 1
anyway) and which aux layers are captured. `warm_up` compiles exactly the graphs the engine's
decoders will use, at load; a step whose graph was not warmed runs eager rather than stalling a
completion for a compile, and any compile or runtime failure switches to eager for good.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import torch

from .model import LeanModel
from .weights import Int4Weight, Int8Weight, LeanWeights, PackedWeight, TileWeight

log = logging.getLogger(__name__)

MAX_COMPILED_TOKENS = 64   # longer forwards (prefills) are matmul-bound: compiling gains nothing


def compile_dynamic(fn, weights=()):
    """torch.compile for the lean and draft steps: every size symbolic except the `weights`', which
    never change (left symbolic, a 256-wide weight and a 256-row cache shared a symbol, and the
    cache's growth to 512 recompiled the step mid-completion). Callers keep SPARE_ROWS free."""
    for w in weights:
        torch._dynamo.mark_static(w)
    # No "duck sizing": dynamo would otherwise assume that sizes equal during warm-up (a
    # 256-row cache, a 256-wide model) stay equal, and recompile when a cache grows.
    torch.fx.experimental._config.use_duck_shape = False
    # One code object serves every model of a kind (LeanModel.layers, Drafter.cached_forward):
    # a target's 4 graphs and two drafters' 2-3 each exceed the default limit of 8 entries,
    # past which dynamo gives up on the function and compiles its callees piecemeal.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    return torch.compile(fn, dynamic=True)


# Buffers are reserved one row past a step's attention length: a slice that takes a whole buffer
# is a special case to dynamo, so a step ending exactly at the capacity recompiled.
SPARE_ROWS = 1


def weight_tensors(w: LeanWeights):
    """Every tensor the model's weights hold (the ones compile_dynamic keeps static). Packed
    matrices are left out: compiled graphs run on their plain copy (see model.linear)."""
    def tensors(item):
        if isinstance(item, (Int8Weight, Int4Weight, PackedWeight, TileWeight)):
            for value in vars(item).values():
                yield from tensors(value)
        elif isinstance(item, torch.Tensor) and not item.is_mkldnn:
            yield item
            if item._base is not None:   # a column-major weight's contiguous buffer
                yield item._base
    for item in [w.embed, w.norm, w.lm_head] + [getattr(layer, f.name) for layer in w.layers
                                                 for f in dataclasses.fields(layer)]:
        yield from tensors(item)


class CompiledSteps:
    def __init__(self, model: LeanModel):
        self.model = model
        self.fn = compile_dynamic(model.layers, weight_tensors(model.w))
        self.warmed: set[tuple[bool, tuple[int, ...]]] = set()
        self.failed = False
        self.compile_s = 0.0

    def handles(self, n: int, hidden_layers: tuple[int, ...]) -> bool:
        return not self.failed and n <= MAX_COMPILED_TOKENS and (n > 1, hidden_layers) in self.warmed

    def warm_up(self, layer_sets: tuple[tuple[int, ...], ...] = ((),)) -> bool:
        """Compile the one-token and the multi-token graph for each set of aux layers. Below
        float32 a verification attends row by row (LeanModel.attend_row_by_row), a loop over its
        row count that a dynamic-size graph cannot hold: there only one-token steps compile.
        Not over packed bf16 matrices (weights.PackedWeight): a graph can only run their plain
        copies, and eager steps on the packed ones are faster (Qwen2.5-Coder-0.5B, 2 threads: 60
        vs 78 ms/token), so it declines and the engine runs eager."""
        if any(isinstance(w, (PackedWeight, TileWeight)) for layer in self.model.w.layers for w in (layer.qkv, layer.gate_up)):
            log.info("packed bf16 weights: eager steps are faster than compiled ones; not compiling")
            self.failed = True
            return False
        t0 = time.perf_counter()
        try:
            for layers in layer_sets:
                for n in ((1, 3) if self.model.dtype == torch.float32 else (1,)):
                    if (n > 1, layers) in self.warmed:
                        continue
                    cache = self.model.new_cache()
                    with torch.inference_mode():   # as the runner calls it: grad mode is in every graph's guards
                        self._call(cache, list(range(n + 1)), 0, layers)   # a prefill-like first call...
                        self._call(cache, list(range(n)), n + 1, layers)   # ...then the shape that matters
                    self.warmed.add((n > 1, layers))
        except Exception:   # a toolchain problem must not stop the engine: eager still works
            log.warning("torch.compile failed; the lean forward runs eager", exc_info=True)
            self.failed = True
        self.compile_s = time.perf_counter() - t0
        return not self.failed

    def run(self, model: LeanModel, cache, new_ids: list[int], start: int, hidden_layers: tuple[int, ...]):
        try:
            return self._call(cache, new_ids, start, hidden_layers)
        except Exception:
            log.warning("compiled lean step failed; running eager from now on", exc_info=True)
            self.failed = True
            from .runner import eager_step
            return eager_step(model, cache, new_ids, start, hidden_layers)

    def _call(self, cache, new_ids, start, hidden_layers):
        model, n = self.model, len(new_ids)
        model.reserve(cache, start + n + SPARE_ROWS)
        ids = torch.tensor(new_ids, dtype=torch.long, device=model.device)
        positions = torch.arange(start, start + n, device=model.device)
        return self.fn(ids, positions, cache.k, cache.v, model.rope.cos, model.rope.sin, start + n, hidden_layers,
                       n > 1)
