"""Strip trailing whitespace on every line and trailing blank lines; discard what is left blank.

The last line keeps its trailing space when a word follows the cursor on the line: in
`x = ║foo` the completion `bar + ` needs its space before `foo`.
"""
from ..completion_site import CompletionSite
from ..context import context_of
from ..lines import is_blank
from .rule import rule


@rule
def strip_trailing_whitespace(text: str, site: CompletionSite, multiline: bool) -> str:
    lines = text.split("\n")
    while len(lines) > 1 and is_blank(lines[-1]):
        lines.pop()
    if is_blank("".join(lines)):
        return ""
    keep_last_space = _word_follows(context_of(site).line_suffix)
    last = lines[-1]
    lines = [line.rstrip() for line in lines]
    if keep_last_space:
        lines[-1] = last
    return "\n".join(lines)


def _word_follows(line_suffix: str) -> bool:
    first = line_suffix[:1]
    return bool(first) and (first.isalnum() or first in "_\"'`")
