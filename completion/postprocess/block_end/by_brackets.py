"""Brace languages (and any bracket the prefix left open): the completion ends its scope when
it closes a block brace the suffix leaves open (keep the brace and the `)`/`;` after it, as in
`});`), and it must stop before a bracket the suffix already closes."""
from __future__ import annotations

from ..brackets import EXCESS, PREFIX
from ..lines import is_blank
from ..scan import CompletionScan

AFTER_BLOCK_CLOSE = set(")]};, \t")


def end_by_brackets(scan: CompletionScan) -> int | None:
    for closer in scan.walk.closers:
        if closer.kind == EXCESS:
            return cut_before_closer(scan.text, closer.index)
        if closer.kind == PREFIX and closer.opener.char == "{":
            return _end_of_closing_run(scan.masked.text, closer.index + 1)
    return None


def cut_before_closer(text: str, index: int) -> int:
    """Cut at the closer; a line holding nothing but it goes with its newline."""
    line_start = text.rfind("\n", 0, index) + 1
    if line_start > 0 and is_blank(text[line_start:index]):
        return line_start - 1
    return index


def _end_of_closing_run(masked: str, start: int) -> int:
    # `} else {` stops after `}`: the next branch would open a block the completion cannot
    # finish. A run reaching the end of the text is not final yet (returns len, "no cut").
    end = start
    while end < len(masked) and masked[end] in AFTER_BLOCK_CLOSE:
        end += 1
    return end
