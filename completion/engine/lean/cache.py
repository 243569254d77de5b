"""Preallocated state for the lean forward: one sequence's KV cache, and the model's RoPE tables.

Sizing: a cache starts at the first request's length rounded up to a power of two (at least
MIN_CAPACITY rows) and doubles when a sequence outgrows it, copying the valid rows once. It is not
sized from max_position_embeddings up front: that is 32k-262k positions for Qwen3 models, gigabytes
per cached document for the large ones, while completion prompts are a few thousand tokens.
Powers of two also keep the number of distinct shapes (and so torch.compile graphs) small.
Cropping only moves `length`; rows past it are garbage that later writes overwrite.
"""
from __future__ import annotations

import torch

from .config import LeanConfig

MIN_CAPACITY = 256


def capacity_for(needed: int) -> int:
    return max(MIN_CAPACITY, 1 << (needed - 1).bit_length())


class StaticKVCache:
    def __init__(self, cfg: LeanConfig, dtype: torch.dtype, device, capacity: int = 0):
        self.cfg, self.dtype, self.device = cfg, dtype, device
        self.length = 0   # valid rows
        self.k, self.v = self._buffers(capacity_for(max(capacity, 1)))

    def _buffers(self, capacity: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # per layer [kv_heads, T, D]: per head, positions are contiguous rows. One tensor per layer
        # rather than views of one: a compiled step then writes its inputs in place, where writes
        # into views of a shared buffer made it copy the whole buffer on every call.
        shape = (self.cfg.num_kv_heads, capacity, self.cfg.head_dim)

        @torch.inference_mode()   # see RopeTables.reserve
        def layers():
            return [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.cfg.num_layers)]
        return layers(), layers()

    @property
    def capacity(self) -> int:
        return self.k[0].shape[1]

    def reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        k, v = self._buffers(capacity_for(needed))
        for new, old in zip(k + v, self.k + self.v):
            new[:, : self.length] = old[:, : self.length]
        self.k, self.v = k, v


class RopeTables:
    """cos/sin [positions, head_dim] for the default RoPE, computed as Hugging Face does (float32
    angles, then cast to the model dtype), grown by doubling like the caches that use them. `sin`
    carries rotate-half's sign (its first half negated), so applying RoPE needs only a swap of
    the halves, not rotate-half's negation (see model.rotate)."""

    def __init__(self, cfg: LeanConfig, dtype: torch.dtype, device):
        d = cfg.head_dim
        self.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
        self.dtype = dtype
        self.cos = self.sin = torch.empty(0, d, dtype=dtype, device=device)
        self.reserve(MIN_CAPACITY)

    @torch.inference_mode()   # always inference tensors, wherever they grow: compiled graphs guard on it
    def reserve(self, needed: int) -> None:
        if needed <= self.cos.shape[0]:
            return
        positions = torch.arange(capacity_for(needed), dtype=torch.float32, device=self.inv_freq.device)
        angles = positions[:, None] * self.inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        sin = angles.sin()
        sin[:, : sin.shape[1] // 2].neg_()
        self.cos, self.sin = angles.cos().to(self.dtype), sin.to(self.dtype)
