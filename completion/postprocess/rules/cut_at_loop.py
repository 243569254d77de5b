"""Cut where the model fell into a loop: keep the first copy of a block of lines that then
repeats over and over, and drop a line from where one short run of tokens repeats many times
(`f(0, 1, 1, 1, 1, 1, 1, ...`). Small models do this under greedy decoding until the token
limit, and what they loop on is usually worth showing once.

The cut point depends only on the text before it (the first place a loop is complete), so more
text never moves it: `should_stop` ends the stream there, saving the tokens of the loop.

The thresholds keep real code whole: a line repeated four times (`x.append(0)`) or a block of
lines twice stays; so does a literal of up to 15 equal items (`[0, 0, 0, 0, 0, 0, 0, 0]`).
"""
from __future__ import annotations

import re

from ..completion_site import CompletionSite
from .rule import rule

LINE_REPEATS = 5          # one line, five times in a row
BLOCK_REPEATS = 3         # a block of 2..LONGEST_BLOCK lines, three times in a row
LONGEST_BLOCK = 8
RUN_REPEATS = 16          # a run of 1..LONGEST_RUN tokens, sixteen times in a row within a line
LONGEST_RUN = 4
TOKEN = re.compile(r"\w+|[^\w\s]")
WORD = re.compile(r"\w")


def has_repeated_run(line: str) -> bool:
    """Whether a run of tokens, a word among them, repeats RUN_REPEATS times in a row in `line`
    (a run of punctuation alone is a `# ======` rule line, not a loop)."""
    words = TOKEN.findall(line)
    for unit in range(1, LONGEST_RUN + 1):
        streak = 0   # positions j so far with words[j] == words[j - unit]: a run of R copies has unit * (R - 1)
        for j in range(unit, len(words)):
            streak = streak + 1 if words[j] == words[j - unit] else 0
            if streak >= unit * (RUN_REPEATS - 1) and any(WORD.match(w) for w in words[j - unit + 1:j + 1]):
                return True
    return False


def repeated_block_end(lines: list[str], end: int) -> int | None:
    """If complete lines [..end) finish a loop (a block repeated enough times), the line index
    just after its first copy; else None. Lines compare without their indentation:
    drop_retyped_indent may have taken the first line's."""
    for size in range(1, LONGEST_BLOCK + 1):
        repeats = LINE_REPEATS if size == 1 else BLOCK_REPEATS
        first = end - size * repeats
        if first < 0:
            break
        block = [line.strip() for line in lines[first:first + size]]
        if not any(block):
            continue   # blank lines are strip_trailing_whitespace's
        if all(lines[first + i].strip() == block[i % size] for i in range(size, size * repeats)):
            # a loop has no first line of its own: start the kept copy at the block's least
            # indented line (`if x:` rather than its body), which the second copy still holds
            depths = [len(line) - len(line.lstrip()) for line in lines[first:first + size]]
            return first + depths.index(min(depths)) + size
    return None


def find_loop(text: str) -> int | None:
    """The offset to cut `text` at where a loop begins, or None."""
    lines = text.split("\n")
    offset = 0
    for i, line in enumerate(lines):
        if has_repeated_run(line):   # drop the whole line: its start is not worth showing alone
            return max(0, offset - 1)
        complete = i + 1 < len(lines)
        if complete:
            keep = repeated_block_end(lines, i + 1)
            if keep is not None:
                return sum(len(kept) + 1 for kept in lines[:keep]) - 1
        offset += len(line) + 1
    return None


@rule
def cut_at_loop(text: str, site: CompletionSite, multiline: bool) -> str:
    cut = find_loop(text)
    return text if cut is None else text[:cut]
