"""`eyas`: serve | complete | bench | eval | train.

    eyas serve [--tcp --port 8765]              LSP over stdio (TCP on 127.0.0.1 when asked)
    eyas complete FILE[:LINE[:COL]] [--json]    one completion, printed with its timings
    eyas models [--json]                        model names, sizes, what is installed and converted
    eyas bench latency|spec|engines|engine ...  benchmarks (tables + JSON + PNG): LSP latency,
                                                speculative modes, decode engines side by side
                                                (llama.cpp, vLLM, HF), the engine daemon under load
    eyas bench session ...                      typing replayed by a typist who does not wait for answers
    eyas bench floor ...                        the lean decode step against the memory-bandwidth floor
    eyas eval acceptance|infill ...             model quality on HumanEval
    eyas stats [--db PATH] [--json]             acceptance and latency from the local telemetry
    eyas adapt [REPO] [--status|--reset]        fine-tune the drafter on a repository, in the user cache
    eyas engine serve [--engine torch|vllm]     the engine daemon editor windows share
    eyas train pocket|synth|drafter|drafter-fit training (target, drafter data, P-EAGLE / EAGLE-3
                                                drafter, the quick in-memory drafter fit)
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from pathlib import Path

from completion.engine.base import DECODE_MODES

# Subcommands that own their arguments: (command, which) -> "module:function(argv) -> int".
TOOLS = {
    ("bench", "latency"): "completion.evaluation.latency_bench:main",
    ("bench", "spec"): "completion.evaluation.spec_bench:main",
    ("bench", "engines"): "completion.evaluation.engine_bench:main",
    ("bench", "engine"): "completion.evaluation.daemon_bench:main",
    ("bench", "session"): "completion.evaluation.session_bench:main",
    ("bench", "floor"): "completion.evaluation.floor_bench:main",
    ("bench", "forward"): "completion.evaluation.forward_speed:main",
    ("engine", "serve"): "completion.engine.daemon:main",
    ("eval", "acceptance"): "completion.evaluation.acceptance:main",
    ("eval", "infill"): "completion.evaluation.infill:main",
    ("train", "pocket"): "completion.training.pocket:main",
    ("train", "synth"): "completion.training.synthesis:main",
    ("train", "drafter"): "completion.training.peagle_trainer:main",
    ("train", "drafter-fit"): "completion.training.drafter_fit:main",
}


def _model_args(p: argparse.ArgumentParser) -> None:
    from completion.engine import PRECISIONS
    p.add_argument("--engine", default="torch",
                   help="torch (in this process, default) | daemon (shared, started on demand) | vllm | openai")
    p.add_argument("--model", default=None, help="a model name (`eyas models`), directory, .gguf file or hub id "
                                                 "(default: qwen2.5-coder-0.5b)")
    p.add_argument("--draft", default=None,
                   help="P-EAGLE drafter directory or hub id; 'embedded': the drafter shipped with the "
                        "model; 'none': decode plain (default: the shipped drafter where speculation pays, "
                        "i.e. in bf16 or on a GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="torch engine: float32, bf16, or weight-only int8 / int4 (lean forward); "
                        "auto (default): bf16 on a GPU and on a CPU with AMX (the tile kernel), else int8 "
                        "(measured: docs/qwen2.5-coder-0.5b.md)")
    p.add_argument("--impl", choices=("lean", "hf"), default=None,
                   help="torch engine forward: lean (ours, static KV cache) or hf (Hugging Face, the reference); "
                        "default: lean where it supports the model")
    p.add_argument("--compile", action="store_true",
                   help="torch engine: torch.compile the lean forward's decode and verify steps at load "
                        "(about a minute on 2 cores, then faster steps)")


def parse_location(spec: str) -> tuple[Path, int | None, int | None]:
    """FILE, FILE:LINE or FILE:LINE:COL (1-based line and column, column in characters)."""
    parts = spec.rsplit(":", 2)
    nums = []
    while len(parts) > 1 and parts[-1].isdigit():
        nums.insert(0, int(parts.pop()))
    line, col = (nums + [None, None])[:2]
    return Path(":".join(parts)), line, col


def cursor_offset(text: str, line: int | None, col: int | None) -> int:
    if line is None:
        return len(text)
    lines = text.splitlines(keepends=True)
    if not 1 <= line <= max(len(lines), 1):
        raise SystemExit(f"line {line} is outside the file (1..{len(lines)})")
    start = sum(len(l) for l in lines[: line - 1])
    body = lines[line - 1].rstrip("\r\n") if lines else ""
    if col is None:
        return start + len(body)
    if not 1 <= col <= len(body) + 1:
        raise SystemExit(f"column {col} is outside line {line} (1..{len(body) + 1})")
    return start + col - 1


async def _complete(args) -> int:
    from completion.context import DocumentTrees, language_for
    from completion.engine import load_engine
    from completion.service import Completer, CompletionSettings

    if args.compile and args.engine != "torch":
        raise SystemExit("--compile is for the torch engine")
    path, line, col = parse_location(args.location)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc}")
    cursor = cursor_offset(text, line, col)
    options = {"impl": args.impl, "precision": args.precision} if args.engine in ("torch", "daemon") else {}
    if args.engine == "torch":   # a drafter `eyas adapt` fitted to the file's repository, if any
        from completion.adapt import repo_root
        options["workspace"] = str(repo_root(path))
    engine = load_engine(args.engine, args.model, device=args.device, draft=args.draft, **options,
                         **({"compile_steps": True} if args.compile else {}))
    trees = DocumentTrees()
    uri = path.resolve().as_uri()
    trees.open(uri, language_for(None, str(path)), text)
    completer = Completer(engine, trees, CompletionSettings(max_tokens=args.max_tokens,
                                                            temperature=args.temperature))
    overrides = {"mode": args.mode} if args.mode else {}
    if args.k:
        overrides["num_speculative_tokens"] = args.k
    done = await completer.complete(uri, cursor, repo=path.resolve().parent.name, **overrides)
    # a second request at the same spot shows what prefix reuse saves
    again = await completer.complete(uri, cursor, repo=path.resolve().parent.name, **overrides)
    info = engine.info
    if args.json:
        print(json.dumps({"model": info.model, "completion": done.text, "raw": done.raw_text,
                          "multiline": done.multiline,
                          "timings_ms": done.timings_ms, "stats": done.stats.to_dict(),
                          "repeat_timings_ms": again.timings_ms,
                          "engine": info.__dict__}, indent=2))
        return 0
    where = f"{path}:{line or '$'}:{col or '$'}"
    print(f"model: {info.model} ({info.engine}, {info.device}" + (f", {info.precision}" if info.precision else "")
          + ")" + (f" + draft {info.draft}" if info.draft else ""))
    if not info.trained:
        print(f"note: UNTRAINED placeholder model: {info.note}")
    print(f"--- completion at {where} ({'multi' if done.multiline else 'single'}-line) ---")
    print(done.text if done.text else "(nothing worth showing; raw model output: %r)" % done.raw_text[:120])
    print("---")
    t, s = done.timings_ms, done.stats
    print("timings ms: " + "  ".join(f"{k} {v:.1f}" for k, v in t.items()))
    print(f"tokens: prompt {s.prompt_tokens}, generated {s.generated_tokens} ({s.finish_reason}), "
          f"acceptance length {s.acceptance_length:.2f}")
    print(f"same request again: prefill {again.timings_ms['prefill']:.1f} ms with "
          f"{again.stats.reused_tokens}/{again.stats.prompt_tokens} prompt tokens reused")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eyas", description="Inline code completion backend (LSP + P-EAGLE)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the language server (stdio by default)")
    _model_args(p)
    p.add_argument("--tcp", action="store_true", help="listen on 127.0.0.1 instead of stdio")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--url", default=None, help="--engine openai: the server; --engine daemon: a daemon's address")
    p.add_argument("--api-key-env", default=None, help="--engine openai: the variable holding the API key")

    p = sub.add_parser("complete", help="complete at FILE[:LINE[:COL]] (1-based) and print timings")
    _model_args(p)
    p.add_argument("location")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--mode", choices=[m for m in DECODE_MODES if m != "auto"], default=None,
                   help="decoding: plain, a drafter's (P-EAGLE, EAGLE-3), or P-EAGLE with drafts copied "
                        "from the context where it repeats itself (default: that, where a drafter is loaded)")
    p.add_argument("--k", type=int, default=None, help="speculative tokens per step")
    p.add_argument("--json", action="store_true", help="print JSON with all stats")

    for command, help_text in (("bench", "benchmarks"), ("eval", "evaluations"), ("train", "training"),
                               ("engine", "the engine daemon shared by every editor window")):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("which", choices=[w for c, w in TOOLS if c == command])
        p.add_argument("rest", nargs=argparse.REMAINDER, help="the tool's own arguments (try --help)")

    sub.add_parser("models", help="model names, sizes, what is installed and what is converted (--json)")
    sub.add_parser("stats", help="acceptance and latency from the local telemetry (nothing leaves the machine)")
    sub.add_parser("adapt", help="fine-tune the drafter on a repository (--status, --reset; nothing leaves the machine)")

    command_line, argv = argv is None, sys.argv[1:] if argv is None else argv
    if argv[:1] == ["models"]:
        from completion.models import main as models
        return models(argv[1:])
    if argv[:1] == ["stats"]:   # its own options (argparse would take them for the top parser's)
        from completion.telemetry import main as stats
        return stats(argv[1:])
    if argv[:1] == ["adapt"]:
        from completion.adapt import main as adapt
        return adapt(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "serve":
        from lsp_server.config import ServerConfig
        from lsp_server.server import serve
        serve(ServerConfig(engine=args.engine, model=args.model, draft=args.draft, device=args.device,
                           impl=args.impl, precision=args.precision, compile=args.compile,
                           max_tokens=args.max_tokens, url=args.url, api_key_env=args.api_key_env), tcp_port=args.port if args.tcp else None)
        return 0
    if args.command == "complete":
        return asyncio.run(_complete(args))
    if args.command == "train" and command_line:   # training steps run ~2x faster under jemalloc
        from completion.training import relaunch_with_jemalloc
        relaunch_with_jemalloc()
    module, function = TOOLS[(args.command, args.which)].split(":")
    return getattr(importlib.import_module(module), function)(args.rest)


if __name__ == "__main__":
    sys.exit(main())
