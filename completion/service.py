"""One completion, start to end (DESIGN §3): context → prompt → engine stream → post-processing.

Shared by the LSP server and `eyas complete`, so both surfaces give the same answer.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import aclosing
from dataclasses import dataclass, field

from completion.context import ContextBudget, DocumentTrees, build_context
from completion.engine import Engine, GenerationParams, Stats
from completion.postprocess import CompletionSite, is_multiline, postprocess, should_stop
from completion.postprocess.rules.drop_retyped_indent import drop_retyped_indent
from completion.prompt import FileSnippet, PromptBuilder


@dataclass
class CompletionSettings:
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    # In PSM order every keystroke recomputes the suffix, so it is short: on held-out lines 32
    # suffix tokens completed as well as 128 (docs/qwen2.5-coder-0.5b.md, suffix budget)
    # for a quarter of a key's prefill.
    budget: ContextBudget = field(default_factory=lambda: ContextBudget(prefix_tokens=1024, suffix_tokens=32,
                                                                       snippet_tokens=512))


@dataclass
class Completion:
    text: str                 # what to insert at the cursor; "" means nothing worth showing
    raw_text: str             # what the model produced before post-processing
    multiline: bool
    timings_ms: dict[str, float]
    stats: Stats


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)


@dataclass
class Request:
    """A completion request ready for the engine: built synchronously from one document snapshot."""
    site: CompletionSite
    prompt_ids: list[int]
    stop_ids: tuple[int, ...]
    multiline: bool
    crlf: bool
    timings_ms: dict[str, float]
    uri: str
    t_start: float
    cache_key: str            # the engine's KV cache to reuse (GenerationParams.cache_key)
    stable_tokens: int        # prompt ids before the cursor line's (GenerationParams.keep_prefill)


class Completer:
    def __init__(self, engine: Engine, trees: DocumentTrees, settings: CompletionSettings | None = None):
        self.engine, self.trees = engine, trees
        self.settings = settings or CompletionSettings()
        self.prompts = PromptBuilder(engine.tokenizer())

    async def complete(self, uri: str, cursor: int, *, repo: str = "workspace", multiline_mode: str = "auto",
                       **overrides) -> Completion:
        """`cursor` is a character offset into the document. `multiline_mode`: "auto" decides from the
        syntax at the cursor, "always" / "never" force it. `overrides` replace GenerationParams
        fields (mode, seed, num_speculative_tokens, ...) for this request."""
        return await self.run(self.prepare(uri, cursor, repo=repo, multiline_mode=multiline_mode), **overrides)

    def prepare(self, uri: str, cursor: int, *, repo: str = "workspace", multiline_mode: str = "auto",
                budget: ContextBudget | None = None, replan: bool = False, cache_key: str | None = None) -> Request:
        """Context, single/multi-line decision and prompt. Synchronous, so a caller may build it
        from a hypothetical document (`DocumentTrees.as_if`) that no other handler ever sees.
        `budget` replaces the settings' context budget for this request; `replan` chooses the
        snippets afresh (a pause: build_context keeps them while the user types nearby);
        `cache_key` names the engine's KV cache to reuse (default: the document's)."""
        t_start = t0 = time.perf_counter()
        doc = self.trees.get(uri)
        if doc is None:
            raise KeyError(f"unknown document {uri}")
        first_eol = doc.text.find("\n")
        crlf = first_eol > 0 and doc.text[first_eol - 1] == "\r"   # the document's line ending
        ctx = build_context(self.trees, uri, cursor, self.prompts.count_tokens, budget or self.settings.budget,
                            replan=replan)
        # The model and the rules see "\n" line ends; the insert text gets the document's own.
        lf = (lambda x: x.replace("\r\n", "\n")) if crlf else (lambda x: x)
        site = CompletionSite(language=ctx.language, prefix=lf(ctx.prefix), suffix=lf(ctx.suffix),
                              line_prefix=ctx.line_prefix, line_suffix=ctx.line_suffix,
                              cursor_node=ctx.cursor_node)
        timings = {"context": _ms_since(t0)}
        t0 = time.perf_counter()
        multiline = is_multiline(site) if multiline_mode == "auto" else multiline_mode == "always"
        timings["decide"] = _ms_since(t0)
        t0 = time.perf_counter()
        prompt = self.prompts.build(repo=repo, path=ctx.path, prefix=site.prefix, suffix=site.suffix,
                                    snippets=[FileSnippet(sn.path, lf(sn.text)) for sn in ctx.snippets])
        timings["prompt"] = _ms_since(t0)
        return Request(site, prompt.ids, tuple(prompt.stop_ids), multiline, crlf, timings, uri, t_start,
                       cache_key or uri, prompt.num_stable_tokens)

    def start(self, request: Request, **overrides) -> "Generation":
        """Run `request` on a task of its own, readable while it streams (see Generation)."""
        return Generation(self, request, overrides)

    async def run(self, request: Request, on_chunk=None, **overrides) -> Completion:
        """The whole completion. `on_chunk(raw, stats)`, if given, sees the model's text and the
        engine's running figures after every chunk."""
        s, site, multiline = self.settings, request.site, request.multiline
        timings = dict(request.timings_ms)
        params = dict(max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                      stop_ids=request.stop_ids, cache_key=request.cache_key)
        params.update(overrides)
        raw, stats, ended_block = "", Stats(prompt_tokens=len(request.prompt_ids)), False
        async with aclosing(self.engine.generate(request.prompt_ids, GenerationParams(**params))) as stream:
            async for chunk in stream:
                raw, stats = raw + chunk.text, chunk.stats
                if on_chunk is not None:
                    on_chunk(raw, stats)
                if should_stop(raw, site, multiline):
                    ended_block = True
                    break
        if ended_block:   # set after the stream closed, which marks it "cancelled"
            stats.finish_reason = "stop"
        timings["prefill"] = round(stats.prefill_ms, 3)
        timings["decode"] = round(stats.decode_ms, 3)

        t0 = time.perf_counter()
        text = postprocess(raw, site, multiline)
        if request.crlf:
            text = text.replace("\n", "\r\n")
        timings["postprocess"] = round(_ms_since(t0) + timings.pop("decide"), 3)
        timings["total"] = _ms_since(request.t_start)
        return Completion(text, raw, multiline, timings, stats)


class Generation:
    """A request's engine stream on a task of its own, so answers can be read from it while it runs
    and after the request that started it was cancelled (DESIGN §3: no work thrown away).

    `suggestion(typed)` answers a request at the generation's cursor plus `typed` (what the user
    has typed since): the rest of the next line of the model's text as soon as that line is
    complete (first line first: a multi-line block keeps decoding behind it), the rest of the
    whole completion once it has ended, or None when the model's text has left what was typed.
    """

    def __init__(self, completer: Completer, request: Request, overrides: dict):
        self.request = request
        self.raw = ""                          # the model's text so far, "\n" line ends
        self.stats = Stats(prompt_tokens=len(request.prompt_ids))   # the engine's, as they stream
        self.first_text_at: float | None = None   # time.monotonic() when the model's text began
        self._changed = asyncio.Event()
        self.task = asyncio.ensure_future(completer.run(request, on_chunk=self._grow, **overrides))
        self.task.add_done_callback(lambda _: self._changed.set())

    def _grow(self, raw: str, stats: Stats) -> None:
        if self.first_text_at is None and raw.strip():
            self.first_text_at = time.monotonic()
        self.raw, self.stats = raw, stats
        self._changed.set()

    @property
    def done(self) -> bool:
        return self.task.done()

    @property
    def result(self) -> Completion | None:
        """The whole completion, once the generation has ended well."""
        task = self.task
        return task.result() if task.done() and not task.cancelled() and task.exception() is None else None

    def cancel(self) -> None:
        self.task.cancel()

    async def suggestion(self, typed: str, budget_s: float | None = None) -> str | None:
        """The text to show after `typed` (document text, its own line ends), "" for nothing. With
        `budget_s`, a line that has not ended that long after both the ask and the model's first
        text is shown as far as it goes, in whole words (a first answer's time budget, as
        llama.vim's; a slow prefill does not spend it): the generation goes on, and typing or
        accepting the part shown joins it or meets it in the cache."""
        crlf, site = self.request.crlf, self.request.site
        lf_typed = typed.replace("\r\n", "\n") if crlf else typed
        asked = time.monotonic()
        while True:
            self._changed.clear()
            if self.task.done():   # the engine's error or cancellation surfaces here
                text = self.task.result().text
                if not typed:
                    return text
                rest = text[len(typed):]
                return rest if text.startswith(typed) and rest.strip() else None
            due = None if budget_s is None or self.first_text_at is None else \
                max(asked, self.first_text_at) + budget_s
            late = due is not None and time.monotonic() >= due
            line = next_line(self.raw, lf_typed, site, self.request.multiline, partial=late)
            if line is None:
                return None
            if line:
                return line.replace("\n", "\r\n") if crlf else line
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), None if due is None or late else due - time.monotonic())


def next_line(raw: str, typed: str, site: CompletionSite, multiline: bool, partial: bool = False) -> str | None:
    """From the model's unfinished text: the rest of the next complete line after `typed` ("\n"
    line ends), "" while that line is still being written, None once the text has left `typed`.
    Only a multi-line request shows a line before the end (a single-line one ends at its newline),
    unless `partial`: then the line so far, up to its last whole word."""
    visible = drop_retyped_indent(raw, site, multiline)   # the one rule that changes how text begins
    if not visible.startswith(typed):
        return "" if typed.startswith(visible) else None
    rest = visible[len(typed):]
    start = len(rest) - len(rest.lstrip())
    end = rest.find("\n", start)
    if partial and start < len(rest) and (end < 0 or not multiline):
        end = _last_word_end(rest, start, len(rest) if end < 0 else end)
    if (not multiline and not partial) or start == len(rest) or end <= start:
        return ""
    shown = postprocess(raw[:len(raw) - len(rest) + end], site, multiline)
    return shown[len(typed):] if shown.startswith(typed) and shown[len(typed):].strip() else ""


def _last_word_end(text: str, start: int, end: int) -> int:
    """Where the last whole word of text[start:end] ends (a word still being written is left
    out: the model may not have finished it), or `start` when there is none."""
    cut = end
    while cut > start and (text[cut - 1].isalnum() or text[cut - 1] == "_"):
        cut -= 1
    return cut
