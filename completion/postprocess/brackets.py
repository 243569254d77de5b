"""Bracket bookkeeping across prefix, completion and suffix (on masked text: code only).

The completion is inserted between prefix and suffix, so a closing bracket in it is fine only
if it closes something the completion opened, or a prefix bracket the suffix leaves open.
"""
from __future__ import annotations

from dataclasses import dataclass

from .lexer import MASK
from .lines import CLOSERS, OPENER_OF, OPENERS, indent_width

OWN, PREFIX, EXCESS, STRAY = "own", "prefix", "excess", "stray"


@dataclass(frozen=True)
class OpenBracket:
    char: str
    line_indent: int   # indentation of the line it was opened on
    header: str        # that line's code (for a lone Allman "{", the line before it too)


def open_brackets(masked_prefix: str) -> tuple[OpenBracket, ...]:
    """The prefix's brackets still open at the cursor, outermost first."""
    stack: list[OpenBracket] = []
    previous_code = ""
    for line in masked_prefix.split("\n"):
        code = line.replace(MASK, " ").strip()
        header = f"{previous_code} {code}" if code.startswith("{") else code
        for ch in line:
            if ch in OPENERS:
                stack.append(OpenBracket(ch, indent_width(line), header))
            elif ch in CLOSERS:
                _pop_matching(stack, ch, lambda b: b.char)
        if code:
            previous_code = code
    return tuple(stack)


def count_closed_by_suffix(opens: tuple[OpenBracket, ...], masked_suffix: str) -> int:
    """How many prefix brackets the suffix closes. A closer that starts a line is matched by
    indentation, so in `class A {⏎  f() {║⏎}` the suffix's `}` closes the class, not f."""
    remaining = list(opens)
    own: list[str] = []
    closed = 0
    for line_number, line in enumerate(masked_suffix.split("\n")):
        first_col = len(line) - len(line.lstrip())
        for col, ch in enumerate(line):
            if ch in OPENERS:
                own.append(ch)
            elif ch in CLOSERS and not _pop_matching(own, ch, lambda c: c):
                # The first suffix line is the rest of the cursor line: nothing there starts a line.
                starts_line = line_number > 0 and col == first_col
                index = _matching_open(remaining, ch, indent_width(line) if starts_line else None)
                if index is not None:
                    closed += 1
                    del remaining[index:]
    return closed


def _matching_open(remaining: list[OpenBracket], closer: str, indent: int | None) -> int | None:
    """Index of the prefix bracket this suffix closer closes; inner ones it skips stay open."""
    wanted = OPENER_OF[closer]
    candidates = [i for i in range(len(remaining) - 1, -1, -1) if remaining[i].char == wanted]
    if indent is not None:
        for i in candidates:
            if remaining[i].line_indent <= indent:
                return i
    # Odd indentation (a brace opened on a deeper continuation line): fall back to nesting.
    return candidates[0] if candidates else None


def _pop_matching(stack: list, closer: str, char_of) -> bool:
    """Pop up to the nearest matching opener; a closer with no opener at all is ignored."""
    wanted = OPENER_OF[closer]
    for i in range(len(stack) - 1, -1, -1):
        if char_of(stack[i]) == wanted:
            del stack[i:]
            return True
    return False


@dataclass(frozen=True)
class Closer:
    index: int                   # offset in the completion
    kind: str                    # OWN, PREFIX (allowed), EXCESS (the suffix closes it), STRAY
    opener: OpenBracket | None   # the prefix bracket closed, for PREFIX and EXCESS


@dataclass(frozen=True)
class BracketWalk:
    closers: tuple[Closer, ...]
    line_depths: tuple[int, ...]   # open brackets (completion's and prefix's) at each line start
    own_open: int                  # brackets the completion opened and left open


def walk_completion(masked: str, opens: tuple[OpenBracket, ...], closed_by_suffix: int) -> BracketWalk:
    allowance = len(opens) - closed_by_suffix   # prefix brackets the completion may close
    next_prefix = len(opens) - 1
    own: list[str] = []
    closers: list[Closer] = []
    depths = [len(own) + next_prefix + 1]
    for i, ch in enumerate(masked):
        if ch in OPENERS:
            own.append(ch)
        elif ch in CLOSERS:
            if own:
                matches = own[-1] == OPENER_OF[ch]
                if matches:
                    own.pop()
                closers.append(Closer(i, OWN if matches else STRAY, None))
            elif next_prefix >= 0 and opens[next_prefix].char == OPENER_OF[ch]:
                used = len(opens) - next_prefix
                kind = PREFIX if used <= allowance else EXCESS
                closers.append(Closer(i, kind, opens[next_prefix]))
                next_prefix -= 1
            else:
                closers.append(Closer(i, STRAY, None))
        elif ch == "\n":
            depths.append(len(own) + next_prefix + 1)
    return BracketWalk(tuple(closers), tuple(depths), len(own))
