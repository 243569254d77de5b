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

    def _buffers(self, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        # [layers, kv_heads, T, D]: per layer and head, positions are contiguous rows
        shape = (self.cfg.num_layers, self.cfg.num_kv_heads, capacity, self.cfg.head_dim)
        return (torch.zeros(shape, dtype=self.dtype, device=self.device),
                torch.zeros(shape, dtype=self.dtype, device=self.device))

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        k, v = self._buffers(capacity_for(needed))
        k[:, :, : self.length] = self.k[:, :, : self.length]
        v[:, :, : self.length] = self.v[:, :, : self.length]
        self.k, self.v = k, v


class RopeTables:
    """cos/sin [positions, head_dim] for the default RoPE, computed as Hugging Face does (float32
    angles, then cast to the model dtype), grown by doubling like the caches that use them."""

    def __init__(self, cfg: LeanConfig, dtype: torch.dtype, device):
        d = cfg.head_dim
        self.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
        self.dtype = dtype
        self.cos = self.sin = torch.empty(0, d, dtype=dtype, device=device)
        self.reserve(MIN_CAPACITY)

    def reserve(self, needed: int) -> None:
        if needed <= self.cos.shape[0]:
            return
        positions = torch.arange(capacity_for(needed), dtype=torch.float32, device=self.inv_freq.device)
        angles = positions[:, None] * self.inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        self.cos, self.sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)
