"""One completion, start to end (DESIGN §3): context → prompt → engine stream → post-processing.

Shared by the LSP server and `eyas complete`, so both surfaces give the same answer.
"""
from __future__ import annotations

import time
from contextlib import aclosing
from dataclasses import dataclass, field

from completion.context import ContextBudget, DocumentTrees, build_context
from completion.engine import Engine, GenerationParams, Stats
from completion.postprocess import CompletionSite, is_multiline, postprocess, should_stop
from completion.prompt import FileSnippet, PromptBuilder


@dataclass
class CompletionSettings:
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    # A short suffix keeps prefix reuse effective: in PSM order every keystroke recomputes it.
    budget: ContextBudget = field(default_factory=lambda: ContextBudget(prefix_tokens=1024, suffix_tokens=128,
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
                budget: ContextBudget | None = None) -> Request:
        """Context, single/multi-line decision and prompt. Synchronous, so a caller may build it
        from a hypothetical document (`DocumentTrees.as_if`) that no other handler ever sees.
        `budget` replaces the settings' context budget for this request."""
        t_start = t0 = time.perf_counter()
        doc = self.trees.get(uri)
        if doc is None:
            raise KeyError(f"unknown document {uri}")
        first_eol = doc.text.find("\n")
        crlf = first_eol > 0 and doc.text[first_eol - 1] == "\r"   # the document's line ending
        ctx = build_context(self.trees, uri, cursor, self.prompts.count_tokens, budget or self.settings.budget)
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
        return Request(site, prompt.ids, tuple(prompt.stop_ids), multiline, crlf, timings, uri, t_start)

    async def run(self, request: Request, **overrides) -> Completion:
        s, site, multiline = self.settings, request.site, request.multiline
        timings = dict(request.timings_ms)
        params = dict(max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                      stop_ids=request.stop_ids, cache_key=request.uri)
        params.update(overrides)
        raw, stats, ended_block = "", Stats(prompt_tokens=len(request.prompt_ids)), False
        async with aclosing(self.engine.generate(request.prompt_ids, GenerationParams(**params))) as stream:
            async for chunk in stream:
                raw, stats = raw + chunk.text, chunk.stats
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
