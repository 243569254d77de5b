"""Single-line mode: keep the first line only. A first line with nothing on it means the model
wanted to go on below, which single-line mode does not allow: discard."""
from ..completion_site import CompletionSite
from ..lines import is_blank
from .rule import rule


@rule
def cut_to_first_line(text: str, site: CompletionSite, multiline: bool) -> str:
    if multiline:
        return text
    first_line = text.split("\n", 1)[0]
    return "" if is_blank(first_line) else first_line
