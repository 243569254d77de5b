"""The torch engine: a Qwen3 / Qwen3-MoE causal LM on this process's CPU or GPU.

Two forwards behind one runner interface: "lean" (completion.engine.lean: fused projections and a
static KV cache, the default wherever it supports the architecture) and "hf" (the Hugging Face
model, the reference, and the fallback for everything else). The Hugging Face model is loaded
either way: the lean model is built over its weights and drafters share its embeddings.

All model work, loading included, runs on one dedicated thread (MODEL_THREAD): a request's prefill
and decode steps run there in one go and post their tokens to the event loop, which never blocks;
a cancel (or a reader that stops) ends the work at the next prefill chunk or step. A decoder turns
the target
(and, for speculative modes, a drafter) into a stream of tokens: `PlainDecoder` lives here; the
speculative ones implement the same two methods.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Protocol

import torch

from completion.models import DEFAULT_MODEL, default_draft, read_metadata, resolve_draft, resolve_model

from . import PRECISIONS
from .base import Chunk, EngineInfo, GenerationParams, Stats
from .sampling import sample
from .target import PrefillStopped, TargetRunner, prefill

log = logging.getLogger(__name__)

MAX_CACHED_DOCUMENTS = 4   # KV caches kept for prefix reuse, least recently used evicted

# One thread for every torch operation of this process's engines. OpenMP gives each thread that
# starts parallel work its own team of workers; a second team (weights loaded on the main thread,
# decoding on another) oversubscribes a small machine, libgomp then puts its workers to sleep
# between parallel regions instead of spinning, and every small matmul pays a wake-up: a decode
# step got 2.6-3.7x slower here (forward_speed: "lean" vs "lean-other-thread").
MODEL_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eyas-model")


def on_model_thread(fn, *args, **kwargs):
    """Run fn on the model thread and wait for it (for loading and other set-up work)."""
    return MODEL_THREAD.submit(fn, *args, **kwargs).result()


class Decoder(Protocol):
    def prefill(self, prompt_ids: list[int], should_stop=None) -> None:
        """Bring the caches up to date with the prompt (reusing what they share with it); may
        raise PrefillStopped between chunks once `should_stop()` is true."""

    def step(self) -> list[int]:
        """Produce at least one new token; may run past a stop token (the engine trims)."""


class PlainDecoder:
    """One target forward per token."""

    def __init__(self, runner: TargetRunner, params: GenerationParams, stats: Stats,
                 generator: torch.Generator | None):
        self.runner, self.params, self.stats, self.generator = runner, params, stats, generator
        self.next_logits: torch.Tensor | None = None
        self.last_token: int | None = None

    def prefill(self, prompt_ids: list[int], should_stop=None) -> None:
        reused = self.runner.reuse_prefix(prompt_ids)
        self.stats.reused_tokens = reused
        self.next_logits, _ = prefill(self.runner, prompt_ids[reused:], should_stop=should_stop,
                                      finish=self.params.keep_prefill - reused)

    def step(self) -> list[int]:
        if self.next_logits is None:   # the previous token's KV is computed lazily, when needed
            logits, _ = self.runner.forward([self.last_token])
            self.next_logits = logits[-1]
        self.stats.target_steps += 1
        token = int(sample(self.next_logits, self.params.temperature, self.params.top_p, self.generator))
        self.next_logits, self.last_token = None, token
        return [token]


IMPLS = ("lean", "hf")
# int8 / int4: weight-only quantized projections, whose CPU kernels take bf16 activations
QUANTIZED = ("int8", "int4", "int4-head8")   # int4-head8: int4 projections, int8 output head
DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16} | dict.fromkeys(QUANTIZED, torch.bfloat16)


def cpu_auto_precision() -> str:
    """What "auto" means on a CPU: the fastest precision that keeps quality (docs/qwen2.5-coder-0.5b.md).
    bf16 where the AMX tile kernel runs (lean/native.py: there it decodes faster than int8, with the
    model's own weights), int8 elsewhere: without AMX, on AVX-512 BF16, int8 decodes 1.2-1.6x faster
    than bf16 (docs/bench-engines.md, 2-core Zen 4)."""
    from .lean import native
    return "bf16" if native.has_amx() else "int8"


def resolve_precision(precision: str | None, device: str) -> str:
    """None: exact arithmetic for the device (float32 on a CPU, bf16 on a GPU); "auto": bf16 on a
    GPU, cpu_auto_precision() on a CPU (docs/qwen2.5-coder-0.5b.md has the measurements behind it)."""
    if precision not in (None, *PRECISIONS):
        raise ValueError(f"unknown precision {precision!r} (available: {', '.join(PRECISIONS)})")
    gpu = not device.startswith("cpu")
    if precision is None:
        return "bf16" if gpu else "float32"
    if precision == "auto":
        return "bf16" if gpu else cpu_auto_precision()
    return precision


def resolve_impl(model, impl: str | None) -> str:
    """The forward to run: the one asked for, else lean where it supports the model, else hf."""
    from .lean import unsupported_reason

    if impl not in (None, *IMPLS):
        raise ValueError(f"unknown impl {impl!r} (available: {', '.join(IMPLS)})")
    reason = unsupported_reason(model.config)
    if impl == "lean" and reason:
        raise ValueError(f"impl 'lean' cannot run this model: {reason}; use impl='hf'")
    return impl or ("hf" if reason else "lean")


def new_runner(model, impl: str = "lean", compiled=None):
    """A fresh target runner (one document's KV cache) over a Hugging Face causal LM's weights."""
    if impl == "lean":
        from .lean import LeanTargetRunner, lean_model_for
        return LeanTargetRunner(lean_model_for(model), compiled)
    return TargetRunner(model)


def compile_lean(lean, drafter):
    """torch.compile the lean model's small steps for the decoders this engine will run (plain
    decoding captures no aux layers; speculative verification captures the drafter's), or None
    when compiling fails (the engine then runs eager). Opt-in (`compile` setting, `--compile`):
    the warm-up takes 40-90 s on a 2-core machine before the first completion; the steps are then
    about a quarter faster there (forward_speed: 1.9 vs 2.5 ms/token at 2 threads).
    Below float32 a speculative engine stays eager: a compiled step's fused kernels round bf16
    differently from the eager verification rows, which parted speculative output from plain
    decoding (engines bench, int8: 5 of 128 tokens equal), while eager steps agree bit for bit."""
    from .lean.compiled import CompiledSteps

    if drafter is not None and lean.dtype != torch.float32:
        log.warning("compiled steps are float32-only with a drafter (lossless verification); running eager")
        return None
    # one CompiledSteps per model, shared by every engine over it: separate torch.compile wrappers
    # of the same function pile graphs onto one code object until dynamo's cache limit, after
    # which it compiles the inner functions one by one (eval acceptance's three engines ran
    # slower compiled than eager)
    compiled = lean.compiled_steps = lean.compiled_steps or CompiledSteps(lean)
    layer_sets = ((),) if drafter is None else ((), tuple(drafter.config.aux_layer_ids))
    return compiled if compiled.warm_up(layer_sets) else None


class TorchEngine:
    def __init__(self, model, tokenizer, info: EngineInfo, drafter=None, *, impl: str | None = None,
                 compile_steps: bool = False):
        self.model, self._tokenizer, self.drafter = model, tokenizer, drafter
        self.impl = resolve_impl(model, impl)
        self.info = dataclasses.replace(info, impl=self.impl)
        self.compiled = None
        if self.impl == "lean":
            from .lean import lean_model_for
            lean = lean_model_for(model)   # built now: the first request should not pay for it
            if drafter is not None:
                lean.measure_independent_rows()
            if compile_steps:
                self.compiled = compile_lean(lean, drafter)
        if compile_steps and drafter is not None and drafter.compiled is None:
            from completion.speculative.compiled import compile_drafter
            compile_drafter(drafter)
        self._lock = asyncio.Lock()
        self._runners: OrderedDict[str | None, TargetRunner] = OrderedDict()

    @classmethod
    def load(cls, model: str | None = None, *, device: str | None = None, precision: str | None = None,
             draft: str | None = None, impl: str | None = None, compile_steps: bool = False,
             workspace: str | None = None) -> "TorchEngine":
        """`model`: a name, directory, .gguf file or hub id (completion.models.resolve_model).
        `precision`: see resolve_precision; None keeps the checkpoint's arithmetic exact (float32 on
        a CPU, bf16 on a GPU), which is what tests comparing against the reference want.
        `workspace`: the editor's folder; an unset draft prefers a drafter adapted to it (eyas adapt)."""
        return on_model_thread(cls._load, model, device=device, precision=precision, draft=draft, impl=impl,
                               compile_steps=compile_steps, workspace=workspace)

    @classmethod
    def _load(cls, model, *, device, precision, draft, impl, compile_steps, workspace=None) -> "TorchEngine":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(model)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        precision = resolve_precision(precision, device)
        if draft is None:
            draft = default_draft(model, precision, device, workspace)
        draft_path = resolve_draft(model, draft)
        quantized = precision in QUANTIZED
        if quantized and impl == "hf":
            raise ValueError(f"{precision} weights need the lean forward (impl 'lean')")
        dtype = DTYPES[precision]
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        meta = read_metadata(path)
        info = EngineInfo(engine="torch", model=model or DEFAULT_MODEL, device=device, precision=precision,
                          draft=draft if draft_path else None,
                          trained=meta.get("trained", True), note=meta.get("description", ""))
        drafter = None
        if draft_path:
            from completion.speculative import load_drafter
            drafter = load_drafter(draft_path, lm, device=device, dtype=dtype)
        if quantized:   # before the engine builds (and maybe compiles) its steps over the weights
            if resolve_impl(lm, impl) != "lean":
                raise ValueError(f"{precision} weights need the lean forward, which does not support {path}")
            from .lean import lean_model_for
            from .lean.weights import quantize
            quantize(lean_model_for(lm).w, precision)
        return cls(lm, tokenizer, info, drafter, impl=impl, compile_steps=compile_steps)

    def tokenizer(self):
        return self._tokenizer

    async def use_drafter(self, path: str) -> None:
        """Swap in another drafter for this target (one `eyas adapt` fitted) between requests."""
        from completion.speculative import load_drafter
        loop = asyncio.get_running_loop()
        drafter = await loop.run_in_executor(MODEL_THREAD, lambda: load_drafter(
            path, self.model, device=self.model.device, dtype=DTYPES[self.info.precision]))
        async with self._lock:
            self.drafter = drafter
            self.info = dataclasses.replace(self.info, draft=path)

    def _runner(self, key: str | None) -> TargetRunner:
        runner = self._runners.pop(key, None) or new_runner(self.model, self.impl, self.compiled)
        self._runners[key] = runner
        while len(self._runners) > MAX_CACHED_DOCUMENTS:
            self._runners.popitem(last=False)
        return runner

    def _decoder(self, runner: TargetRunner, params: GenerationParams, stats: Stats, generator) -> Decoder:
        mode = params.mode
        if mode == "auto":
            mode = "peagle+lookup" if self.drafter is not None else "plain"   # docs/bench-engines.md
        if mode == "plain":
            return PlainDecoder(runner, params, stats, generator)
        if self.drafter is None:
            raise ValueError(f"mode {mode!r} needs a drafter: load the engine with --draft")
        from completion.speculative import SpeculativeDecoder
        return SpeculativeDecoder(runner, self.drafter, params, stats, generator, parallel=mode != "eagle3",
                                  lookup=mode == "peagle+lookup")

    async def generate(self, prompt_ids: list[int], params: GenerationParams) -> AsyncIterator[Chunk]:
        if not prompt_ids:
            raise ValueError("empty prompt")
        loop = asyncio.get_running_loop()
        stats = Stats(prompt_tokens=len(prompt_ids))
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.model.device).manual_seed(params.seed)
        async with self._lock:
            decoder = self._decoder(self._runner(params.cache_key), params, stats, generator)
            steps: asyncio.Queue = asyncio.Queue()
            cancelled = threading.Event()   # stops the model thread at its next chunk or step

            def post(item) -> None:   # from the model thread; a reader that left may have closed the loop
                try:
                    loop.call_soon_threadsafe(steps.put_nowait, item)
                except RuntimeError:
                    pass
            job = loop.run_in_executor(MODEL_THREAD, decode, decoder, prompt_ids, params, stats, cancelled, post)
            out = TextStream(self._tokenizer)
            try:
                while (step := await steps.get()) is not None:
                    new, stats.finish_reason = step   # a reason comes with the last chunk only
                    yield Chunk(new, out.push(new), stats)
                await job   # the model thread's error, if it had one
            finally:   # a cancel, or a consumer that stopped reading: the model thread stops too
                cancelled.set()
                job.cancel()   # not the running work: only our wait for it, so it never reports to a closed loop
                stats.finish_reason = stats.finish_reason or "cancelled"

    async def close(self) -> None:
        """Nothing to release: the model thread is shared and a step in flight finishes on its own."""


def decode(decoder: Decoder, prompt_ids: list[int], params: GenerationParams, stats: Stats,
           cancelled: threading.Event, emit) -> None:
    """On the model thread: prefill, then decoder steps until a stop token, max_tokens or a
    cancel. Each step's tokens go to `emit` with the finish reason ("stop", "length") on the last,
    then None. The whole request runs here in one go rather than one executor call per step, so
    the model thread never waits for the event loop between steps. `stats` counts are updated here; the finish
    reason is left to the event loop's side, the only one that knows of a cancel in time."""
    try:
        if cancelled.is_set():   # superseded before it started: a newer request computes what it needs
            return
        t0 = time.perf_counter()
        try:
            decoder.prefill(prompt_ids, cancelled.is_set)
        except PrefillStopped:   # only after a cancel, which has already ended the request
            return
        stats.prefill_ms = (time.perf_counter() - t0) * 1e3
        stop = set(params.stop_ids)
        if params.max_tokens == 0:
            emit(([], "length"))
        while stats.generated_tokens < params.max_tokens and not cancelled.is_set():
            t0 = time.perf_counter()
            new = decoder.step()
            stats.decode_ms += (time.perf_counter() - t0) * 1e3
            new = new[: params.max_tokens - stats.generated_tokens]
            hit = next((i for i, t in enumerate(new) if t in stop), None)
            if hit is not None:
                new = new[:hit]
            stats.generated_tokens += len(new)
            reason = "stop" if hit is not None else "length" if stats.generated_tokens == params.max_tokens else None
            if new or reason:
                emit((new, reason))
            if hit is not None:
                break
    finally:
        emit(None)


class TextStream:
    """Incremental detokenization that never emits half of a multi-byte character."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.emitted = tokenizer, [], 0

    def push(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        if text.endswith("\ufffd"):   # an incomplete UTF-8 sequence: wait for the next token
            return ""
        new, self.emitted = text[self.emitted:], len(text)
        return new
