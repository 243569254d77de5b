"""Small text helpers shared by the rules: newlines, indentation, blank lines."""
from __future__ import annotations

TAB_WIDTH = 4   # only comparisons within one file matter, so any fixed width works

CLOSERS = ")]}"
OPENERS = "([{"
OPENER_OF = {")": "(", "]": "[", "}": "{"}


def to_lf(text: str) -> str:
    """CRLF (and stray CR) to LF: the site strings may come from a CRLF document."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def indent_width(line: str) -> int:
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += TAB_WIDTH - width % TAB_WIDTH
        else:
            break
    return width


def is_blank(line: str) -> bool:
    return not line.strip()


def line_starts(text: str) -> list[int]:
    """Offsets where each line of `text` begins (the first is 0)."""
    starts = [0]
    starts.extend(i + 1 for i, ch in enumerate(text) if ch == "\n")
    return starts


def first_word(line: str) -> str:
    stripped = line.lstrip()
    end = 0
    while end < len(stripped) and (stripped[end].isalnum() or stripped[end] == "_"):
        end += 1
    return stripped[:end]


def normalize_space(text: str) -> str:
    """Whitespace runs (newlines included) collapsed to one space: for 'same code' comparisons."""
    return " ".join(text.split())
