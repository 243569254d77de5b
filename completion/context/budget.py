"""Token budgets without tokenizing line by line.

A window is sized in bytes from a bytes-per-token ratio learned from earlier real counts, then one
real count confirms it; only a wrong estimate costs a second count (and a smaller window).
"""

from __future__ import annotations

from typing import Callable

from .trees import decode

DEFAULT_BYTES_PER_TOKEN = 4.0  # source code under Qwen's BPE is ~3.5-4.5 bytes per token
# Aim a little under the budget so the confirming count rarely sends us round again.
FILL = 0.94
# Counts shorter than this say little about the ratio.
_MIN_TOKENS_TO_LEARN = 32


class TokenMeter:
    """Wraps the model's `count_tokens`, learning how many bytes a token covers per language."""

    def __init__(self, count_tokens: Callable[[str], int], ratios: dict, key: str | None) -> None:
        self._count_tokens = count_tokens
        self._ratios = ratios
        self._key = key
        self.calls = 0

    @property
    def bytes_per_token(self) -> float:
        return self._ratios.get(self._key, DEFAULT_BYTES_PER_TOKEN)

    def estimate(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_token

    def count(self, text: str, nbytes: int) -> int:
        tokens = int(self._count_tokens(text))
        self.calls += 1
        if tokens >= _MIN_TOKENS_TO_LEARN:
            seen = nbytes / tokens
            old = self._ratios.get(self._key)
            self._ratios[self._key] = seen if old is None else 0.6 * old + 0.4 * seen
        return tokens


def fit(build: Callable[[int], bytes], budget: int, meter: TokenMeter) -> bytes:
    """The bytes `build(room)` gives for the largest tried room whose real token count fits `budget`.

    `build` must return at most `room` bytes: rooms then shrink strictly, and since a token is at
    least one byte, the loop ends after a few rounds even for a tokenizer that surprises us.
    """
    if budget <= 0:
        return b""
    room = max(1, int(budget * meter.bytes_per_token * FILL))
    while True:
        data = build(room)
        if not data:
            return data
        tokens = meter.count(decode(data), len(data))
        if tokens <= budget:
            return data
        room = min(int(len(data) * budget / tokens * FILL), len(data) - 1)
        if room <= 0:
            return b""
