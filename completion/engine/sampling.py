"""Token choice from logits: greedy, or temperature + top-p. Shared by plain and speculative decoding
(rejection sampling needs the same `probabilities` the plain sampler draws from)."""
from __future__ import annotations

import torch


def probabilities(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """[..., V] logits -> [..., V] float32 probabilities after temperature and nucleus filtering."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest set whose mass reaches top_p (the top token is always kept)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(logits: torch.Tensor, temperature: float, top_p: float,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """[..., V] -> [...] token ids. temperature 0 is greedy (argmax)."""
    if temperature == 0:
        if logits.device.type == "cpu":   # numpy's argmax is ~20x faster than torch's on a 152k row
            return torch.as_tensor(logits.numpy().argmax(-1))
        return logits.argmax(-1)
    probs = probabilities(logits, temperature, top_p)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
