"""`eyas bench latency`: inline-completion latency as an editor sees it.

Spawns the real server (`python -m completion.cli serve`) and talks to it over stdio with pygls's
`LanguageClient`, like an editor would:

1. main run: N `textDocument/inlineCompletion` requests at random cursors over real source files
   (the Python standard library, plus C/C++/JS/Go/... files found on this machine). After each
   request `eyas/status` gives the server's per-stage figures; the client times the round trip.
2. target "context + prompt p50 < 5 ms" on a ~5,000-line standard-library file, random cursors.
3. target "second keystroke": request at a cursor, type one character (didChange), request again;
   prefill of the second must be >= 5x cheaper than the first (KV prefix reuse).

Prints an aligned table (p50/p90/p99 per stage) and both targets, writes JSON (default
out/bench/latency.json) and a PNG latency CDF beside it.

    eyas bench latency [--requests 50] [--seed 0] [--max-tokens 64] [--files-per-language 3]
                       [--out out/bench/latency.json] [--model M --draft D --device cpu]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import struct
import sys
import sysconfig
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types as t

STAGES = ("context", "prompt", "prefill", "decode", "postprocess")
CONTEXT_PROMPT_TARGET_MS = 5.0     # target 1: context + prompt p50 on a ~5,000-line file
REUSE_TARGET_RATIO = 5.0           # target 2: first prefill / second-keystroke prefill
BIG_FILE_LINES = 5000
TARGET_MAX_TOKENS = 8              # the target runs don't need long generations
LANGUAGE_IDS = {".py": "python", ".js": "javascript", ".mjs": "javascript", ".ts": "typescript",
                ".go": "go", ".rs": "rust", ".java": "java", ".c": "c", ".h": "c",
                ".cpp": "cpp", ".cc": "cpp", ".hpp": "cpp"}
OTHER_ROOTS = ("/usr/include", "/usr/lib/node_modules", "/usr/share", "/usr/local/go/src",
               "~/.rustup/toolchains")
MIN_LINES, MAX_BYTES, MAX_LINE_CHARS = 30, 300_000, 400   # skip stubs, giant and minified files


# -- corpus ------------------------------------------------------------------------------------
@dataclass
class SourceFile:
    path: Path
    language: str
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @property
    def uri(self) -> str:
        return self.path.resolve().as_uri()


def _read_source(path: Path) -> str | None:
    """The text of a usable source file, or None (binary, huge, minified, odd line breaks)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    # LSP splits lines on \n, \r\n and \r only; keep files where that is unambiguous
    if len(lines) < MIN_LINES or "\r" in text or len(text.splitlines()) != len(lines) - (text.endswith("\n")):
        return None
    if max(map(len, lines)) > MAX_LINE_CHARS:
        return None
    return text


def _candidates() -> dict[str, list[Path]]:
    """Source paths by language: Python from the standard library, the rest from system folders
    and the venv's site-packages."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, list[Path]] = {"python": sorted(
        p for p in stdlib.rglob("*.py")
        if not {"test", "tests", "site-packages", "idle_test", "pydoc_data"} & set(p.relative_to(stdlib).parts))}
    roots = [Path(sysconfig.get_paths()["purelib"])] + [Path(r).expanduser() for r in OTHER_ROOTS]
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                language = LANGUAGE_IDS.get(os.path.splitext(name)[1])
                if language and language != "python" and not name.endswith(".min.js"):
                    found.setdefault(language, []).append(Path(folder) / name)
    return {lang: sorted(set(paths)) for lang, paths in found.items()}


def find_files(per_language: int, rng: random.Random, languages: list[str] | None = None) -> list[SourceFile]:
    files, seen = [], set()   # seen: texts, since toolchains and venvs ship identical copies
    for language, paths in sorted(_candidates().items()):
        if languages and language not in languages:
            continue
        rng.shuffle(paths)
        chosen = 0
        for path in paths:
            if chosen == per_language:
                break
            if (text := _read_source(path)) is not None and text not in seen:
                seen.add(text)
                files.append(SourceFile(path, language, text))
                chosen += 1
    return files


def big_python_file() -> SourceFile:
    """The standard-library module whose length is closest to BIG_FILE_LINES."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    best: SourceFile | None = None
    for path in sorted(stdlib.rglob("*.py")):
        if {"test", "tests", "site-packages", "pydoc_data"} & set(path.relative_to(stdlib).parts):
            continue
        if path.stat().st_size < 100_000:   # ~5,000 lines of Python is > 150 KB: skip the rest unread
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "\r" not in text and (best is None or abs(text.count("\n") - BIG_FILE_LINES)
                                  < abs(best.text.count("\n") - BIG_FILE_LINES)):
            best = SourceFile(path, "python", text)
    if best is None:
        raise SystemExit(f"no standard-library file of ~{BIG_FILE_LINES} lines under {stdlib}")
    return best


def utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def random_cursor(f: SourceFile, rng: random.Random, min_line: int = 0) -> t.Position:
    """Half the time at the end of a line's text (typing at the end of a line), else anywhere in it."""
    lines = f.lines
    line = rng.randrange(min(min_line, len(lines) - 1), len(lines))
    body = lines[line]
    col = len(body.rstrip()) if rng.random() < 0.5 else rng.randint(0, len(body))
    return t.Position(line, utf16_len(body[:col]))


def _plain(x):
    """pygls hands results of custom methods back as namedtuples; make them dicts again."""
    if hasattr(x, "_asdict"):
        return {k: _plain(v) for k, v in x._asdict().items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# -- the client --------------------------------------------------------------------------------
class BenchClient:
    """An editor stand-in: one server process, documents, timed requests, status reads."""

    def __init__(self):
        from pygls.lsp.client import LanguageClient
        self.lsp = LanguageClient("eyas-bench", "1")
        self.stderr: deque[str] = deque(maxlen=40)   # the server's last log lines, for errors
        self.messages: list[str] = []
        self.versions: dict[str, int] = {}
        self._drain: asyncio.Task | None = None

        @self.lsp.feature(t.WINDOW_SHOW_MESSAGE)
        def show_message(params: t.ShowMessageParams):
            self.messages.append(params.message)

        @self.lsp.feature(t.WINDOW_LOG_MESSAGE)
        def log_message(params: t.LogMessageParams):
            self.messages.append(params.message)

    async def start(self, server_args: list[str], max_tokens: int, request_timeout: float) -> None:
        await self.lsp.start_io(sys.executable, "-m", "completion.cli", "serve", *server_args)
        proc = getattr(self.lsp, "_server", None)
        if proc is not None and proc.stderr is not None:   # an unread stderr pipe would stall it
            self._drain = asyncio.ensure_future(self._read_stderr(proc.stderr))
        caps = t.ClientCapabilities(
            general=t.GeneralClientCapabilities(position_encodings=[t.PositionEncodingKind.Utf16]),
            text_document=t.TextDocumentClientCapabilities(inline_completion=t.InlineCompletionClientCapabilities()))
        root = Path.cwd()
        await asyncio.wait_for(self.lsp.initialize_async(t.InitializeParams(
            capabilities=caps, workspace_folders=[t.WorkspaceFolder(root.as_uri(), root.name)],
            initialization_options={"maxTokens": max_tokens, "requestTimeout": request_timeout})), 120)
        self.lsp.initialized(t.InitializedParams())

    async def _read_stderr(self, stream) -> None:
        while line := await stream.readline():
            self.stderr.append(line.decode(errors="replace").rstrip())

    async def status(self) -> dict:
        return _plain(await asyncio.wait_for(self.lsp.protocol.send_request_async("eyas/status", None), 60))

    async def wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = await self.status()
            if st["state"] == "ready":
                return st
            if st["state"] == "failed":
                raise SystemExit(f"the server could not load the model: {st['error']}")
            await asyncio.sleep(0.2)
        raise SystemExit(f"the model did not load within {timeout:.0f} s")

    def set_max_tokens(self, n: int) -> None:
        self.lsp.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings={"eyas": {"maxTokens": n}}))

    def open(self, f: SourceFile) -> str:
        uri = f.uri
        if uri not in self.versions:
            self.versions[uri] = 1
            self.lsp.text_document_did_open(t.DidOpenTextDocumentParams(t.TextDocumentItem(uri=uri, language_id=f.language, version=1, text=f.text)))
        return uri

    def close(self, uri: str) -> None:
        if self.versions.pop(uri, None) is not None:
            self.lsp.text_document_did_close(t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(uri)))

    def edit(self, uri: str, start: t.Position, end: t.Position, text: str) -> None:
        self.versions[uri] += 1
        self.lsp.text_document_did_change(t.DidChangeTextDocumentParams(
            t.VersionedTextDocumentIdentifier(version=self.versions[uri], uri=uri),
            [t.TextDocumentContentChangePartial(range=t.Range(start, end), text=text)]))

    async def complete(self, uri: str, pos: t.Position, timeout: float, served: int | None = None) -> dict:
        """One timed request, then the server's figures for it (`stages` is None when the server
        did not serve it: timed out, disabled, or failed). `served`: the server's count before
        this request, when known (saves a status round trip right before the timed request)."""
        if served is None:
            served = (await self.status())["generations"]
        t0 = time.perf_counter()
        error = None
        try:
            result = await asyncio.wait_for(self.lsp.text_document_inline_completion_async(t.InlineCompletionParams(
                text_document=t.TextDocumentIdentifier(uri), position=pos,
                context=t.InlineCompletionContext(trigger_kind=t.InlineCompletionTriggerKind.Automatic))), timeout)
        except Exception as exc:   # one failed request is a data point, not the end of the bench
            result, error = None, f"{type(exc).__name__}: {exc}"
        e2e = (time.perf_counter() - t0) * 1e3
        st = await self.status()
        stages = st["latency_ms"]["last"] if st["generations"] > served else None
        text = result.items[0].insert_text if result is not None and result.items else ""
        return {"e2e": round(e2e, 3), "stages": stages, "chars": len(text if isinstance(text, str) else ""),
                "error": error, "served": st["generations"]}

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.lsp.shutdown_async(None), 10)
            self.lsp.exit(None)
        except Exception:
            pass
        proc = getattr(self.lsp, "_server", None)
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
        try:
            await asyncio.wait_for(self.lsp.stop(), 10)
        except Exception:
            pass
        if self._drain is not None:
            self._drain.cancel()


# -- the three runs ----------------------------------------------------------------------------
def _record(r: dict, f: SourceFile, pos: t.Position) -> dict:
    s = r["stages"] or {}
    row = {"file": str(f.path), "language": f.language, "line": pos.line, "character": pos.character,
           "e2e": r["e2e"], "served": bool(r["stages"]), "chars": r["chars"]}
    for key in (*STAGES, "total", "tokens", "reused_tokens", "acceptance_length"):
        row[key] = s.get(key)
    if r["error"]:
        row["error"] = r["error"]
    return row


async def run_requests(client: BenchClient, files: list[SourceFile], n: int, rng: random.Random,
                       timeout: float, warmup: int) -> list[dict]:
    for f in files:
        client.open(f)
    await client.status()   # a round trip: every didOpen has been handled before timing starts
    for _ in range(warmup):   # first calls pay one-off costs (allocator, lazy imports)
        f = rng.choice(files)
        await client.complete(f.uri, random_cursor(f, rng), timeout)
    rows, every, t_start = [], max(1, n // 10), time.perf_counter()
    for i in range(n):
        f = rng.choice(files)
        pos = random_cursor(f, rng)
        rows.append(_record(await client.complete(f.uri, pos, timeout), f, pos))
        if (i + 1) % every == 0 or i + 1 == n:
            e2e = [r["e2e"] for r in rows]
            print(f"  [{i + 1:>4}/{n}] end-to-end p50 {percentile(e2e, 50):8.1f} ms   "
                  f"({time.perf_counter() - t_start:.0f} s)", flush=True)
    return rows


async def run_context_target(client: BenchClient, big: SourceFile, n: int, rng: random.Random,
                             timeout: float) -> dict:
    uri = client.open(big)
    rows = []
    for _ in range(n):
        pos = random_cursor(big, rng)
        rows.append(_record(await client.complete(uri, pos, timeout), big, pos))
    cp = [r["context"] + r["prompt"] for r in rows if r["served"]]
    p50 = percentile(cp, 50)
    return {"file": str(big.path), "lines": len(big.lines), "requests": n, "open_documents": len(client.versions),
            "context_p50_ms": percentile([r["context"] for r in rows if r["served"]], 50),
            "prompt_p50_ms": percentile([r["prompt"] for r in rows if r["served"]], 50),
            "context_prompt_p50_ms": p50, "target_ms": CONTEXT_PROMPT_TARGET_MS,
            "met": p50 is not None and p50 < CONTEXT_PROMPT_TARGET_MS, "samples": rows}


async def run_reuse_target(client: BenchClient, big: SourceFile, trials: int, rng: random.Random,
                           timeout: float) -> dict:
    """Request at a cursor, type one character there, request at the new cursor."""
    uri = client.open(big)
    out = []
    for _ in range(trials):
        pos = random_cursor(big, rng, min_line=200)   # far enough in that the prefix budget is full
        first = await client.complete(uri, pos, timeout)
        ch = rng.choice("abcdefghijklmnopqrstuvwxyz_.(")
        client.edit(uri, pos, pos, ch)   # sent right before the request, as an editor does
        after = t.Position(pos.line, pos.character + 1)
        second = await client.complete(uri, after, timeout, served=first["served"])
        client.edit(uri, pos, after, "")   # undo, so every trial starts from the file on disk
        if first["stages"] and second["stages"]:
            out.append({"line": pos.line, "character": pos.character, "typed": ch,
                        "first": {k: first["stages"][k] for k in ("prefill", "reused_tokens", "total")} | {"e2e": first["e2e"]},
                        "second": {k: second["stages"][k] for k in ("prefill", "reused_tokens", "total")} | {"e2e": second["e2e"]}})
    p1 = percentile([o["first"]["prefill"] for o in out], 50)
    p2 = percentile([o["second"]["prefill"] for o in out], 50)
    ratio = p1 / p2 if p1 is not None and p2 else None
    return {"file": str(big.path), "trials": len(out), "first_prefill_p50_ms": p1, "second_prefill_p50_ms": p2,
            "first_reused_p50": percentile([o["first"]["reused_tokens"] for o in out], 50),
            "second_reused_p50": percentile([o["second"]["reused_tokens"] for o in out], 50),
            "first_e2e_p50_ms": percentile([o["first"]["e2e"] for o in out], 50),
            "second_e2e_p50_ms": percentile([o["second"]["e2e"] for o in out], 50),
            "ratio": ratio, "target_ratio": REUSE_TARGET_RATIO,
            "met": ratio is not None and ratio >= REUSE_TARGET_RATIO, "samples": out}


# -- figures -----------------------------------------------------------------------------------
def percentile(values, q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 3)


def summarize(values) -> dict:
    xs = [v for v in values if v is not None]
    return {"n": len(xs), "p50": percentile(xs, 50), "p90": percentile(xs, 90), "p99": percentile(xs, 99),
            "mean": round(statistics.fmean(xs), 3) if xs else None, "max": max(xs) if xs else None}


def summary_rows(rows: list[dict]) -> dict[str, dict]:
    served = [r for r in rows if r["served"]]
    out = {stage: summarize(r[stage] for r in served) for stage in STAGES}
    out["context+prompt"] = summarize(r["context"] + r["prompt"] for r in served)
    out["server total"] = summarize(r["total"] for r in served)
    out["end-to-end"] = summarize(r["e2e"] for r in rows)
    # the server's total is its handler's time, request in to answer out: the rest is JSON-RPC and doc sync
    out["lsp overhead"] = summarize(r["e2e"] - r["total"] for r in served)
    out["tokens (count)"] = summarize(r["tokens"] for r in served)
    out["reused tok (count)"] = summarize(r["reused_tokens"] for r in served)
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}" if abs(v) < 1e4 else f"{v:.0f}"


def format_table(summary: dict[str, dict], unit: str = "ms") -> str:
    head = f"{'stage (' + unit + ')':<22}{'p50':>10}{'p90':>10}{'p99':>10}{'mean':>10}{'max':>10}{'n':>6}"
    lines = [head, "-" * len(head)]
    for name, s in summary.items():
        lines.append(f"{name:<22}" + "".join(f"{_fmt(s[k]):>10}" for k in ("p50", "p90", "p99", "mean", "max"))
                     + f"{s['n']:>6}")
    return "\n".join(lines)


def format_targets(ctx: dict, reuse: dict) -> str:
    mark = lambda ok: "MET" if ok else "NOT MET"
    name = f"{Path(ctx['file']).name} ({ctx['lines']} lines)"
    rows = [("target", "measured", "goal", ""),
            (f"context+prompt p50, {name}",
             f"{_fmt(ctx['context_prompt_p50_ms'])} ms (context {_fmt(ctx['context_p50_ms'])}, "
             f"prompt {_fmt(ctx['prompt_p50_ms'])})", f"< {CONTEXT_PROMPT_TARGET_MS:g} ms", mark(ctx["met"])),
            (f"second-keystroke prefill, {reuse['trials']} trials",
             f"{_fmt(reuse['first_prefill_p50_ms'])} -> {_fmt(reuse['second_prefill_p50_ms'])} ms = "
             f"{_fmt(reuse['ratio'])}x (reused {_fmt(reuse['first_reused_p50'])} -> "
             f"{_fmt(reuse['second_reused_p50'])} tok)", f">= {REUSE_TARGET_RATIO:g}x", mark(reuse["met"]))]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"host": platform.node(), "os": f"{platform.system()} {platform.release()}", "cpu": cpu,
            "cpus": os.cpu_count(), "python": platform.python_version(),
            # the server inherits these; torch sizes its thread pool from them
            "threads_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}}
    try:
        import torch
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return info


# -- the PNG: a latency CDF, matplotlib when present, else a few pixels of our own ----------------
SERIES_COLORS = {"end-to-end": (20, 20, 20), "server total": (90, 90, 220), "prefill": (230, 130, 20),
                 "decode": (40, 160, 60), "context+prompt": (200, 40, 160),
                 "live (Kaplan-Meier)": (40, 110, 200), "waiting typist": (200, 60, 40)}   # eyas bench session


def write_png(path: Path, rows: list[dict]) -> None:
    served = [r for r in rows if r["served"]]
    series = {"end-to-end": [r["e2e"] for r in rows], "server total": [r["total"] for r in served],
              "prefill": [r["prefill"] for r in served], "decode": [r["decode"] for r in served],
              "context+prompt": [r["context"] + r["prompt"] for r in served]}
    series = {k: sorted(max(v, 1e-3) for v in vs) for k, vs in series.items() if vs}
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _cdf_png(path, series)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, xs in series.items():
        ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=name,
                color=[c / 255 for c in SERIES_COLORS[name]])
    ax.set(xscale="log", xlabel="ms (log)", ylabel="fraction of requests", title="Eyas latency CDF")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# 3x5 glyphs, rows top to bottom; anything else draws as a blank
FONT = {"0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
        "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
        "8": "111101111101111", "9": "111101111001111", "A": "010101111101101", "C": "111100100100111",
        "D": "110101101101110", "E": "111100111100111", "F": "111100111100100", "G": "111100101101111",
        "I": "111010010010111", "L": "100100100100111", "M": "101111111101101", "N": "110101101101101",
        "O": "111101101101111", "P": "111101111100100", "R": "110101110101101", "S": "111100111001111",
        "T": "111010010010010", "U": "101101101101111", "V": "101101101101010", "Y": "101101010010010",
        "X": "101101010101101", "+": "000010111010000", "-": "000000111000000", "%": "101001010100101",
        ".": "000000000000010", "(": "010100100100010", ")": "010001001001010", "/": "001001010100100",
        "B": "110101110101110", "H": "101101111101101", "K": "101101110101101", "W": "101101111111101"}


class Canvas:
    def __init__(self, w: int, h: int):
        self.w, self.h, self.px = w, h, bytearray(b"\xff" * (w * h * 3))

    def dot(self, x: int, y: int, rgb, size: int = 1) -> None:
        for dy in range(size):
            for dx in range(size):
                if 0 <= x + dx < self.w and 0 <= y + dy < self.h:
                    i = ((y + dy) * self.w + x + dx) * 3
                    self.px[i:i + 3] = bytes(rgb)

    def line(self, x0, y0, x1, y1, rgb, size: int = 1) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in range(steps + 1):
            self.dot(round(x0 + (x1 - x0) * s / steps), round(y0 + (y1 - y0) * s / steps), rgb, size)

    def text(self, x: int, y: int, s: str, rgb=(0, 0, 0), scale: int = 2) -> None:
        for ch in s.upper():
            for k, bit in enumerate(FONT.get(ch, "0" * 15)):
                if bit == "1":
                    self.dot(x + (k % 3) * scale, y + (k // 3) * scale, rgb, scale)
            x += 4 * scale

    def save(self, path: Path) -> None:
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))
        chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                    + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                         + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _cdf_png(path: Path, series: dict[str, list]) -> None:
    """Step CDFs on a log axis: each series is sorted samples, or (x, fraction) points of a curve
    that need not reach 1 (eyas bench session's Kaplan-Meier estimate)."""
    import math
    series = {name: [(max(v, 1e-3), (i + 1) / len(xs)) for i, v in enumerate(xs)] if not isinstance(xs[0], (list, tuple))
              else [(max(v, 1e-3), q) for v, q in xs] for name, xs in series.items()}
    c = Canvas(760, 420)
    left, right, top, bottom = 70, 740, 40, 370
    lo = math.floor(math.log10(min(v[0][0] for v in series.values())))
    hi = max(math.ceil(math.log10(max(v[-1][0] for v in series.values()))), lo + 1)
    x_of = lambda v: round(left + (math.log10(v) - lo) / (hi - lo) * (right - left))
    y_of = lambda q: round(bottom - q * (bottom - top))
    c.text(left, 12, "EYAS LATENCY CDF  (MS, LOG SCALE)")
    for q in (0, 0.5, 0.9, 1):
        c.line(left, y_of(q), right, y_of(q), (225, 225, 225))
        c.text(left - 40, y_of(q) - 5, f"{q * 100:.0f}%")
    for d in range(lo, hi + 1):
        c.line(x_of(10.0 ** d), top, x_of(10.0 ** d), bottom, (225, 225, 225))
        label = f"{10.0 ** d:g}"
        c.text(x_of(10.0 ** d) - 4 * len(label), bottom + 10, label)
    c.line(left, bottom, right, bottom, (0, 0, 0))
    c.line(left, top, left, bottom, (0, 0, 0))
    for n, (name, xs) in enumerate(series.items()):
        rgb = SERIES_COLORS[name]
        prev = (x_of(xs[0][0]), y_of(0))
        for v, q in xs:   # a step curve
            x, y = x_of(v), y_of(q)
            c.line(prev[0], prev[1], x, prev[1], rgb, 2)
            c.line(x, prev[1], x, y, rgb, 2)
            prev = (x, y)
        c.dot(left + 10, top + 8 + 16 * n, rgb, 10)
        c.text(left + 26, top + 9 + 16 * n, name, rgb)
    c.text(right - 30, bottom + 28, "MS")
    c.save(path)


# -- main --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="eyas bench latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=50, help="requests in the main run (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=64, help="max tokens per completion (default 64)")
    p.add_argument("--files-per-language", type=int, default=3)
    p.add_argument("--languages", default=None, help="comma-separated language ids (default: all found)")
    p.add_argument("--out", default="out/bench/latency.json", help="JSON path; the PNG goes beside it")
    p.add_argument("--warmup", type=int, default=2, help="untimed requests before the main run")
    p.add_argument("--target-requests", type=int, default=30, help="requests for the context+prompt target")
    p.add_argument("--trials", type=int, default=10, help="second-keystroke trials")
    p.add_argument("--request-timeout", type=float, default=60.0, help="server-side limit per request, s")
    p.add_argument("--load-timeout", type=float, default=900.0, help="how long the model may take to load, s")
    p.add_argument("--engine", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--draft", default=None)
    p.add_argument("--device", default=None)
    return p.parse_args(argv)


async def _bench(args) -> dict:
    rng = random.Random(args.seed)
    languages = args.languages.split(",") if args.languages else None
    files = find_files(args.files_per_language, rng, languages)
    if not files:
        raise SystemExit("no source files found")
    big = big_python_file()
    server_args = ["--max-tokens", str(args.max_tokens)]
    for flag in ("engine", "model", "draft", "device"):
        if getattr(args, flag):
            server_args += [f"--{flag}", getattr(args, flag)]

    counts = {}
    for f in files:
        counts[f.language] = counts.get(f.language, 0) + 1
    print(f"eyas bench latency: {args.requests} requests over {len(files)} files ("
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"), seed {args.seed}, "
          f"max tokens {args.max_tokens}", flush=True)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    client = BenchClient()
    t_load = time.perf_counter()
    await client.start(server_args, args.max_tokens, args.request_timeout)
    try:
        try:
            st = await client.wait_ready(args.load_timeout)
        except SystemExit:
            print("\n".join(client.stderr), file=sys.stderr)
            raise
        load_s = time.perf_counter() - t_load
        engine = {k: st.get(k) for k in ("engine", "model", "draft", "device", "trained", "note")}
        print(f"engine ready in {load_s:.1f} s: {engine['engine']}, model {engine['model']}, "
              f"draft {engine['draft'] or 'none'}, device {engine['device']}", flush=True)
        timeout = args.request_timeout + 30
        rows = await run_requests(client, files, args.requests, rng, timeout, args.warmup)
        for f in files:   # the targets run with one open document: the big file
            client.close(f.uri)
        client.set_max_tokens(min(args.max_tokens, TARGET_MAX_TOKENS))
        print(f"targets on {big.path} ({len(big.lines)} lines) ...", flush=True)
        ctx = await run_context_target(client, big, args.target_requests, rng, timeout)
        reuse = await run_reuse_target(client, big, args.trials, rng, timeout)
        client.set_max_tokens(args.max_tokens)
    finally:
        await client.stop()
    by_language = {}
    for lang in sorted(counts):
        lr = [r for r in rows if r["language"] == lang]
        by_language[lang] = {"requests": len(lr), "e2e_p50": percentile([r["e2e"] for r in lr], 50),
                             "context_prompt_p50": percentile([r["context"] + r["prompt"] for r in lr if r["served"]], 50),
                             "prefill_p50": percentile([r["prefill"] for r in lr if r["served"]], 50)}
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"machine": machine_info() | {"loadavg_1min": [load_before, load_after]},
            "engine": engine, "load_s": round(load_s, 2),
            "config": {k: v for k, v in vars(args).items()},
            "files": [{"path": str(f.path), "language": f.language, "lines": len(f.lines)} for f in files],
            "summary": summary_rows(rows), "by_language": by_language,
            "targets": {"context_prompt": ctx, "prefix_reuse": reuse},
            "not_served": sum(not r["served"] for r in rows), "requests": rows,
            "server_messages": client.messages[-20:]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(_bench(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    report["png"] = str(png)
    out.write_text(json.dumps(report, indent=2))
    write_png(png, report["requests"])

    m, e = report["machine"], report["engine"]
    print()
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs" + (f", {m['gpu']}" if m.get("gpu") else "")
          + f", {m['os']}, python {m['python']}, torch {m.get('torch', '?')}")
    print(f"model:   {e['model']} ({e['engine']}, {e['device']})" + (f" + draft {e['draft']}" if e["draft"] else "")
          + ("" if e["trained"] else "  [UNTRAINED placeholder: completions are noise]"))
    load = m["loadavg_1min"]
    print(f"requests: {len(report['requests'])} ({report['not_served']} not served); 1-min load average "
          f"{_fmt(load[0])} before, {_fmt(load[1])} after" + (f"; {m['threads_env']}" if m["threads_env"] else ""))
    if report["summary"]["tokens (count)"]["p50"] == 0:
        print("note: the model stopped at once on most requests (0 tokens): decode covers one step only")
    print()
    print(format_table(report["summary"]))
    print()
    lang_head = f"{'language':<12}{'n':>4}{'e2e p50':>10}{'ctx+prompt p50':>16}{'prefill p50':>13}"
    print(lang_head)
    for lang, s in report["by_language"].items():
        print(f"{lang:<12}{s['requests']:>4}{_fmt(s['e2e_p50']):>10}{_fmt(s['context_prompt_p50']):>16}"
              f"{_fmt(s['prefill_p50']):>13}")
    print()
    print(format_targets(report["targets"]["context_prompt"], report["targets"]["prefix_reuse"]))
    print()
    print(f"wrote {out} and {png}")
    return 0
