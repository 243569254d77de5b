"""Discard text holding NUL or other control characters (tab and newline aside) or U+FFFD:
that is a decoding failure or binary junk, never code anyone meant to insert."""
import unicodedata

from ..completion_site import CompletionSite
from .rule import rule

ALLOWED_CONTROLS = {"\t", "\n"}
REPLACEMENT_CHARACTER = "\ufffd"   # what a detokenizer leaves for a broken UTF-8 sequence


def has_control_characters(text: str) -> bool:
    return any(
        ch == REPLACEMENT_CHARACTER
        or (unicodedata.category(ch) == "Cc" and ch not in ALLOWED_CONTROLS)
        for ch in text)


@rule
def drop_control_characters(text: str, site: CompletionSite, multiline: bool) -> str:
    return "" if has_control_characters(text) else text
