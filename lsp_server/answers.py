"""What a completion request answers: the typed-through cache first, then the engine; candidates
when the user asked explicitly; a pre-fetch of the next completion after each answer.

Pre-fetch: once a completion is shown, the most likely next request is the one right after the user
accepts it, so it is computed in the background on the document as it would then be, and stored in
the cache. It runs only while nothing else does: every real request cancels it first (the engine
stops between decode steps). Accepting just the first line needs no pre-fetch: the cache already
answers with the rest of the shown completion there.

KV warm-up: after a document is opened, saved or edited and the server has been idle for a moment,
the prompt at the document's caret (after its last edit, else its last completion) is prefilled (no tokens generated), so the
engine's prefix cache holds the stable part of the next prompt (repo snippets, file header, the
text above the cursor) before the user asks.

The first request in a document builds a small prompt (QUICK_BUDGET): a cold 1k-token prefill
costs ~1.1-1.5 s on 2 cores, a 256-token one ~0.3 s, so typing at once in a file just opened
shows a suggestion in about a second. Later requests build the full prompt. (Small prompts until a
full one had been prefilled in the background cut the accepted share of typed text from 47% to
34% in `eyas bench session`: while typing, pre-fetches rarely finish.)
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcServerNotInitialized

from completion.context import ContextBudget

from .positions import PositionError

log = logging.getLogger("eyas")
CANDIDATES = 3               # on an explicit request (triggerKind Invoked)
CANDIDATE_TEMPERATURE = 0.8  # the extra candidates are sampled: greedy would repeat the first
WARM_AFTER_S = 0.5           # idle time before a KV warm-up starts (typing keeps cancelling it)
# a cold document's prompt: 256 prefix tokens kept 18.3% exact match against 21.7% at 1,024
# (docs/qwen2.5-coder-0.5b.md, context budget) for about a third of the prefill
QUICK_BUDGET = ContextBudget(prefix_tokens=256, suffix_tokens=64, snippet_tokens=0)


@dataclass
class Answer:
    texts: list[str]
    position: types.Position


async def complete_at(ls, uri: str, position: types.Position, *, candidates: int = 1) -> Answer | None:
    """Completions for a position (at most `candidates`, distinct), or None. The newest request per
    document wins."""
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
        ls.record_latency({"total": _ms_since(t0), "cached": True, "tokens": 0, "acceptance_length": 0.0},
                          document.language_id)
        if not rest:   # a place known to have nothing to show
            return None
        prefetch(ls, uri, text, cursor, rest, document.language_id)
        return Answer([rest], position)

    me = asyncio.current_task()
    if (older := ls.inflight.get(uri)) is not None and older is not me:
        older.cancel()
    ls.inflight[uri] = me
    try:
        texts = await _from_engine(ls, uri, cursor, document.language_id, candidates)
    except asyncio.TimeoutError:
        log.warning("completion timed out after %.1f s", ls.config.request_timeout_s)
        return None
    except ConnectionError as exc:   # a daemon or remote server went away: nothing to show, retried next time
        log.warning("completion engine unavailable: %s", exc)
        return None
    finally:
        if ls.inflight.get(uri) is me:
            del ls.inflight[uri]
    if candidates == 1:
        ls.cache.put(uri, text, cursor, texts[0] if texts else "")
    if not texts:
        return None
    prefetch(ls, uri, text, cursor, texts[0], document.language_id)
    return Answer(texts, position)


async def _from_engine(ls, uri: str, cursor: int, language_id: str, candidates: int) -> list[str]:
    completer = await ls.ready_completer()
    cfg = ls.config
    extra = _speculation(cfg)
    quick = uri not in ls.answered
    request = _prepare(ls, completer, uri, cursor, language_id, quick=quick)
    texts: list[str] = []
    for i in range(candidates):
        if i:   # the first is the usual (greedy) answer; the others are seeded samples
            extra = {**extra, "temperature": max(cfg.temperature, CANDIDATE_TEMPERATURE), "seed": i}
        t0 = time.perf_counter()
        done = await asyncio.wait_for(completer.run(request, **extra), timeout=cfg.request_timeout_s)
        ls.served += 1
        ls.answered.add(uri)
        ls.record_latency({**done.timings_ms, "handler": _ms_since(t0), "cached": False,
                           "tokens": done.stats.generated_tokens, "prompt_tokens": done.stats.prompt_tokens,
                           "reused_tokens": done.stats.reused_tokens,
                           "acceptance_length": round(done.stats.acceptance_length, 3)}, language_id)
        if done.text and done.text not in texts:
            texts.append(done.text)
    return texts


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
    if ls.config.prefetch and ls.completer is not None and not ls.inflight:
        if ls.warming is not None:
            ls.warming.cancel()
        running = ls.prefetching if ls.prefetching is not None and not ls.prefetching.done() else None
        ls.warming = asyncio.ensure_future(_warm(ls, uri, running))


async def _warm(ls, uri: str, after: asyncio.Task | None) -> None:
    if after is not None:
        await asyncio.wait([after])   # a real request cancels the pre-fetch and this warm-up alike
    await asyncio.sleep(WARM_AFTER_S)
    completer, document = ls.completer, ls.workspace.text_documents.get(uri)
    if completer is None or document is None or ls.trees.get(uri) is None:
        return
    cursor = min(ls.last_cursor.get(uri, 0), len(document.source))
    request = _prepare(ls, completer, uri, cursor, document.language_id)
    try:
        await asyncio.wait_for(completer.run(request, max_tokens=0), timeout=ls.config.request_timeout_s)
    except Exception as exc:   # best effort, like the pre-fetch
        log.info("warm-up dropped: %s", exc)
        return
    ls.warmed += 1


def _prepare(ls, completer, uri: str, cursor: int, language_id: str, quick: bool = False):
    return completer.prepare(uri, cursor, repo=ls.repo, multiline_mode=ls.config.multiline_for(language_id),
                             budget=QUICK_BUDGET if quick else None)


def _speculation(cfg) -> dict:
    """The generation overrides the speculativeK setting asks for (none: the drafter's default)."""
    return {"num_speculative_tokens": cfg.speculative_k} if cfg.speculative_k else {}


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)
