"""What a completion request answers: the typed-through cache first, then the document's running
generation, then a new one; candidates when the user asked explicitly; a pre-fetch of the next
completion after each generation.

An editor sends a request on every key and cancels it on the next, so a generation does not belong
to the request that started it (completion.service.Generation): a cancelled request leaves it
running, and the next key's request joins it when the user typed what it is producing (else it is
cancelled and a new one starts). A multi-line completion answers with its first line as soon as
that line is complete and keeps decoding into the typed-through cache, so accepting (or typing) the
line brings the next at once. Every item says where it came from ("cache", "engine", "joined").

Pre-fetch: once a generation ends, the most likely next request is the one right after the user
accepts its completion, so that is computed in the background on the document as it would then
be, and stored in the cache. It runs only while nothing else does: every real request cancels it first (the engine
stops between decode steps). Accepting just the first line needs no pre-fetch: the cache already
answers with the rest of the shown completion there.

KV warm-up: after a document is opened, saved or edited, or a generation ends, and the server has
been idle for a moment, the prompt at the document's caret (after its last edit, else its last
completion) is prefilled (no tokens generated), so the engine's prefix cache holds the stable part
of the next prompt (repo snippets, file header, the text above the cursor) before the user asks. A
pause is also where the prompt's snippets are chosen again (`replan`); while the user types they
stay put, so a key recomputes only the cursor line and the suffix.

A document builds small prompts (QUICK_BUDGET) until its full prompt is in the engine's cache (a
warm-up or a full generation ended): a cold 1k-token prefill costs ~1.1-2.5 s on 2 cores, longer
than a typist's pause, a 300-token one ~0.3-0.6 s, so typing at once in a file just opened shows
suggestions. The small prompts keep their KV apart from the full one's, which the warm-up builds
in pauses, chunk by chunk across them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcServerNotInitialized

from completion.cache import AFTER_CHARS, BEFORE_CHARS, MAX_TEXT_CHARS
from completion.context import ContextBudget
from completion.service import Generation

from .positions import PositionError

log = logging.getLogger("eyas")
CANDIDATES = 3               # on an explicit request (triggerKind Invoked)
CANDIDATE_TEMPERATURE = 0.8  # the extra candidates are sampled: greedy would repeat the first
# a first answer's time budget, as llama.vim's: a line not ended this long after both the key and
# the model's first text shows its whole words so far, and the generation goes on behind it
# (docs/bench-session.md)
FIRST_ANSWER_S = 0.25
WARM_AFTER_S = 0.5           # idle time before a KV warm-up starts (typing keeps cancelling it)
# a cold document's prompt: 256 prefix tokens kept 18.3% exact match against 21.7% at 1,024
# (docs/qwen2.5-coder-0.5b.md, context budget) for about a third of the prefill
QUICK_BUDGET = ContextBudget(prefix_tokens=256, suffix_tokens=32, snippet_tokens=0)


@dataclass
class Answer:
    texts: list[str]
    position: types.Position
    source: str                 # "cache", "engine" (a generation of its own) or "joined" (an earlier key's)


@dataclass
class Running:
    """A document's generation and the place it was asked for."""
    generation: Generation
    text: str                   # the document then
    cursor: int

    def typed(self, text: str, cursor: int) -> str | None:
        """What the user has typed at the generation's cursor since, when nothing else changed
        around it (the text before it, and after the new cursor); else None."""
        at, old = self.cursor, self.text
        if not at <= cursor <= at + MAX_TEXT_CHARS:
            return None
        if (text[max(0, at - BEFORE_CHARS):at] != old[max(0, at - BEFORE_CHARS):at]
                or text[cursor:cursor + AFTER_CHARS] != old[at:at + AFTER_CHARS]):
            return None
        return text[at:cursor]


async def complete_at(ls, uri: str, position: types.Position, *, candidates: int = 1) -> Answer | None:
    """Completions for a position (at most `candidates`, distinct), or None. The newest request per
    document wins: an older request still waiting is cancelled (its generation is not)."""
    if not ls.initialized:
        raise JsonRpcServerNotInitialized("the server has not been initialized: send initialize first")
    ls.engine_wanted()
    if ls.trees.get(uri) is None:
        log.info("completion for a document that is not open: %s", uri)
        return None
    document = ls.workspace.get_text_document(uri)
    if not ls.config.enabled_for(document.language_id):
        return None
    try:
        cursor = ls.line_index(uri).offset(position, ls.workspace.position_encoding)
    except PositionError as exc:
        raise JsonRpcInvalidParams(f"bad position for {uri}: {exc}") from None
    ls.cancel_background()
    ls.last_cursor[uri] = cursor
    text, t0 = document.source, time.perf_counter()
    if ls.config.cache and candidates == 1 and (rest := ls.cache.get(uri, text, cursor)) is not None:
        ls.record_latency({"total": _ms_since(t0), "cached": True, "source": "cache", "tokens": 0,
                           "acceptance_length": 0.0}, document.language_id)
        if not rest:   # a place known to have nothing to show
            return None
        prefetch(ls, uri, text, cursor, rest, document.language_id)
        return Answer([rest], position, "cache")

    me = asyncio.current_task()
    if (older := ls.inflight.get(uri)) is not None and older is not me:
        older.cancel()
    ls.inflight[uri] = me
    try:
        if candidates > 1:
            ls.stop_generation(uri)
            texts, source = await _candidates(ls, uri, cursor, document.language_id, candidates), "engine"
        else:
            rest, source, running = await asyncio.wait_for(
                _from_generation(ls, uri, text, cursor, document.language_id), timeout=ls.config.request_timeout_s)
            texts = [rest] if rest else []
            generation = running.generation
            ls.record_latency({**_figures(generation.request, generation.stats, generation.result),
                               "total": _ms_since(t0),
                               "cached": False, "source": source}, document.language_id)
    except asyncio.TimeoutError:
        log.warning("completion timed out after %.1f s", ls.config.request_timeout_s)
        ls.stop_generation(uri)
        return None
    except ConnectionError as exc:   # a daemon or remote server went away: nothing to show, retried next time
        log.warning("completion engine unavailable: %s", exc)
        return None
    finally:
        if ls.inflight.get(uri) is me:
            del ls.inflight[uri]
    return Answer(texts, position, source) if texts else None


async def _from_generation(ls, uri: str, text: str, cursor: int, language_id: str) -> tuple[str, str, Running]:
    """The suggestion at `cursor` from the document's running generation when the user is typing
    what it produces ("joined"), else from a new one ("engine")."""
    running = ls.running.get(uri)
    if running is not None and (ls.config.cache or not running.generation.done):
        typed = running.typed(text, cursor)
        if typed is not None:
            rest = await running.generation.suggestion(typed, FIRST_ANSWER_S)
            if rest is not None:
                return rest, "joined", running
    completer = await ls.ready_completer()
    for other in list(ls.running):   # one typist: what runs for any document is superseded
        ls.stop_generation(other)
    request = _prepare(ls, completer, uri, cursor, language_id, quick=uri not in ls.warm_documents)
    generation = completer.start(request, keep_prefill=request.stable_tokens, **_speculation(ls.config))
    running = ls.running[uri] = Running(generation, text, cursor)
    generation.task.add_done_callback(lambda task: _finished(ls, uri, running, language_id))
    ls.generations += 1
    return await generation.suggestion("", FIRST_ANSWER_S), "engine", running


def _finished(ls, uri: str, running: Running, language_id: str) -> None:
    """A generation ended: its completion goes to the typed-through cache, then the pre-fetch."""
    task = running.generation.task
    if task.cancelled() or task.exception() is not None:   # an error reaches the request that waits
        return
    done = task.result()
    ls.served += 1
    if running.generation.request.cache_key == uri:   # a full prompt is in the engine's cache now
        ls.warm_documents.add(uri)
    ls.cache.put(uri, running.text, running.cursor, done.text)
    if ls.running.get(uri) is running:   # the latest: nothing newer has been asked here
        prefetch(ls, uri, running.text, running.cursor, done.text, language_id)
        warm(ls, uri)


async def _candidates(ls, uri: str, cursor: int, language_id: str, candidates: int) -> list[str]:
    """An explicit request: the greedy completion and sampled others, distinct."""
    completer = await ls.ready_completer()
    cfg = ls.config
    extra = _speculation(cfg)
    request = _prepare(ls, completer, uri, cursor, language_id, quick=uri not in ls.warm_documents)
    texts: list[str] = []
    for i in range(candidates):
        if i:   # the first is the usual (greedy) answer; the others are seeded samples
            extra = {**extra, "temperature": max(cfg.temperature, CANDIDATE_TEMPERATURE), "seed": i}
        done = await asyncio.wait_for(completer.run(request, **extra), timeout=cfg.request_timeout_s)
        ls.generations += 1
        ls.served += 1
        ls.record_latency({**_figures(request, done.stats, done), "total": done.timings_ms["total"], "cached": False,
                           "source": "engine"}, language_id)
        if done.text and done.text not in texts:
            texts.append(done.text)
    return texts


def _figures(request, stats, done=None) -> dict:
    """A request's stage timings and engine figures so far, for eyas/status and telemetry."""
    return {"context": request.timings_ms["context"], "prompt": request.timings_ms["prompt"],
            "postprocess": done.timings_ms["postprocess"] if done is not None else None,
            "prefill": round(stats.prefill_ms, 3), "decode": round(stats.decode_ms, 3),
            "tokens": stats.generated_tokens, "prompt_tokens": stats.prompt_tokens,
            "reused_tokens": stats.reused_tokens, "acceptance_length": round(stats.acceptance_length, 3)}


def prefetch(ls, uri: str, text: str, cursor: int, completion: str, language_id: str) -> None:
    """Compute, in the background, the completion that follows `completion` once accepted."""
    if not ls.config.prefetch or ls.completer is None:
        return
    future_text = text[:cursor] + completion + text[cursor:]
    future_cursor = cursor + len(completion)
    if ls.cache.has(uri, future_text, future_cursor):
        return
    ls.prefetching = asyncio.ensure_future(_prefetch(ls, uri, future_text, future_cursor, language_id))


async def _prefetch(ls, uri: str, text: str, cursor: int, language_id: str) -> None:
    await asyncio.sleep(0)   # the answer that triggered it goes out first
    completer, cfg = ls.completer, ls.config
    if completer is None or ls.trees.get(uri) is None:
        return
    try:
        with ls.trees.as_if(uri, text):
            request = _prepare(ls, completer, uri, cursor, language_id)
        done = await asyncio.wait_for(completer.run(request, **_speculation(cfg)), timeout=cfg.request_timeout_s)
    except Exception as exc:   # best effort: a failure here must not surface anywhere
        log.info("pre-fetch dropped: %s", exc)
        return
    ls.prefetched += 1
    ls.cache.put(uri, text, cursor, done.text)


def warm(ls, uri: str) -> None:
    """Prefill the document's next prompt in idle time: after any pre-fetch under way, and only
    for the latest edit (a newer one restarts the wait)."""
    ls.engine_wanted()
    if ls.config.prefetch and ls.completer is not None:
        if ls.warming is not None:
            ls.warming.cancel()
        ls.warming = asyncio.ensure_future(_warm(ls, uri))


async def _warm(ls, uri: str) -> None:
    await asyncio.sleep(WARM_AFTER_S)
    while busy := [t for t in (ls.prefetching, *(r.generation.task for r in ls.running.values()))
                   if t is not None and not t.done()]:
        await asyncio.wait(busy)   # a real request cancels the pre-fetch and this warm-up alike
    completer, document = ls.completer, ls.workspace.text_documents.get(uri)
    if completer is None or document is None or ls.trees.get(uri) is None:
        return
    cursor = min(ls.last_cursor.get(uri, 0), len(document.source))
    request = _prepare(ls, completer, uri, cursor, document.language_id, replan=True)
    try:
        await asyncio.wait_for(completer.run(request, max_tokens=0), timeout=ls.config.request_timeout_s)
    except Exception as exc:   # best effort, like the pre-fetch
        log.info("warm-up dropped: %s", exc)
        return
    ls.warmed += 1
    ls.warm_documents.add(uri)


def _prepare(ls, completer, uri: str, cursor: int, language_id: str, quick: bool = False, replan: bool = False):
    """The request at `cursor`; a quick one (small prompt) keeps its KV apart from the document's
    full prompts, so the two do not crop each other's cache while the warm-up catches up."""
    return completer.prepare(uri, cursor, repo=ls.repo, multiline_mode=ls.config.multiline_for(language_id),
                             budget=QUICK_BUDGET if quick else None, replan=replan,
                             cache_key=f"{uri}#quick" if quick else None)


def _speculation(cfg) -> dict:
    """The generation overrides the speculativeK setting asks for (none: the drafter's default)."""
    return {"num_speculative_tokens": cfg.speculative_k} if cfg.speculative_k else {}


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)
