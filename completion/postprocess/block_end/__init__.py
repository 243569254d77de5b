"""Where the completion leaves the block the cursor is in.

Each detector reads a CompletionScan and returns the offset to cut at (keep text[:offset]),
or None. A detector answers only once the answer cannot change as more text streams in, so
`should_stop` can end generation at the same place `limit_to_block` would cut.
"""
from __future__ import annotations

from ..completion_site import CompletionSite
from ..scan import CompletionScan, scan_completion
from .by_blank_lines import end_at_blank_lines
from .by_brackets import end_by_brackets
from .by_dedent import end_by_dedent
from .by_member import end_after_member

DETECTORS = (end_by_brackets, end_by_dedent, end_after_member, end_at_blank_lines)


def find_block_end(text: str, site: CompletionSite) -> int | None:
    return block_end_of(scan_completion(text, site))


def block_end_of(scan: CompletionScan) -> int | None:
    cuts = [cut for cut in (detect(scan) for detect in DETECTORS) if cut is not None]
    return min(cuts) if cuts else None
