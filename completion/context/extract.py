"""build_context: everything the prompt needs about the cursor, within token budgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .budget import TokenMeter, fit
from .languages import SPECS
from .lines import text_lines
from .snippets import SEPARATOR, Snippet, collect_snippets, recent_snippets
from .syntax import LineRange, cursor_node_type, header_range, indented_headers, scope_nodes
from .trees import DocumentTrees, SnippetPlan, decode
from .windows import PrefixBuilder, SuffixBuilder


PLAN_LINES = 30   # a cursor this many lines from where the snippets were chosen chooses them again


@dataclass
class ContextBudget:
    prefix_tokens: int = 1024
    suffix_tokens: int = 256
    snippet_tokens: int = 512


@dataclass
class CodeContext:
    path: str  # display path of the current file
    language: str | None
    prefix: str  # [imports above the window] + [scope headers above the window] + window
    suffix: str  # text after the cursor, windowed
    snippets: list[Snippet]  # definitions from other open documents of symbols used near the cursor
    line_prefix: str  # the cursor line's text before the cursor (exact, no '\r')
    line_suffix: str  # the cursor line's text after the cursor (exact, no line terminator)
    cursor_node: str | None  # smallest named node spanning the cursor (None without a tree)
    scope: list[str]  # enclosing scope headers, outermost first, in the window or not
    prefix_extra: str = field(default="")  # the imports + headers part at the front of `prefix`


def build_context(trees: DocumentTrees, uri: str, cursor: int, count_tokens: Callable[[str], int],
                  budget: ContextBudget | None = None, replan: bool = False) -> CodeContext:
    """Context for a completion at `cursor`, a code-point offset into the document's text.

    The snippets are chosen once for a place and kept while the cursor stays within PLAN_LINES of
    it (`trees.snippet_plans`), so typing does not move the prompt's beginning and the engine
    recomputes only the rows after the cursor; `replan` (a pause) chooses them afresh."""
    document = trees.get(uri)
    if document is None:
        raise ValueError(f"build_context: document {uri!r} is not open")
    text = document.text
    if isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= len(text):
        raise ValueError(
            f"build_context: cursor {cursor!r} is outside document {uri!r} (0..{len(text)} characters)"
        )
    budget = budget or ContextBudget()
    source = document.source
    offset = document.byte_offset(cursor)
    meter = TokenMeter(count_tokens, trees.bytes_per_token, document.language)

    root = document.tree.root_node if document.tree is not None else None
    spec = SPECS.get(document.language) if root is not None else None
    scopes: list[LineRange] = []
    cursor_node = None
    if root is not None:
        scopes = [header_range(source, spec, node) for node in scope_nodes(source, root, spec, offset)]
        if not scopes and spec.indent_scoped and root.has_error:
            scopes = indented_headers(source, offset)
        cursor_node = cursor_node_type(source, root, offset)

    prefix_builder = PrefixBuilder(source, offset, root, spec, scopes, trees.prefix_anchors.get(uri))
    prefix_bytes = fit(prefix_builder.build, budget.prefix_tokens, meter)
    trees.prefix_anchors[uri] = prefix_builder.start
    extra = min(prefix_builder.extra_bytes, len(prefix_bytes)) if prefix_bytes else 0
    suffix_bytes = fit(SuffixBuilder(source, offset, root, spec).build, budget.suffix_tokens, meter)
    line_prefix, line_suffix = cursor_line(text, cursor)
    prefix, suffix = decode(prefix_bytes), decode(suffix_bytes)
    line = source.count(b"\n", 0, offset)
    plan = trees.snippet_plans.get(uri)
    if replan or plan is None or abs(plan.line - line) > PLAN_LINES or plan.budget != budget.snippet_tokens:
        # definitions first; recent edits, views and yanks share what they leave of the budget
        snippets = collect_snippets(trees, document, offset, meter, budget.snippet_tokens)
        used = meter.estimate(sum(len(s.text.encode("utf-8", "surrogatepass")) + len(SEPARATOR) for s in snippets))
        snippets += recent_snippets(trees, prefix, suffix, meter, int(budget.snippet_tokens - used))
        plan = trees.snippet_plans[uri] = SnippetPlan(line, budget.snippet_tokens, snippets)
    snippets = list(plan.snippets)

    return CodeContext(
        path=trees.display_path(uri),
        language=document.language,
        prefix=prefix,
        suffix=suffix,
        snippets=snippets,
        line_prefix=line_prefix,
        line_suffix=line_suffix,
        cursor_node=cursor_node,
        scope=[text_lines(decode(source[start:end])) for start, end in scopes],
        prefix_extra=decode(prefix_bytes[:extra]),
    )


def cursor_line(text: str, cursor: int) -> tuple[str, str]:
    """The cursor line's text before and after the cursor; '\\r\\n', '\\n' and a lone '\\r' all end
    lines (as in LSP), and no terminator is part of either side."""
    start = text.rfind("\n", 0, cursor) + 1
    before = text[start:cursor]
    if before.endswith("\r") and text.startswith("\n", cursor):
        before = before[:-1]  # cursor between '\r' and '\n': still the end of this line
    lone_cr = before.rfind("\r")
    if lone_cr >= 0:
        before = before[lone_cr + 1 :]
    end = text.find("\n", cursor)
    after = text[cursor:] if end < 0 else text[cursor:end]
    lone_cr = after.find("\r")
    if lone_cr >= 0:
        after = after[:lone_cr]
    return before, after
