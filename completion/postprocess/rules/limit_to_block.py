"""Stop at the end of the block the cursor is in (see ../block_end for how each language ends
one). `should_stop` uses the same detectors, so stopping early never changes this result."""
from ..block_end import find_block_end
from ..completion_site import CompletionSite
from .rule import rule


@rule
def limit_to_block(text: str, site: CompletionSite, multiline: bool) -> str:
    cut = find_block_end(text, site)
    return text if cut is None else text[:cut]
