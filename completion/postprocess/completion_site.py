"""What the post-processing rules know about the place a completion goes."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CompletionSite:
    # "python", "javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp" or None
    language: str | None
    prefix: str        # document text before the cursor (may be a window: the last few KB)
    suffix: str        # document text after the cursor (a window)
    line_prefix: str   # the cursor line's text before the cursor
    line_suffix: str   # the cursor line's text after the cursor
    # tree-sitter type of the smallest named node at the cursor, if known
    cursor_node: str | None = None
