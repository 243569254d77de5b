"""Cut at the first closing bracket with nothing to close: not opened in the completion, not of
the type of the innermost open bracket, or closing a prefix bracket the suffix already closes
(the `)` in `foo(a, b)` typed before an auto-closed `)`). Brackets in literals and comments
are ignored."""
from ..block_end.by_brackets import cut_before_closer
from ..brackets import EXCESS, STRAY
from ..completion_site import CompletionSite
from ..scan import scan_completion
from .rule import rule


@rule
def trim_unbalanced_closers(text: str, site: CompletionSite, multiline: bool) -> str:
    for closer in scan_completion(text, site).walk.closers:
        if closer.kind in (EXCESS, STRAY):
            return text[:cut_before_closer(text, closer.index)]
    return text
