"""The caller hands completions over with LF newlines; make sure of it, since every other rule
splits on "\n" (a stray CR would also count as a control character and discard the text)."""
from ..completion_site import CompletionSite
from ..lines import to_lf
from .rule import rule


@rule
def normalize_newlines(text: str, site: CompletionSite, multiline: bool) -> str:
    return to_lf(text)
