"""`eyas bench engine`: the shared engine daemon under load, as many editor windows use it.

N clients (one connection each, as N LSP servers would have) each send M generate requests one
after another; a share of them (default 70%) is cancelled mid-stream, the way typing cancels a
completion. Reported: completed / cancelled / failed / hung counts, p50/p99 latency of the
completed ones, the daemon's RSS before and after (after a warm-up that fills every client's KV
cache; it must not grow more than 10%), and requests the daemon lost (sent but never ended there).
Exit status 0 only when nothing failed, hung or was lost and RSS stayed within bounds.

    eyas bench engine [--clients 4] [--requests 10] [--cancel 0.7] [--max-tokens 32]
                      [--model DIR] [--engine torch|vllm] [--url ADDRESS] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from contextlib import aclosing
from pathlib import Path

from completion.engine import GenerationParams
from completion.engine.daemon_client import DaemonEngine
from completion.engine.rpc import call_sync

HANG_S = 120.0               # a request with no end after this long counts as hung
RSS_GROWTH_LIMIT = 0.10
SNIPPETS = ["def fibonacci(n):\n    ", "import os\n\n\ndef main(argv):\n    parser = ",
            "class Stack:\n    def push(self, item):\n        ", "for i, line in enumerate(lines):\n    "]


async def one_request(engine: DaemonEngine, prompt: list[int], cancel_after: int | None, max_tokens: int,
                      document: str) -> tuple[str, float]:
    """("completed" | "cancelled" | "failed" | "hung", seconds)."""
    t0 = time.perf_counter()

    async def run() -> str:
        chunks = 0
        params = GenerationParams(max_tokens=max_tokens, cache_key=document)
        async with aclosing(engine.generate(prompt, params)) as stream:
            async for _ in stream:
                chunks += 1
                if cancel_after is not None and chunks >= cancel_after:
                    return "cancelled"   # leaving the block closes the stream: the daemon is told
        return "completed"

    try:
        outcome = await asyncio.wait_for(run(), HANG_S)
    except asyncio.TimeoutError:
        outcome = "hung"
    except Exception:
        outcome = "failed"
    return outcome, time.perf_counter() - t0


async def client(engine: DaemonEngine, prompts: list[list[int]], args, rng: random.Random, number: int) -> list:
    results = []
    for i in range(args.requests):
        cancel_after = rng.randint(1, 3) if rng.random() < args.cancel else None
        # a random last token: every request differs, so caches are reused only in part
        results.append(await one_request(engine, rng.choice(prompts) + [rng.randrange(1000, args.vocab_size)],
                                         cancel_after, args.max_tokens, f"file{number}-{i % 2}.py"))
    return results


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench(args) -> dict:
    first = await asyncio.to_thread(DaemonEngine.load, args.engine, args.model, url=args.url)
    address, tokenizer = first.address, first.tokenizer()
    engines = [first] + [DaemonEngine(address, first.command, tokenizer, first.info) for _ in range(args.clients - 1)]
    prompts = [tokenizer.encode(s, add_special_tokens=False) for s in SNIPPETS]
    args.vocab_size = len(tokenizer)
    # warm-up: every client fills its documents' KV caches, so RSS "before" is the steady state
    for n, engine in enumerate(engines):
        for doc in range(2):
            await one_request(engine, prompts[0], None, args.max_tokens, f"file{n}-{doc}.py")
    before = await asyncio.to_thread(call_sync, address, "stats")
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    per_client = await asyncio.gather(*(client(e, prompts, args, random.Random(rng.random()), n)
                                        for n, e in enumerate(engines)))
    wall = time.perf_counter() - t0
    after = before
    for _ in range(100):   # let the daemon finish the cancellations it was sent
        after = await asyncio.to_thread(call_sync, address, "stats")
        if after["requests"] == 0 and after["queued"] == 0:
            break
        await asyncio.sleep(0.05)
    for engine in engines:
        await engine.close()
    outcomes = [o for results in per_client for o in results]
    counts = {k: sum(1 for o, _ in outcomes if o == k) for k in ("completed", "cancelled", "failed", "hung")}
    ended = sum(after.get(k, 0) - before.get(k, 0) for k in ("completed", "cancelled", "failed"))
    latencies = [s * 1e3 for o, s in outcomes if o == "completed"]
    growth = after["rss_bytes"] / before["rss_bytes"] - 1 if before["rss_bytes"] else 0.0
    return {
        "clients": args.clients, "requests_per_client": args.requests, "cancel_share": args.cancel,
        "max_tokens": args.max_tokens, "engine": first.info.engine, "model": first.info.model,
        "sent": len(outcomes), **counts,
        "lost": len(outcomes) - ended, "left_running": after["requests"] + after["queued"],
        "latency_ms": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)},
        "wall_s": round(wall, 2),
        "daemon_rss_mb": {"before": round(before["rss_bytes"] / 2**20, 1), "after": round(after["rss_bytes"] / 2**20, 1),
                          "growth": round(growth, 4)},
        "daemon_pid": after["pid"],
    }


def passed(r: dict) -> bool:
    return (r["failed"] == r["hung"] == r["lost"] == r["left_running"] == 0
            and r["daemon_rss_mb"]["growth"] <= RSS_GROWTH_LIMIT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eyas bench engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=10, help="requests per client")
    p.add_argument("--cancel", type=float, default=0.7, help="share of requests cancelled mid-stream")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--engine", choices=("torch", "vllm"), default="torch")
    p.add_argument("--model", default=None, help="model name, directory or .gguf file (default: qwen2.5-coder-0.5b)")
    p.add_argument("--url", default=None, help="a running daemon's address (socket path or tcp://127.0.0.1:PORT)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or not 0 <= args.cancel <= 1:
        p.error("--clients and --requests must be >= 1, --cancel in [0, 1]")
    result = asyncio.run(bench(args))
    result["passed"] = passed(result)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if result["passed"] else 1
