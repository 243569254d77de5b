"""Tell code from string literals and comments, so the bracket and indentation rules see code only.

`mask_non_code` returns the text with every character inside a literal or comment (delimiters
included) replaced by MASK; newlines are kept, so offsets and line structure are unchanged.
It is a scanner, not a parser: good enough for brackets, wrong on exotic literals (C++ raw
strings, regex literals), which only make a rule cut less precisely.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .syntax import Quote, Syntax

MASK = "\x00"   # never a bracket, never whitespace, never an identifier character

CODE, STRING, LINE_COMMENT, BLOCK_COMMENT = "code", "string", "line_comment", "block_comment"


@dataclass(frozen=True)
class LexState:
    kind: str = CODE
    quote: Quote | None = None    # the literal we are inside, when kind is STRING

    @property
    def in_code(self) -> bool:
        return self.kind == CODE


IN_CODE = LexState()


@dataclass(frozen=True)
class Masked:
    text: str                          # same length as the input, non-code replaced by MASK
    end_state: LexState                # the state after the last character
    line_states: tuple[LexState, ...]  # the state at the start of each line


def mask_non_code(text: str, syntax: Syntax, state: LexState = IN_CODE) -> Masked:
    # Runs per keystroke over KBs of prefix: jump with C-speed regex searches to the next character
    # that can change the state, and copy or mask the stretch in between in one piece.
    out: list[str] = []
    line_states = [state]
    i, n = 0, len(text)
    code_stops = _code_stops(syntax)
    while i < n:
        if state.kind == CODE:
            m = code_stops.search(text, i)
            j = m.start() if m else n
            if j > i:   # plain code: copied as is
                chunk = text[i:j]
                out.append(chunk)
                line_states.extend([state] * chunk.count("\n"))
                i = j
                continue
            opened = _literal_or_comment_at(text, i, syntax)
            if opened is not None:
                state, width = opened
                out.append(MASK * width)
                i += width
            else:
                out.append(text[i])
                i += 1
            continue
        if state.kind == LINE_COMMENT:
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(MASK * (j - i))
            if j < n:
                out.append("\n")
                state = IN_CODE
                line_states.append(state)
            i = j + 1
            continue
        if state.kind == BLOCK_COMMENT:
            close = syntax.block_comment[1]
            j = text.find(close, i)
            end = n if j < 0 else j
            chunk = text[i:end]
            out.append(_NOT_NEWLINE.sub(MASK, chunk))
            line_states.extend([state] * chunk.count("\n"))
            if j >= 0:
                out.append(MASK * len(close))
                state = IN_CODE
                end += len(close)
            i = end
            continue
        quote = state.quote
        m = _string_stops(quote).search(text, i)
        j = m.start() if m else n
        if j > i:   # literal body: masked in one piece (it holds no newline)
            out.append(MASK * (j - i))
            i = j
            continue
        ch = text[i]
        if quote.escapes and ch == "\\" and i + 1 < n:
            out.append(MASK + ("\n" if text[i + 1] == "\n" else MASK))
            if text[i + 1] == "\n":
                line_states.append(state)   # an escaped newline continues the literal
            i += 2
            continue
        if text.startswith(quote.close, i):
            out.append(MASK * len(quote.close))
            i += len(quote.close)
            state = IN_CODE
            continue
        if ch == "\n" and not quote.spans_lines:
            state = IN_CODE    # unterminated one-line literal: recover at the line end
        out.append("\n" if ch == "\n" else MASK)
        if ch == "\n":
            line_states.append(state)
        i += 1
    return Masked("".join(out), state, tuple(line_states))


_NOT_NEWLINE = re.compile("[^\n]")


@lru_cache(maxsize=None)
def _code_stops(syntax: Syntax) -> re.Pattern:
    """Characters in code where a comment or literal may begin."""
    openers = list(syntax.line_comments) + [q.open for q in syntax.quotes]
    if syntax.block_comment:
        openers.append(syntax.block_comment[0])
    if not openers:
        return re.compile("(?!)")   # never matches: all of the text is code
    return re.compile("[" + "".join(sorted({re.escape(o[0]) for o in openers})) + "]")


@lru_cache(maxsize=None)
def _string_stops(quote: Quote) -> re.Pattern:
    """Characters inside a literal that may end it, escape, or break the line."""
    chars = {re.escape(quote.close[0]), "\n"} | ({re.escape("\\")} if quote.escapes else set())
    return re.compile("[" + "".join(sorted(chars)) + "]")


def _literal_or_comment_at(text: str, i: int, syntax: Syntax) -> tuple[LexState, int] | None:
    """The state a literal or comment starting at text[i] puts us in, and its opening width."""
    for opener in syntax.line_comments:
        if text.startswith(opener, i):
            return LexState(LINE_COMMENT), len(opener)
    if syntax.block_comment and text.startswith(syntax.block_comment[0], i):
        return LexState(BLOCK_COMMENT), len(syntax.block_comment[0])
    for quote in syntax.quotes:
        if not text.startswith(quote.open, i):
            continue
        # r"..." is a raw string only at a token start; `bar"` is an identifier and a quote.
        if quote.open[0].isalpha() and i > 0 and _is_word_char(text[i - 1]):
            continue
        if quote.open == "'" and syntax.quote_may_be_lifetime and not _is_char_literal(text, i):
            return None
        return LexState(STRING, quote), len(quote.open)
    return None


def _is_char_literal(text: str, i: int) -> bool:
    """Rust: '\\n' and 'x' are chars; 'a in <'a> or 'outer: is a lifetime or label."""
    return text[i + 1:i + 2] == "\\" or text[i + 2:i + 3] == "'"


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"
