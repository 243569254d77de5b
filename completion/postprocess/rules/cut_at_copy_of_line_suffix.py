"""When the completion's last line re-types the text after the cursor (`world")` before `")`),
cut it there, so the line does not read `print("hello world")")`.

The copy may be the whole rest of the line or, for `");`-like endings, its leading closing
punctuation. A cut is made only where the kept text is balanced as the cursor was (the same
literal/comment state, no bracket of its own left open, no bracket closed that the suffix
closes) and the cut text closes no prefix bracket the suffix leaves open: in `foo(bar(║)`
the text `x))` keeps `x)`. Of those places the last is taken.
"""
from ..brackets import EXCESS, PREFIX, STRAY
from ..completion_site import CompletionSite
from ..context import context_of
from ..scan import scan_completion
from .rule import rule

CLOSING_PUNCTUATION = set(")]}\"'`;,:")


@rule
def cut_at_copy_of_line_suffix(text: str, site: CompletionSite, multiline: bool) -> str:
    tail = context_of(site).line_suffix.strip()
    if not tail:
        return text
    last_line_start = text.rfind("\n") + 1
    for copy in _copies_of(tail):
        cuts = [p for p in _occurrences(text, copy, last_line_start)
                if _is_balanced(text[:p], site) and not _closes_needed_bracket(text, p, site)]
        if cuts:
            return text[:cuts[-1]]
    return text


def _copies_of(tail: str) -> list[str]:
    """The whole rest of the line, then its closing-punctuation starts, longest first."""
    copies = [tail]
    for length in range(len(tail) - 1, 0, -1):
        start = tail[:length]
        if set(start) <= CLOSING_PUNCTUATION:
            copies.append(start)
    return copies


def _occurrences(text: str, copy: str, start: int) -> list[int]:
    found = []
    position = text.find(copy, start)
    while position != -1:
        found.append(position)
        position = text.find(copy, position + 1)
    return found


def _is_balanced(kept: str, site: CompletionSite) -> bool:
    scan = scan_completion(kept, site)
    return (scan.masked.end_state == scan.ctx.cursor_state and scan.walk.own_open == 0
            and not any(closer.kind in (EXCESS, STRAY) for closer in scan.walk.closers))


def _closes_needed_bracket(text: str, position: int, site: CompletionSite) -> bool:
    closers = scan_completion(text, site).walk.closers
    return any(c.kind == PREFIX and c.index >= position for c in closers)
