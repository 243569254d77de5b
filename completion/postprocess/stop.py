"""Early stop while tokens stream in: True once the completion is certainly finished.

It asks the same questions as the pipeline, so stopping never changes the final text: a single
line is over at its newline (nothing after it survives `cut_to_first_line`); any completion is
over where `limit_to_block` will cut (the block-end detectors only answer once more text cannot
change their answer) or where `cut_at_loop` will (the first loop found stays the first); text
with control characters will be discarded whatever follows.
"""
from __future__ import annotations

from .block_end import find_block_end
from .completion_site import CompletionSite
from .lines import to_lf
from .rules.cut_at_loop import find_loop
from .rules.drop_control_characters import has_control_characters


def should_stop(text: str, site: CompletionSite, multiline: bool) -> bool:
    try:
        text = to_lf(text)
        if has_control_characters(text):
            return True
        if not multiline and "\n" in text:
            return True
        cuts = [cut for cut in (find_block_end(text, site), find_loop(text)) if cut is not None]
        return any(cut < len(text) for cut in cuts)
    except Exception:   # never end a request over a bug here; the token limit still applies
        return False
