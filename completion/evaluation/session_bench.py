"""`eyas bench session`: typing sessions replayed against the real server, before/after the cache.

A session takes a block of lines out of a real source file (the standard library, plus other
languages installed here) and types it back in, one character at a time, at a human rhythm (about
130 ms a key, longer after a line end). After every keystroke the client asks for an inline
completion, as VS Code does. A suggestion the file really continues with is accepted (Tab): all of
it, or its first line; the editor then asks again at once, as after any edit. A second's worth of
typing in a real editor is therefore replayed with the same requests, edits and pauses.

Files come from the held-out side of the drafter data's split (`code_sources`: a hash of each
file's path keeps them out of every training run), a seeded sample. The same sessions run twice,
each on a fresh server: "before" with the typed-through cache and
pre-fetch off, "after" with both on. Per mode: share of the typed text that came from accepted
completions, keystroke-to-suggestion latency p50/p90 (cache hits included), engine calls per
keystroke, cache hit rate, and suggestions that repeat the text after the cursor. Then the first
request in a file: open a held-out file of 1,000+ lines and type at once, somewhere in its second
half; the time from didOpen to the first suggestion shown (p50 over --first-files files). Prints
both side by side with ratios, the issue's bars as [PASS] / [FAIL] lines, writes JSON, a latency
CDF PNG, and the server's local telemetry summary.

    eyas bench session [--sessions 4] [--chars 240] [--first-files 5] [--seed 0] [--max-tokens 48]
                       [--model NAME] [--out out/bench/session.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from pathlib import Path

from lsprotocol import types as t

from completion.evaluation.latency_bench import (BenchClient, SourceFile, _cdf_png, _read_source, machine_info,
                                                 percentile)
from completion.telemetry import format_summary, summarize

MODES = {"before": {"cache": False, "prefetch": False}, "after": {"cache": True, "prefetch": True}}
KEY_MS, LINE_END_MS, READ_MS = 130.0, 450.0, 250.0   # per key, after a newline, after an accept
CLOSERS = {")": "(", "]": "[", "}": "{"}
BIG_FILE_LINES = 1000                                  # the "1k-line file"
# issue 21's bars
SPEEDUP_BAR, P50_BAR_MS, SHARE_BAR, FIRST_BAR_S = 3.0, 150.0, 0.20, 1.5


def heldout_files(n: int, rng: random.Random, languages: list[str], min_lines: int = 0) -> list[SourceFile]:
    """Up to n readable files per language from the held-out side of the drafter data's split
    (never trained or tuned on), shuffled by `rng`; with `min_lines`, only files that long."""
    from completion.training.code_sources import language_files
    from completion.training.source_corpus import is_heldout

    out = []
    for language in languages:
        pool = [f for f in language_files(language, set()) if is_heldout(f.key)]
        rng.shuffle(pool)
        chosen = 0
        for f in pool:
            if chosen == n:
                break
            text = _read_source(f.file)
            if text is not None and text.count("\n") >= min_lines:
                out.append(SourceFile(f.file, language, text))
                chosen += 1
    return out


def pick_sessions(files: list[SourceFile], n: int, chars: int, rng: random.Random,
                  second_half: bool = False) -> list[dict]:
    """Blocks of whole, non-blank-led lines of about `chars` characters, one per file (starting in
    the file's second half with `second_half`)."""
    sessions = []
    for f in files:
        lines = f.lines
        first_line = len(lines) // 2 if second_half else 2
        starts = [i for i in range(first_line, len(lines) - 2) if lines[i].strip() and len(lines[i]) < 100]
        if not starts:
            continue
        first = rng.choice(starts)
        last, size = first, 0
        while last < len(lines) - 1 and size < chars:
            size += len(lines[last]) + 1
            last += 1
        start = sum(len(x) + 1 for x in lines[:first]) + len(lines[first]) - len(lines[first].lstrip())
        end = sum(len(x) + 1 for x in lines[:last])
        sessions.append({"file": f, "start": start, "typed": f.text[start:end]})
        if len(sessions) == n:
            break
    return sessions


def repeats_suffix(suggestion: str, after: str) -> bool:
    """Whether inserting `suggestion` would type again what already follows the cursor: the next
    line, or the rest of the cursor line (a closer it brings along without opening it)."""
    rest, _, below = after.partition("\n")
    last = next((x.strip() for x in reversed(suggestion.split("\n")) if x.strip()), "")
    following = next((x.strip() for x in below.split("\n") if x.strip()), "")
    if len(last) >= 4 and last == following:
        return True
    rest, first = rest.strip(), suggestion.split("\n")[0].rstrip()
    if not rest or not first.endswith(rest):
        return False
    if rest[-1] in CLOSERS:   # a closer is a repeat only when the suggestion did not open it
        return first.count(rest[-1]) > first.count(CLOSERS[rest[-1]])
    return len(rest) >= 2


def position_of(text: str, offset: int) -> t.Position:
    line = text.count("\n", 0, offset)
    return t.Position(line, len(text[text.rfind("\n", 0, offset) + 1:offset].encode("utf-16-le")) // 2)


class Replay:
    """One session against one server: types, asks, accepts, and keeps the figures."""

    def __init__(self, client: BenchClient, session: dict, rng: random.Random, timeout: float):
        self.client, self.rng, self.timeout = client, rng, timeout
        f = session["file"]
        self.uri = f.uri
        self.truth = session["typed"]
        self.text = f.text[:session["start"]] + f.text[session["start"] + len(self.truth):]
        self.cursor = session["start"]
        self.file = SourceFile(f.path, f.language, self.text)
        self.latencies: list[float] = []
        self.keystrokes = self.accepted_chars = self.shown = self.accepts = self.partials = self.repeats = 0

    def insert(self, s: str) -> None:
        at = position_of(self.text, self.cursor)
        self.client.edit(self.uri, at, at, s)
        self.text = self.text[:self.cursor] + s + self.text[self.cursor:]
        self.cursor += len(s)

    async def ask(self) -> str:
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.client.lsp.text_document_inline_completion_async(
                t.InlineCompletionParams(
                    text_document=t.TextDocumentIdentifier(self.uri), position=position_of(self.text, self.cursor),
                    context=t.InlineCompletionContext(trigger_kind=t.InlineCompletionTriggerKind.Automatic))),
                self.timeout)
        except Exception:   # a failed request is a data point: nothing shown
            result = None
        self.latencies.append((time.perf_counter() - t0) * 1e3)
        return result.items[0].insert_text if result is not None and result.items else ""

    async def run(self) -> None:
        self.client.open(self.file)
        done = 0
        while done < len(self.truth):
            ch = self.truth[done]
            self.insert(ch)
            done += 1
            self.keystrokes += 1
            t_key = time.perf_counter()
            suggestion = await self.ask()
            while suggestion and done < len(self.truth) and (taken := await self.consider(suggestion, self.truth[done:])):
                done += taken
                self.keystrokes += 1          # the Tab; the editor asks again after the edit
                suggestion = await self.ask()
            pause = (LINE_END_MS if ch == "\n" else KEY_MS) * self.rng.uniform(0.6, 1.4)
            await asyncio.sleep(max(0.0, pause / 1e3 - (time.perf_counter() - t_key)))
        self.client.close(self.uri)

    async def consider(self, suggestion: str, rest: str) -> int:
        """Show it; accept what the file really continues with, after a moment to read it.
        Returns the characters taken (0: typing goes on)."""
        self.shown += 1
        lsp = self.client.lsp
        lsp.protocol.notify("eyas/shown", {"uri": self.uri, "length": len(suggestion)})
        if repeats_suffix(suggestion, self.text[self.cursor:]):
            self.repeats += 1
        first_line = suggestion.split("\n")[0]
        if rest.startswith(suggestion):
            take = suggestion
        elif "\n" in suggestion and first_line.strip() and rest.startswith(first_line + "\n"):
            take = first_line + "\n"
        else:
            return 0
        await asyncio.sleep(READ_MS / 1e3 * self.rng.uniform(0.6, 1.4))
        self.insert(take)
        if take is suggestion:
            self.accepts += 1
            await lsp.workspace_execute_command_async(
                t.ExecuteCommandParams(command="eyas.accepted", arguments=[self.uri, len(take)]))
        else:
            self.partials += 1
            lsp.protocol.notify("eyas/partialAccept", {"uri": self.uri, "length": len(take)})
        self.accepted_chars += len(take)
        return len(take)


async def first_suggestion(client: BenchClient, session: dict, rng: random.Random, timeout: float) -> dict:
    """Open the session's file and type its line at once: seconds from didOpen to the first
    suggestion shown (None if the line ends first), and the keys it took."""
    replay = Replay(client, session, rng, timeout)
    t0 = time.perf_counter()
    client.open(replay.file)
    try:
        for keys, ch in enumerate(replay.truth, start=1):
            t_key = time.perf_counter()
            replay.insert(ch)
            if await replay.ask():
                return {"file": str(session["file"].path), "seconds": round(time.perf_counter() - t0, 3), "keys": keys}
            await asyncio.sleep(max(0.0, KEY_MS * rng.uniform(0.6, 1.4) / 1e3 - (time.perf_counter() - t_key)))
        return {"file": str(session["file"].path), "seconds": None, "keys": len(replay.truth)}
    finally:
        client.close(replay.uri)


async def run_mode(mode: str, sessions: list[dict], args, telemetry: Path, firsts: list[dict] = ()) -> dict:
    os.environ["EYAS_TELEMETRY"] = str(telemetry)   # the server process inherits it
    telemetry.unlink(missing_ok=True)
    client = BenchClient()
    extra = ["--max-tokens", str(args.max_tokens)] + (["--model", args.model] if args.model else []) \
        + (["--draft", args.draft] if args.draft else [])
    await client.start(extra, args.max_tokens, args.timeout)
    try:
        await client.wait_ready(600)
        client.lsp.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings={"eyas": MODES[mode]}))
        before = await client.status()
        rng, replays = random.Random(args.seed), []
        t0 = time.perf_counter()
        for i, session in enumerate(sessions):
            replay = Replay(client, session, rng, args.timeout)
            await replay.run()
            replays.append(replay)
            print(f"  {mode}: session {i + 1}/{len(sessions)} {session['file'].path.name}: "
                  f"{replay.keystrokes} keys, {replay.accepted_chars}/{len(replay.truth)} chars accepted "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        after = await client.status()
        summary = summarize(telemetry) if telemetry.exists() else None   # the replay's requests only
        first = []
        for session in firsts:      # a new file in a running editor: after the replay's figures are read
            first.append(await first_suggestion(client, session, rng, args.timeout))
            print(f"  {mode}: opened {session['file'].path.name} ({len(session['file'].lines)} lines), "
                  f"first suggestion after {first[-1]['seconds']} s, {first[-1]['keys']} keys", flush=True)
    finally:
        await client.stop()
    lat = [x for r in replays for x in r.latencies]
    keys = sum(r.keystrokes for r in replays)
    requests = len(lat)
    hits = after["cache"]["hits"] - before["cache"]["hits"]
    typed = sum(len(r.truth) for r in replays)
    return {"mode": mode, "model": after["model"], "settings": MODES[mode], "sessions": len(replays), "typed_chars": typed,
            "keystrokes": keys, "requests": requests,
            "accepted_chars": sum(r.accepted_chars for r in replays),
            "accepted_share": round(sum(r.accepted_chars for r in replays) / max(1, typed), 4),
            "shown": sum(r.shown for r in replays), "accepts": sum(r.accepts for r in replays),
            "partial_accepts": sum(r.partials for r in replays),
            "latency_p50_ms": round(percentile(lat, 50), 2), "latency_p90_ms": round(percentile(lat, 90), 2),
            "engine_calls": after["served"] - before["served"],
            "engine_calls_per_keystroke": round((after["served"] - before["served"]) / max(1, keys), 3),
            "prefetched": after["prefetched"] - before["prefetched"],
            "cache_hit_rate": round(hits / max(1, requests), 3),
            "suffix_repeats": sum(r.repeats for r in replays), "latencies_ms": [round(x, 2) for x in lat],
            "telemetry": summary,
            "first_suggestion": first,
            "first_suggestion_p50_s": first_p50(first)}


def first_p50(first: list[dict]) -> float | None:
    """p50 of the open-to-first-suggestion seconds; a file where nothing was shown counts as
    never (the p50 of the others would flatter), and a never p50 is None."""
    if not first:
        return None
    p = statistics.median(x["seconds"] if x["seconds"] is not None else float("inf") for x in first)
    return None if p == float("inf") else p


ROWS = (("accepted share of typed text", "accepted_share", "{:.1%}"),
        ("keystroke->suggestion p50 ms", "latency_p50_ms", "{:.1f}"),
        ("keystroke->suggestion p90 ms", "latency_p90_ms", "{:.1f}"),
        ("engine calls per keystroke", "engine_calls_per_keystroke", "{:.2f}"),
        ("cache hit rate", "cache_hit_rate", "{:.1%}"),
        ("pre-fetches", "prefetched", "{}"),
        ("suggestions shown", "shown", "{}"),
        ("accepted (full / first line)", None, None),
        ("suggestions repeating the suffix", "suffix_repeats", "{}"))


def format_table(before: dict, after: dict) -> str:
    lines = [f"{'':34}{'before':>12}{'after':>12}{'before/after':>14}"]
    for label, key, fmt in ROWS:
        if key is None:
            b, a = (f"{r['accepts']}/{r['partial_accepts']}" for r in (before, after))
            lines.append(f"{label:34}{b:>12}{a:>12}")
            continue
        ratio = f"{before[key] / after[key]:.2f}x" if key.startswith("latency") and after[key] else ""
        lines.append(f"{label:34}{fmt.format(before[key]):>12}{fmt.format(after[key]):>12}{ratio:>14}")
    return "\n".join(lines)


def bar_lines(before: dict, after: dict) -> list[str]:
    """One [PASS] / [FAIL] line per bar of issue 21."""
    def line(ok: bool, text: str) -> str:
        return f"[{'PASS' if ok else 'FAIL'}] {text}"

    b, a = before["latency_p50_ms"], after["latency_p50_ms"]
    first = after["first_suggestion_p50_s"]
    return [
        line(a * SPEEDUP_BAR <= b, f"p50 keystroke->suggestion with cache + pre-fetch {a:.1f} ms <= 1/{SPEEDUP_BAR:g} "
                                   f"of without ({b:.1f} ms: {b / max(a, 1e-9):.2f}x)"),
        line(a <= P50_BAR_MS, f"p50 keystroke->suggestion with cache + pre-fetch {a:.1f} ms <= {P50_BAR_MS:g} ms"),
        line(after["accepted_share"] >= SHARE_BAR, f"typed characters from accepted suggestions "
                                                   f"{after['accepted_share']:.1%} >= {SHARE_BAR:.0%}"),
        line(first is not None and first <= FIRST_BAR_S,
             f"open-to-first-suggestion in a {BIG_FILE_LINES}+-line file, p50 "
             f"{'-' if first is None else f'{first:.2f}'} s <= {FIRST_BAR_S:g} s"),
    ]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="eyas bench session", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=4, help="files, one typed block each")
    p.add_argument("--chars", type=int, default=240, help="characters typed per session (whole lines)")
    p.add_argument("--first-files", type=int, default=5,
                   help=f"files of {BIG_FILE_LINES}+ lines opened and typed in at once (0: skip)")
    p.add_argument("--languages", default="python", help="comma-separated, e.g. python,c,javascript")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--model", default=None)
    p.add_argument("--draft", default=None)
    p.add_argument("--out", type=Path, default=Path("out/bench/session.json"))
    return p.parse_args(argv)


async def _bench(args) -> dict:
    rng = random.Random(args.seed)
    languages = args.languages.split(",")
    files = heldout_files(max(1, args.sessions), rng, languages)
    sessions = pick_sessions(files, args.sessions, args.chars, rng)
    big = heldout_files(args.first_files, rng, languages[:1], min_lines=BIG_FILE_LINES) if args.first_files else []
    firsts = pick_sessions(big, args.first_files, 1, rng, second_half=True)
    print(f"{len(sessions)} sessions, {sum(len(s['typed']) for s in sessions)} characters to type; "
          f"{len(firsts)} files of {BIG_FILE_LINES}+ lines to open", flush=True)
    results = {}
    for mode in MODES:
        results[mode] = await run_mode(mode, sessions, args, args.out.with_name(f"{args.out.stem}-{mode}.sqlite"),
                                       firsts if mode == "after" else ())
    return {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
            "files": [str(s["file"].path) for s in sessions], "first_files": [str(s["file"].path) for s in firsts],
            **results}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(_bench(args))
    before, after = result["before"], result["after"]
    print(f"\nmodel: {after['model']}\n" + format_table(before, after))
    print("\n".join(bar_lines(before, after)))
    print("\nlocal telemetry of the 'after' replay (eyas stats):")
    print(format_summary(after["telemetry"]) if after["telemetry"] else "(none)")
    args.out.write_text(json.dumps(result, indent=1))
    png = args.out.with_suffix(".png")
    _cdf_png(png, {"before": sorted(max(x, 1e-3) for x in before["latencies_ms"]),
                   "after": sorted(max(x, 1e-3) for x in after["latencies_ms"])})
    print(f"\nwrote {args.out} and {png}")
    return 0
