"""At file level or in a class-like body, write one member at a time.

There a block holds a list of definitions, and a model happily writes the next one and the one
after. Once a construct that spanned several lines is finished (Python: a line went deeper and
the code is back at the block's indentation; braces: a `{` stayed open across lines and is
closed again), the next code line starts a new member and is cut, unless it continues the
construct (`else`, `except`, `catch`, ...).
"""
from __future__ import annotations

import re

from ..lexer import MASK
from ..lines import first_word, indent_width, is_blank
from ..multiline import ends_block_opener
from ..scan import CompletionScan
from ..syntax import INDENT
from .by_dedent import block_indent

PYTHON_CONTINUATIONS = ("else", "elif", "except", "finally")
BRACE_CONTINUATIONS = ("else", "catch", "finally")
PYTHON_CLASS_HEADER = re.compile(r"\s*class\b")
CONTAINER_HEADER = re.compile(
    r"\b(class|struct|interface|enum|union|namespace|impl|trait|mod|extern|object|record)\b")


def end_after_member(scan: CompletionScan) -> int | None:
    if scan.ctx.family == INDENT:
        return _end_after_python_member(scan)
    return _end_after_braced_member(scan)


def _end_after_python_member(scan: CompletionScan) -> int | None:
    ctx = scan.ctx
    if ctx.opens:
        return None
    if ends_block_opener(ctx, ctx.masked_cursor_line):
        if not PYTHON_CLASS_HEADER.match(ctx.masked_cursor_line):
            return None
        base = None   # a fresh class body: its first line sets the members' indentation
    else:
        base = block_indent(scan)
        if base is None or not _python_block_is_container(scan, base):
            return None
    went_deeper = False
    for n in range(1, len(scan.lines)):
        line = scan.lines[n]
        if is_blank(line) or not scan.is_code_line(n):
            continue
        indent = indent_width(line)
        if base is None:
            base = indent
        elif indent > base:
            went_deeper = True
        elif went_deeper:
            decision = _continues(scan, n, PYTHON_CONTINUATIONS)
            if decision is None:
                return None
            if not decision:
                return scan.cut_before_line(n)
    return None


def _python_block_is_container(scan: CompletionScan, base: int) -> bool:
    """Module level, or the nearest header above the cursor at a lower indent is a class."""
    ctx = scan.ctx
    for n in range(len(ctx.prefix_lines) - 2, -1, -1):
        code = ctx.prefix_lines[n].replace(MASK, " ")
        if is_blank(code) or not ctx.prefix_line_states[n].in_code:
            continue
        if indent_width(code) < base:
            return PYTHON_CLASS_HEADER.match(code) is not None
    return True


def _end_after_braced_member(scan: CompletionScan) -> int | None:
    opens = scan.ctx.opens
    if opens and not (opens[-1].char == "{" and CONTAINER_HEADER.search(opens[-1].header)):
        return None
    depth, spanned, finished = 0, False, False
    masked_lines = scan.masked.text.split("\n")
    for n, line in enumerate(masked_lines):
        if n > 0 and finished and not is_blank(line.replace(MASK, "x")):
            decision = _continues(scan, n, BRACE_CONTINUATIONS)
            if decision is None:
                return None
            if not decision:
                return scan.cut_before_line(n)
            spanned = finished = False
        depth += line.count("{") - line.count("}")
        if depth < 0:
            return None   # it closed the enclosing block: by_brackets decides that
        if scan.is_complete(n):
            spanned = spanned or depth > 0
            finished = finished or (spanned and depth == 0)
    return None


def _continues(scan: CompletionScan, n: int, keywords: tuple[str, ...]) -> bool | None:
    """Does line n continue the construct before it? None while the last, still streaming,
    line may yet become one of the keywords (`el` -> `else`)."""
    word = first_word(scan.lines[n])
    if word in keywords:
        return True
    stem = scan.lines[n].strip()
    if not scan.is_complete(n) and stem == word and any(k.startswith(word) for k in keywords):
        return None
    return False
