"""Discard a completion that is one thing over and over: a character (`))))))))`, `________`)
or a short run of tokens (`x = 1 x = 1 x = 1 x = 1`). A model stuck in a loop writes these;
real code repeats too, but not as the whole of what it says.

Two exceptions to the character rule: digits (`0b11111111`, `00000000` are numbers) and text
inside a comment or string, where `----------------` is decoration someone asked for.
"""
from ..completion_site import CompletionSite
from ..context import context_of
from .rule import rule

MIN_REPEATS_OF_CHARACTER = 8
MIN_REPEATS_OF_TOKENS = 4
MIN_TOKENS = 8
LONGEST_REPEATED_UNIT = 4   # tokens


def is_repeated_character(text: str) -> bool:
    squeezed = "".join(text.split())
    return (len(squeezed) >= MIN_REPEATS_OF_CHARACTER and len(set(squeezed)) == 1
            and not squeezed[0].isdigit())


def is_repeated_tokens(text: str) -> bool:
    tokens = text.split()
    if len(tokens) < MIN_TOKENS:
        return False
    for unit in range(1, LONGEST_REPEATED_UNIT + 1):
        repeats, rest = divmod(len(tokens), unit)
        if not rest and repeats >= MIN_REPEATS_OF_TOKENS and tokens == tokens[:unit] * repeats:
            return True
    return False


@rule
def drop_repetitive_junk(text: str, site: CompletionSite, multiline: bool) -> str:
    if is_repeated_tokens(text):
        return ""
    if is_repeated_character(text) and context_of(site).cursor_state.in_code:
        return ""
    return text
