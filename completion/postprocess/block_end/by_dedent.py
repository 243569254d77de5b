"""Indentation languages: the first code line indented less than the cursor's block is outside
it. Comment lines count (a comment at a shallower indent introduces what follows); lines inside
brackets or multi-line strings do not (their indentation is free)."""
from __future__ import annotations

from ..lines import indent_width, is_blank
from ..multiline import ends_block_opener
from ..scan import CompletionScan
from ..syntax import INDENT


def end_by_dedent(scan: CompletionScan) -> int | None:
    if scan.ctx.family != INDENT:
        return None
    threshold = block_indent(scan)
    if threshold is None:
        return None
    for n in range(1, len(scan.lines)):
        line = scan.lines[n]
        if is_blank(line) or not scan.is_code_line(n):
            continue
        if indent_width(line) < threshold:
            return scan.cut_before_line(n)
    return None


def block_indent(scan: CompletionScan) -> int | None:
    """The indentation a line needs to stay in the cursor's block (None: not known yet)."""
    ctx = scan.ctx
    if ctx.opens:
        # Inside brackets the statement began on the outermost bracket's line.
        return ctx.opens[0].line_indent
    cursor_line = ctx.line_prefix
    if is_blank(cursor_line):
        # A new statement starts here: the block is wherever the first written line sits.
        for line in (cursor_line + scan.text).split("\n"):
            if not is_blank(line):
                return indent_width(line)
        return None
    if ends_block_opener(ctx, ctx.masked_cursor_line):
        return indent_width(cursor_line) + 1     # the new body is deeper than its header
    return indent_width(cursor_line)
