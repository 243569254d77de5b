"""Discard a completion that only says what already follows the cursor: `)` before `)`, or on
an empty line the statement that the next line already holds.

Compared with whitespace collapsed, and only up to a token boundary: `return x` before
`return x + 1` is a copy, `re` before `return` is not.
"""
from ..completion_site import CompletionSite
from ..context import context_of
from ..lines import is_blank, normalize_space
from .rule import rule


@rule
def drop_duplicate_of_suffix(text: str, site: CompletionSite, multiline: bool) -> str:
    ctx = context_of(site)
    written = normalize_space(text)
    if not written:
        return text
    starts_own_line = is_blank(ctx.line_prefix) or is_blank(text.split("\n", 1)[0])
    if is_blank(ctx.line_suffix) and not starts_own_line:
        # It continues the cursor line and nothing follows on it: the next line is another
        # statement, and a prefix match with it would be a coincidence.
        return text
    following = normalize_space("\n".join(ctx.suffix_lines))
    if following.startswith(written) and _ends_at_token_boundary(written, following):
        return ""
    return text


def _ends_at_token_boundary(written: str, following: str) -> bool:
    if len(following) == len(written):
        return True
    return not (_is_word_char(written[-1]) and _is_word_char(following[len(written)]))


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"
