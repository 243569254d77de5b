"""Trim the completion's last lines when they repeat the lines that follow the cursor: the model
wrote the new code, then re-wrote the existing code after it.

Lines are compared stripped, skipping blank ones, cursor line included (line prefix + first
completion line), so the completion's lines are seen as they will read in the document. A trim
that would leave a bracket the completion opened without its closer is not made: then the
repeated line was the completion's own `}` or `)`. In an indent-scoped language a block opener the
trim leaves last (`else:`) whose body was the repeated line goes too: the line that follows it in
the document is no deeper, so the opener would have no body.
"""
from ..completion_site import CompletionSite
from ..context import context_of
from ..lines import is_blank
from ..brackets import PREFIX
from ..scan import scan_completion
from ..syntax import INDENT
from .rule import rule


@rule
def trim_lines_repeating_suffix(text: str, site: CompletionSite, multiline: bool) -> str:
    ctx = context_of(site)
    virtual = (ctx.line_prefix + text + ctx.line_suffix).split("\n")
    written = [(n, line.strip()) for n, line in enumerate(virtual) if not is_blank(line)]
    following = [line.strip() for line in ctx.suffix_lines[1:] if not is_blank(line)]
    for count in range(min(len(written), len(following)), 0, -1):
        repeated = written[-count:]
        if [line for _, line in repeated] != following[:count]:
            continue
        first_repeated = repeated[0][0]
        kept = "\n".join(text.split("\n")[:first_repeated])
        if not _closes_nothing_needed(text, kept, site):
            continue
        if first_repeated == 0:
            # Even the cursor line is a copy. From an empty line the whole completion is
            # old code; after typed text the user may be writing that line on purpose.
            return "" if is_blank(ctx.line_prefix) else text
        return _without_bodiless_openers(kept, ctx)
    return text


def _without_bodiless_openers(kept: str, ctx) -> str:
    below = next((line for line in ctx.suffix_lines[1:] if not is_blank(line)), None)
    if ctx.family != INDENT or below is None:
        return kept
    depth = len(below) - len(below.lstrip())
    lines = kept.split("\n")
    while lines:
        last = (ctx.line_prefix if len(lines) == 1 else "") + lines[-1]
        if not is_blank(last) and (not last.rstrip().endswith(":") or len(last) - len(last.lstrip()) < depth):
            break
        lines.pop()
    return "\n".join(lines)


def _closes_nothing_needed(text: str, kept: str, site: CompletionSite) -> bool:
    if scan_completion(kept, site).walk.own_open:
        return False
    closers = scan_completion(text, site).walk.closers
    return not any(c.kind == PREFIX and c.index >= len(kept) for c in closers)
