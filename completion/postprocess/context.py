"""Everything the rules derive from the site once: syntax, lexer state at the cursor, the open
brackets of the prefix and how many of them the suffix closes.

`should_stop` runs on every streamed chunk with the same site, so the scan of the prefix and
suffix windows (a few KB each) is cached on their text.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .brackets import OpenBracket, count_closed_by_suffix, open_brackets
from .completion_site import CompletionSite
from .lexer import IN_CODE, LexState, Masked, mask_non_code
from .lines import to_lf
from .syntax import Syntax, syntax_for


@dataclass(frozen=True)
class SiteContext:
    syntax: Syntax
    cursor_state: LexState            # inside code, a literal or a comment at the cursor
    opens: tuple[OpenBracket, ...]    # prefix brackets open at the cursor, outermost first
    closed_by_suffix: int             # how many of them the suffix closes
    prefix_lines: tuple[str, ...]     # masked prefix, split in lines; the last is the cursor line
    prefix_line_states: tuple[LexState, ...]
    line_prefix: str                  # the cursor line before / after the cursor, LF-normalized
    line_suffix: str
    suffix_lines: tuple[str, ...]     # the raw (unmasked) suffix lines; the first is line_suffix

    @property
    def family(self) -> str:
        return self.syntax.family

    @property
    def masked_cursor_line(self) -> str:
        return self.prefix_lines[-1]

    def mask(self, completion: str) -> Masked:
        """The completion masked, scanning on from the lexer state at the cursor."""
        return mask_non_code(completion, self.syntax, self.cursor_state)


def context_of(site: CompletionSite) -> SiteContext:
    return _context(site.language, site.prefix, site.suffix, site.line_prefix, site.line_suffix)


@lru_cache(maxsize=16)
def _context(language, prefix, suffix, line_prefix, line_suffix) -> SiteContext:
    prefix, suffix = to_lf(prefix), to_lf(suffix)
    syntax = syntax_for(language, prefix)
    masked_prefix = mask_non_code(prefix, syntax, IN_CODE)
    opens = open_brackets(masked_prefix.text)
    masked_suffix = mask_non_code(suffix, syntax, masked_prefix.end_state)
    return SiteContext(
        syntax=syntax,
        cursor_state=masked_prefix.end_state,
        opens=opens,
        closed_by_suffix=count_closed_by_suffix(opens, masked_suffix.text),
        prefix_lines=tuple(masked_prefix.text.split("\n")),
        prefix_line_states=masked_prefix.line_states,
        line_prefix=to_lf(line_prefix).split("\n")[-1],
        line_suffix=to_lf(line_suffix).split("\n")[0],
        suffix_lines=tuple(suffix.split("\n")),
    )
