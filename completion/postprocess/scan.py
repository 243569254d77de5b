"""One pass over a completion that the block, bracket and duplicate rules all read from."""
from __future__ import annotations

from dataclasses import dataclass

from .brackets import BracketWalk, walk_completion
from .completion_site import CompletionSite
from .context import SiteContext, context_of
from .lexer import Masked
from .lines import line_starts


@dataclass(frozen=True)
class CompletionScan:
    text: str
    ctx: SiteContext
    masked: Masked           # the completion with literals and comments masked
    walk: BracketWalk
    lines: tuple[str, ...]   # text.split("\n"); lines[0] continues the cursor line
    starts: tuple[int, ...]  # offset of each line in text

    def is_complete(self, n: int) -> bool:
        """Line n is followed by a newline, so no later token can change it."""
        return n < len(self.lines) - 1

    def is_code_line(self, n: int) -> bool:
        """Line n starts in code (not inside a multi-line literal) outside any bracket."""
        return self.masked.line_states[n].in_code and self.walk.line_depths[n] == 0

    def cut_before_line(self, n: int) -> int:
        """The offset that keeps lines[:n] (the newline ending line n-1 is dropped)."""
        return self.starts[n] - 1


def scan_completion(text: str, site: CompletionSite) -> CompletionScan:
    ctx = context_of(site)
    masked = ctx.mask(text)
    walk = walk_completion(masked.text, ctx.opens, ctx.closed_by_suffix)
    return CompletionScan(text, ctx, masked, walk, tuple(text.split("\n")), tuple(line_starts(text)))
