"""`eyas bench session`: typing sessions replayed against the real server by a typist who does not
wait for it, as an editor lives it.

A session takes a block of whole lines out of a held-out source file (`code_sources`: a hash of
each file's path keeps it out of every training run), by default 2 each of Python, JavaScript and
C, and types it back in at a seeded human rhythm: a key every 130 ms x U(0.6, 1.4), 450 ms x
U(0.6, 1.4) after a newline, and for a quarter of line ends a think pause of U(1.5, 3.0) s.

Live typist (the editor): key times follow the rhythm and never wait for the server. Each key
sends its didChange, then an inlineCompletion request; the request still in flight from the key
before gets `$/cancelRequest` first. A response is shown only if it arrives before the next key.
A shown suggestion the file really continues with (all of it, or its first line) is accepted
after a 250 ms x U(0.6, 1.4) read instead of the next key; the editor asks again at once, and the
next key comes one key interval later.

Waiting typist (reference): the same sessions, but every answer is awaited and looked at before
the next key (the rhythm's pause is what is left of it once the answer is in). Each typist has a
fresh server with its default settings.

Per column: accepted share of typed text; requests answered before the next key (for the waiting
typist: within the rhythm's pause); line-end pauses with a suggestion visible; fresh-answer
(source engine or joined) latency p50/p90 by Kaplan-Meier, a request cancelled before its answer
being a censored sample at its cancel time, and the same for observed answers only; answers by
source (the item's command arguments [uri, length, source]), cancelled requests, engine calls per
key, cache hits. Then, on the live server, open a held-out file of 1,000+ lines and type at once
in its second half: seconds from didOpen to the first suggestion shown (p50 over --first-files).
Prints both columns and one [PASS] / [FAIL] line per bar, writes JSON with every request, a CDF
PNG of the live column's observed fresh answers, and the live server's telemetry summary.

    eyas bench session [--sessions 6] [--chars 300] [--languages python,javascript,c]
                       [--first-files 5] [--seed 0] [--max-tokens 48] [--no-reference]
                       [--model NAME] [--out out/bench/session.json]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

from lsprotocol import types as t

from completion.evaluation.latency_bench import (BenchClient, SourceFile, _cdf_png, _read_source, machine_info,
                                                 percentile)
from completion.telemetry import format_summary, summarize

KEY_MS, LINE_END_MS, READ_MS = 130.0, 450.0, 250.0   # per key, after a newline, reading a suggestion
THINK_SHARE, THINK_S = 0.25, (1.5, 3.0)              # line ends that get a think pause instead
JITTER = (0.6, 1.4)
FRESH = ("engine", "joined")                         # sources that cost engine work for this request
CLOSERS = {")": "(", "]": "[", "}": "{"}
BIG_FILE_LINES = 1000                                  # the "1k-line file"
P50_BAR_MS, P90_BAR_MS, LINE_END_BAR, SHARE_BAR, FIRST_BAR_S = 200.0, 400.0, 0.70, 0.25, 1.0
_ids = itertools.count(1)


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


def spread_sessions(n: int, chars: int, rng: random.Random, languages: list[str]) -> list[dict]:
    """n sessions spread evenly over the languages, taken in turn (python, javascript, c, python...)."""
    per = math.ceil(n / len(languages))
    files = heldout_files(per, rng, languages)
    by_language = [pick_sessions([f for f in files if f.language == lang], per, chars, rng) for lang in languages]
    turns = itertools.chain.from_iterable(itertools.zip_longest(*by_language))
    return [s for s in turns if s is not None][:n]


def rhythm(text: str, rng: random.Random) -> list[tuple[str, float]]:
    """The typist's pause after each character of `text`: (kind, ms), kind "key", "line" (after a
    newline) or "think" (a line end where the typist stops to think)."""
    out = []
    for ch in text:
        if ch != "\n":
            out.append(("key", KEY_MS * rng.uniform(*JITTER)))
        elif rng.random() < THINK_SHARE:
            out.append(("think", rng.uniform(*THINK_S) * 1e3))
        else:
            out.append(("line", LINE_END_MS * rng.uniform(*JITTER)))
    return out


def km_curve(samples: list[tuple[float, bool]]) -> list[tuple[float, float]]:
    """The latency CDF where (ms, False) only says "longer than ms" (a request cancelled before its
    answer), as (ms, fraction answered by then) at each observed time. Kaplan-Meier: the survival
    P(latency > x) drops by events / at-risk at each observed time, a censored sample leaving the
    risk set after its time. Without censoring it is the ordinary empirical CDF."""
    survival, at_risk, curve = 1.0, len(samples), []
    for ms, group in itertools.groupby(sorted(samples), key=lambda s: s[0]):
        group = list(group)
        events = sum(observed for _, observed in group)
        if events:
            survival *= 1 - events / at_risk
            curve.append((ms, 1 - survival))
        at_risk -= len(group)
    return curve


def km_quantile(samples: list[tuple[float, bool]], q: float) -> float | None:
    """The q-quantile (0 < q < 1) of `km_curve`: the first observed time by which a share q is
    answered; None when the curve never gets that high."""
    return next((ms for ms, done in km_curve(samples) if done >= q - 1e-9), None)


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


def acceptable(suggestion: str, rest: str) -> str:
    """What the typist takes of a suggestion when the file continues with `rest`: all of it, its
    first line and newline, or nothing ("")."""
    first_line = suggestion.split("\n")[0]
    if suggestion and rest.startswith(suggestion):
        return suggestion
    if "\n" in suggestion and first_line.strip() and rest.startswith(first_line + "\n"):
        return first_line + "\n"
    return ""


def position_of(text: str, offset: int) -> t.Position:
    line = text.count("\n", 0, offset)
    return t.Position(line, len(text[text.rfind("\n", 0, offset) + 1:offset].encode("utf-16-le")) // 2)


def first_item(result) -> tuple[str, str]:
    """(text, source) of a response's first item; a response without items is "empty", an item
    without the server's third command argument "engine"."""
    items = result.items if isinstance(result, t.InlineCompletionList) else result or []
    if not items:
        return "", "empty"
    item = items[0]
    text = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value   # a snippet
    args = item.command.arguments if item.command and item.command.arguments else []
    return text, args[2] if len(args) > 2 else "engine"


@dataclass
class Request:
    """One inlineCompletion request; times in ms from the start of its session."""
    id: str
    sent: float
    gap: float                      # the rhythm's pause until the next key
    pause: str                      # the rhythm's kind of that pause; "accept" after an accept
    answered: float | None = None   # None: cancelled (or timed out) first
    cancelled: float | None = None
    in_time: bool = False           # answered before the next key
    shown: bool = False
    accepted: str = ""
    text: str = ""
    source: str | None = None       # cache | engine | joined | empty, once answered
    error: str | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def record(self) -> dict:
        return {f.name: round(v, 1) if isinstance(v := getattr(self, f.name), float) else v
                for f in fields(self) if f.name != "arrived"}


class Typist:
    """One session against one server. `live`: keys on the rhythm, never waiting, cancelling the
    request still in flight at each key; else each answer is awaited before the next key."""

    def __init__(self, client: BenchClient, session: dict, rng: random.Random, live: bool, timeout: float):
        self.client, self.rng, self.live, self.timeout = client, rng, live, timeout
        f = session["file"]
        self.uri = f.uri
        self.truth = session["typed"]
        self.text = f.text[:session["start"]] + f.text[session["start"] + len(self.truth):]
        self.cursor = session["start"]
        self.done = 0                            # characters of the block typed or accepted so far
        self.file = SourceFile(f.path, f.language, self.text)
        self.pauses = rhythm(self.truth, rng)   # drawn first, so both typists type a session alike
        self.requests: list[Request] = []
        self.keys = self.accepted_chars = self.accepts = self.partials = self.repeats = 0
        self.first_shown: float | None = None   # seconds from didOpen to the first suggestion shown
        self.start = time.perf_counter()        # run() sets it again, at didOpen

    def now(self) -> float:
        return (time.perf_counter() - self.start) * 1e3

    def insert(self, s: str) -> None:
        """Type or accept `s`, the block's next characters."""
        at = position_of(self.text, self.cursor)
        self.client.edit(self.uri, at, at, s)
        self.text = self.text[:self.cursor] + s + self.text[self.cursor:]
        self.cursor += len(s)
        self.done += len(s)

    def ask(self, gap: float, pause: str) -> Request:
        """Send a request without waiting; its answer is filled in as it arrives."""
        req = Request(f"bench-{next(_ids)}", self.now(), gap, pause)
        params = t.InlineCompletionParams(
            text_document=t.TextDocumentIdentifier(self.uri), position=position_of(self.text, self.cursor),
            context=t.InlineCompletionContext(trigger_kind=t.InlineCompletionTriggerKind.Automatic))

        def arrived(future) -> None:
            if req.cancelled is not None:   # too late: the typist has moved on
                return
            req.answered = self.now()
            if (exc := future.exception()) is not None:   # a failed request shows nothing
                req.text, req.source, req.error = "", "empty", f"{type(exc).__name__}: {exc}"
            else:
                req.text, req.source = first_item(future.result())
            req.arrived.set()

        # our own id: pygls's future does not send $/cancelRequest when cancelled, so we do
        self.client.lsp.protocol.send_request(t.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=req.id) \
            .add_done_callback(arrived)
        self.requests.append(req)
        return req

    def cancel(self, req: Request) -> None:
        req.cancelled = self.now()
        self.client.lsp.cancel_request(t.CancelParams(id=req.id))

    async def settle(self, req: Request) -> str:
        """Wait for the answer as this typist does (live: until the next key is due), show it, and
        accept what the file continues with, after a moment to read it. Returns what was taken."""
        limit = req.gap if self.live else self.timeout * 1e3
        try:
            await asyncio.wait_for(req.arrived.wait(), max(0.0, req.sent + limit - self.now()) / 1e3)
        except asyncio.TimeoutError:
            pass   # the answer may have come in while the wait was timing out: it was still first
        if req.answered is None:
            self.cancel(req)
            return ""
        # live, an answer is in time by construction: the wait ends at the next key
        req.in_time = self.live or req.answered <= req.sent + req.gap
        if not req.text:
            return ""
        req.shown = True
        if self.first_shown is None:
            self.first_shown = req.answered / 1e3
        self.client.lsp.protocol.notify("eyas/shown", {"uri": self.uri, "length": len(req.text)})
        self.repeats += repeats_suffix(req.text, self.text[self.cursor:])
        take = acceptable(req.text, self.truth[self.done:])
        if not take:
            return ""
        await asyncio.sleep(READ_MS / 1e3 * self.rng.uniform(*JITTER))
        self.insert(take)
        req.accepted = take
        if take == req.text:
            self.accepts += 1
            self.client.lsp.workspace_execute_command(   # as an editor does: not awaited
                t.ExecuteCommandParams(command="eyas.accepted", arguments=[self.uri, len(take)]))
        else:
            self.partials += 1
            self.client.lsp.protocol.notify("eyas/partialAccept", {"uri": self.uri, "length": len(take)})
        self.accepted_chars += len(take)
        return take

    async def key(self) -> None:
        """Type the next character, then let the answers play out until the next key is due."""
        ch, (pause, gap) = self.truth[self.done], self.pauses[self.done]
        self.insert(ch)
        self.keys += 1
        req = self.ask(gap, pause)
        while await self.settle(req):
            req = self.ask(KEY_MS * self.rng.uniform(*JITTER), "accept")   # editors ask again after an edit
        await asyncio.sleep(max(0.0, req.sent + req.gap - self.now()) / 1e3)

    async def run(self, until_shown: bool = False) -> None:
        self.start = time.perf_counter()
        self.client.open(self.file)
        try:
            while self.done < len(self.truth) and not (until_shown and self.first_shown is not None):
                await self.key()
        finally:
            self.client.close(self.uri)


async def first_suggestion(client: BenchClient, session: dict, rng: random.Random, timeout: float) -> dict:
    """Open the session's file and type its line at once, live: seconds from didOpen to the first
    suggestion shown (None if the line ends first), and the keys it took."""
    typist = Typist(client, session, rng, live=True, timeout=timeout)
    await typist.run(until_shown=True)
    seconds = None if typist.first_shown is None else round(typist.first_shown, 3)
    return {"file": str(session["file"].path), "seconds": seconds, "keys": typist.keys}


def first_p50(first: list[dict]) -> float | None:
    """p50 of the open-to-first-suggestion seconds; a file where nothing was shown counts as
    never (the p50 of the others would flatter), and a never p50 is None."""
    if not first:
        return None
    p = statistics.median(x["seconds"] if x["seconds"] is not None else float("inf") for x in first)
    return None if p == float("inf") else p


def share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def figures(typists: list[Typist], before: dict, after: dict) -> dict:
    """A column's figures from its sessions and the server's status before and after them."""
    reqs = [r for ty in typists for r in ty.requests]
    answered = [r for r in reqs if r.answered is not None]
    line_ends = [r for r in reqs if r.pause in ("line", "think")]
    # a request cancelled before any answer may have been a cache hit too; counting it as a fresh
    # answer that took at least that long is the pessimistic reading
    fresh = [(r.answered - r.sent, True) for r in answered if r.source in FRESH] \
        + [(r.cancelled - r.sent, False) for r in reqs if r.cancelled is not None]
    observed = sorted(round(ms, 1) for ms, seen in fresh if seen)
    keys, typed = sum(ty.keys for ty in typists), sum(len(ty.truth) for ty in typists)
    accepted = sum(ty.accepted_chars for ty in typists)
    calls = after["generations"] - before["generations"]   # engine runs started for requests
    return {
        "model": after["model"], "sessions": len(typists), "typed_chars": typed, "keys": keys,
        "requests": len(reqs), "answered": len(answered),
        "answered_in_time_share": share(sum(r.in_time for r in reqs), len(reqs)),
        "line_end_pauses": len(line_ends),
        "line_end_shown_share": share(sum(r.in_time and bool(r.text) for r in line_ends), len(line_ends)),
        "accepted_chars": accepted, "accepted_share": share(accepted, typed),
        "shown": sum(r.shown for r in reqs), "accepts": sum(ty.accepts for ty in typists),
        "partial_accepts": sum(ty.partials for ty in typists), "suffix_repeats": sum(ty.repeats for ty in typists),
        "fresh_p50_ms": km_quantile(fresh, 0.5), "fresh_p90_ms": km_quantile(fresh, 0.9),
        "fresh_longest_ms": max((ms for ms, _ in fresh), default=None),   # where the KM curve ends
        "fresh_observed_p50_ms": percentile(observed, 50), "fresh_observed_p90_ms": percentile(observed, 90),
        "fresh_observed_ms": observed,
        "fresh_curve": [(round(ms, 1), round(done, 4)) for ms, done in km_curve(fresh)],
        "sources": dict.fromkeys(("cache", "engine", "joined", "empty"), 0) | Counter(r.source for r in answered),
        "cancelled": sum(r.cancelled is not None for r in reqs),
        "errors": sum(r.error is not None for r in answered),   # counted as "empty" above
        "engine_calls": calls, "engine_calls_per_key": round(calls / max(1, keys), 3),
        "cache_hits": after["cache"]["hits"] - before["cache"]["hits"],
        "records": [{"session": i, **r.record()} for i, ty in enumerate(typists) for r in ty.requests]}


async def run_column(live: bool, sessions: list[dict], args, telemetry: Path, firsts: list[dict] = ()) -> dict:
    """All sessions by one typist on a fresh server with its default settings; then, on the same
    server, the files opened for the first suggestion."""
    name = "live" if live else "waiting"
    os.environ["EYAS_TELEMETRY"] = str(telemetry)   # the server process inherits it
    telemetry.unlink(missing_ok=True)
    client = BenchClient()
    extra = ["--max-tokens", str(args.max_tokens)] + (["--model", args.model] if args.model else []) \
        + (["--draft", args.draft] if args.draft else [])
    await client.start(extra, args.max_tokens, args.timeout)
    try:
        await client.wait_ready(600)
        before = await client.status()
        typists = []
        t0 = time.perf_counter()
        for i, session in enumerate(sessions):
            typist = Typist(client, session, random.Random(f"{args.seed}:{i}"), live, args.timeout)
            await typist.run()
            typists.append(typist)
            reqs = [r for ty in typists for r in ty.requests]
            print(f"  {name}: session {i + 1}/{len(sessions)} {session['file'].path.name}: {typist.keys} keys, "
                  f"{typist.accepted_chars}/{len(typist.truth)} chars accepted, answered before the next key "
                  f"{share(sum(r.in_time for r in reqs), len(reqs)):.0%} so far ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        after = await client.status()
        summary = summarize(telemetry) if telemetry.exists() else None   # the sessions' requests only
        first = []
        for i, session in enumerate(firsts):   # a new file in a running editor
            first.append(await first_suggestion(client, session, random.Random(f"{args.seed}:first:{i}"),
                                                args.timeout))
            print(f"  {name}: opened {session['file'].path.name} ({len(session['file'].lines)} lines), "
                  f"first suggestion after {first[-1]['seconds']} s, {first[-1]['keys']} keys", flush=True)
    finally:
        await client.stop()
    return figures(typists, before, after) | {"telemetry": summary, "first_suggestion": first,
                                              "first_suggestion_p50_s": first_p50(first)}


def ms_text(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def km_text(fig: dict, key: str) -> str:
    """A Kaplan-Meier quantile, or how far the curve went without reaching it."""
    if fig[key] is None and fig["fresh_longest_ms"] is not None:
        return f"> {fig['fresh_longest_ms']:.0f} ms"
    return ms_text(fig[key])


ROWS = (("accepted share of typed text", lambda f: f"{f['accepted_share']:.1%}"),
        ("answered before the next key", lambda f: f"{f['answered_in_time_share']:.1%}"),
        ("line-end pauses with a suggestion", lambda f: f"{f['line_end_shown_share']:.1%} of {f['line_end_pauses']}"),
        ("fresh answer p50 (Kaplan-Meier)", lambda f: km_text(f, "fresh_p50_ms")),
        ("fresh answer p90 (Kaplan-Meier)", lambda f: km_text(f, "fresh_p90_ms")),
        ("fresh answer p50 / p90, observed only",
         lambda f: f"{ms_text(f['fresh_observed_p50_ms'])} / {ms_text(f['fresh_observed_p90_ms'])}"),
        ("answers cache/engine/joined/empty", lambda f: "/".join(str(f["sources"][s])
                                                                for s in ("cache", "engine", "joined", "empty"))),
        ("cancelled requests", lambda f: f"{f['cancelled']} of {f['requests']}"),
        ("keys / requests", lambda f: f"{f['keys']} / {f['requests']}"),
        ("engine calls per key", lambda f: f"{f['engine_calls_per_key']:.2f}"),
        ("cache hits", lambda f: str(f["cache_hits"])),
        ("suggestions shown", lambda f: str(f["shown"])),
        ("accepted (full / first line)", lambda f: f"{f['accepts']} / {f['partial_accepts']}"),
        ("suggestions repeating the suffix", lambda f: str(f["suffix_repeats"])),
        ("open-to-first-suggestion p50", lambda f: "-" if f["first_suggestion_p50_s"] is None
         else f"{f['first_suggestion_p50_s']:.2f} s"))
COLUMNS = ("live (editor)", "waiting typist (reference)")


def format_table(live: dict, reference: dict | None) -> str:
    columns = [c for c, fig in zip(COLUMNS, (live, reference)) if fig is not None]
    lines = [f"{'':40}" + "".join(f"{c:>28}" for c in columns)]
    for label, show in ROWS:
        lines.append(f"{label:40}" + "".join(f"{show(fig):>28}" for fig in (live, reference) if fig is not None))
    return "\n".join(lines)


def bar_lines(live: dict) -> list[str]:
    """One [PASS] / [FAIL] line per bar, on the live column."""
    def line(ok: bool, text: str) -> str:
        return f"[{'PASS' if ok else 'FAIL'}] {text}"

    p50, p90, first = live["fresh_p50_ms"], live["fresh_p90_ms"], live["first_suggestion_p50_s"]
    return [
        line(p50 is not None and p50 <= P50_BAR_MS,
             f"fresh answer keystroke-to-ghost-text p50 {km_text(live, 'fresh_p50_ms')} <= {P50_BAR_MS:g} ms "
             f"(Kaplan-Meier)"),
        line(p90 is not None and p90 <= P90_BAR_MS,
             f"fresh answer p90 {km_text(live, 'fresh_p90_ms')} <= {P90_BAR_MS:g} ms (Kaplan-Meier)"),
        line(live["line_end_shown_share"] >= LINE_END_BAR,
             f"line-end pauses showing a suggestion before the next key {live['line_end_shown_share']:.1%} "
             f">= {LINE_END_BAR:.0%}"),
        line(live["accepted_share"] >= SHARE_BAR,
             f"typed characters from accepted suggestions {live['accepted_share']:.1%} >= {SHARE_BAR:.0%}"),
        line(first is not None and first <= FIRST_BAR_S,
             f"open-to-first-suggestion in a {BIG_FILE_LINES}+-line file, p50 "
             f"{'-' if first is None else f'{first:.2f}'} s <= {FIRST_BAR_S:g} s"),
    ]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="eyas bench session", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=6, help="files, one typed block each, spread over the languages")
    p.add_argument("--chars", type=int, default=300, help="characters typed per session (whole lines)")
    p.add_argument("--first-files", type=int, default=5,
                   help=f"files of {BIG_FILE_LINES}+ lines opened and typed in at once (0: skip)")
    p.add_argument("--languages", default="python,javascript,c", help="comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds the waiting typist waits for an answer")
    p.add_argument("--no-reference", action="store_true", help="skip the waiting typist's column")
    p.add_argument("--model", default=None)
    p.add_argument("--draft", default=None)
    p.add_argument("--out", type=Path, default=Path("out/bench/session.json"))
    return p.parse_args(argv)


async def _bench(args) -> dict:
    rng = random.Random(args.seed)
    languages = args.languages.split(",")
    sessions = spread_sessions(args.sessions, args.chars, rng, languages)
    big = heldout_files(args.first_files, rng, languages[:1], min_lines=BIG_FILE_LINES) if args.first_files else []
    firsts = pick_sessions(big, args.first_files, 1, rng, second_half=True)
    print(f"{len(sessions)} sessions, {sum(len(s['typed']) for s in sessions)} characters to type; "
          f"{len(firsts)} files of {BIG_FILE_LINES}+ lines to open", flush=True)
    column = lambda name: args.out.with_name(f"{args.out.stem}-{name}.sqlite")
    live = await run_column(True, sessions, args, column("live"), firsts)
    reference = None if args.no_reference else await run_column(False, sessions, args, column("waiting"))
    return {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
            "files": [str(s["file"].path) for s in sessions], "first_files": [str(s["file"].path) for s in firsts],
            "live": live, "reference": reference}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(_bench(args))
    live, reference = result["live"], result["reference"]
    result["bars"] = bar_lines(live)
    print(f"\nmodel: {live['model']}\n" + format_table(live, reference))
    print("\n".join(result["bars"]))
    for name, fig in (("live", live), ("reference", reference)):
        if fig is not None and fig["errors"]:   # a server bug, not a slow answer: say so
            first = next(r["error"] for r in fig["records"] if r["error"])
            print(f"note: {fig['errors']} {name} requests failed (counted as empty), e.g. {first}")
    print("\nlocal telemetry of the live sessions (eyas stats):")
    print(format_summary(live["telemetry"]) if live["telemetry"] else "(none)")
    args.out.write_text(json.dumps(result, indent=1))
    png = args.out.with_suffix(".png")
    curves = {name: fig["fresh_curve"] for name, fig in (("live (Kaplan-Meier)", live), ("waiting typist", reference))
              if fig is not None and fig["fresh_curve"]}
    if curves:
        _cdf_png(png, curves)
        print(f"\nwrote {args.out} and {png} (CDF of fresh answers, keystroke to ghost text)")
    else:
        print(f"\nwrote {args.out}; no fresh answer observed, so no CDF")
    return 0
