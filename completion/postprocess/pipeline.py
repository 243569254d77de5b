"""The order of the post-processing rules, in one place.

Cheap discards come first, then the rules that shorten the text, widest cut first (one line,
then the block), then the duplicate and bracket trims that need the final extent, and last
the cleanup and the junk check on what is left. Any rule returning "" ends the run: discard.
"""
from __future__ import annotations

from .completion_site import CompletionSite
from .rules.cut_at_copy_of_line_suffix import cut_at_copy_of_line_suffix
from .rules.cut_at_loop import cut_at_loop
from .rules.cut_to_first_line import cut_to_first_line
from .rules.drop_retyped_indent import drop_retyped_indent
from .rules.drop_control_characters import drop_control_characters
from .rules.drop_duplicate_of_suffix import drop_duplicate_of_suffix
from .rules.drop_repetitive_junk import drop_repetitive_junk
from .rules.limit_to_block import limit_to_block
from .rules.normalize_newlines import normalize_newlines
from .rules.rule import Rule
from .rules.strip_trailing_whitespace import strip_trailing_whitespace
from .rules.trim_lines_repeating_suffix import trim_lines_repeating_suffix
from .rules.trim_unbalanced_closers import trim_unbalanced_closers

RULES: tuple[Rule, ...] = (
    normalize_newlines,            # CRLF from a careless caller -> LF
    drop_control_characters,       # NUL, control characters, U+FFFD -> discard
    drop_retyped_indent,           # cursor after indentation: the first line's leading whitespace
    cut_to_first_line,             # single-line mode: first line only
    limit_to_block,                # stop where the cursor's block ends
    cut_at_loop,                   # a block repeated over and over -> its first copy
    drop_duplicate_of_suffix,      # the completion is what follows the cursor -> discard
    trim_lines_repeating_suffix,   # last lines re-type the next lines -> trim them
    cut_at_copy_of_line_suffix,    # last line re-types the rest of the cursor line -> cut
    trim_unbalanced_closers,       # a closing bracket with nothing to close -> cut there
    strip_trailing_whitespace,     # trailing spaces and blank lines; blank -> discard
    drop_repetitive_junk,          # one character or token run repeated -> discard
)


def postprocess(text: str, site: CompletionSite, multiline: bool) -> str:
    """The completion to show, or "" to show nothing."""
    for apply_rule in RULES:
        text = apply_rule(text, site, multiline)
        if not text:
            return ""
    return text
