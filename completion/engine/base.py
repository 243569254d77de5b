"""The Engine contract (DESIGN §4): token ids in, a stream of chunks out.

An engine knows nothing of LSP, documents or prompts. Cancellation is plain asyncio: cancel the
task that iterates `generate()` (or close the iterator) and the engine stops between decode steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol, Sequence

DECODE_MODES = ("auto", "plain", "eagle3", "peagle", "peagle+lookup")


@dataclass
class GenerationParams:
    max_tokens: int = 64
    temperature: float = 0.0          # 0 = greedy
    top_p: float = 1.0
    stop_ids: Sequence[int] = ()
    seed: int | None = None
    # Requests with the same cache_key (a document URI) reuse the KV cache of the longest common
    # prompt prefix with the previous request under that key.
    cache_key: str | None = None
    # "auto": "peagle+lookup" when a drafter is loaded, else plain. "peagle+lookup": drafts copied
    # from the context where it repeats itself, else P-EAGLE's. "eagle3": the drafter run K times.
    mode: str = "auto"
    num_speculative_tokens: int | None = None   # K; None = the drafter's default
    # Prompt tokens a cancel does not cut into: the rows the document's next request reuses (all
    # before the cursor line), so typing that keeps cancelling requests still makes progress on a
    # cold prompt. 0 for background work, which yields at once.
    keep_prefill: int = 0

    def __post_init__(self):
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.mode not in DECODE_MODES:
            raise ValueError(f"mode must be one of {DECODE_MODES}, got {self.mode!r}")


@dataclass
class Stats:
    """Per-request figures. Acceptance length (AL) = generated tokens per target forward in the
    decode phase (accepted drafts + the bonus token), so plain decoding has AL 1."""
    prompt_tokens: int = 0
    reused_tokens: int = 0            # prompt tokens whose KV came from the cache
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    generated_tokens: int = 0
    target_steps: int = 0             # target forwards in the decode phase
    drafts: int = 0                   # draft proposals (speculative modes)
    lookups: int = 0                  # of them, copied from the context (mode "peagle+lookup")
    draft_ms: float = 0.0
    verify_ms: float = 0.0
    accepted_per_pos: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop", "length", "cancelled"

    @property
    def acceptance_length(self) -> float:
        return self.generated_tokens / self.target_steps if self.target_steps else 0.0

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["acceptance_length"] = round(self.acceptance_length, 3)
        return d


@dataclass
class Chunk:
    token_ids: list[int]              # new tokens in this chunk
    text: str                         # new text in this chunk (never a split UTF-8 character)
    stats: Stats                      # running totals for the request


@dataclass
class EngineInfo:
    engine: str                       # "torch", "vllm", ...
    model: str                        # path or hub id
    device: str
    draft: str | None = None
    trained: bool = True              # False for a model its eyas.json marks untrained
    note: str = ""
    impl: str | None = None           # the torch engine's forward: "lean" (ours) or "hf" (Hugging Face)
    precision: str | None = None      # the torch engine's: float32, bf16, int8, int4


class Engine(Protocol):
    info: EngineInfo

    def tokenizer(self):
        """The model's Hugging Face tokenizer (prompts are built with it)."""

    def generate(self, prompt_ids: list[int], params: GenerationParams) -> AsyncIterator[Chunk]:
        ...

    async def close(self) -> None:
        ...
