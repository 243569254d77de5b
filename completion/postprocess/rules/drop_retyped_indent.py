"""At a cursor that already sits after indentation, a first line that starts with whitespace
types the indentation again: drop that whitespace.

Editors auto-indent a new line, so `def f():⏎    ║` is where most completions are asked; a model
that answers `    return x` would leave the line indented twice, and VS Code's Tab would only
indent (it treats ghost text that starts with whitespace as indentation). Lines after the first
are left alone: they are written from column 0.
"""
from ..completion_site import CompletionSite
from .rule import rule


@rule
def drop_retyped_indent(text: str, site: CompletionSite, multiline: bool) -> str:
    if not site.line_prefix or site.line_prefix.strip(" \t"):
        return text   # the cursor is not (only) after indentation
    first, newline, rest = text.partition("\n")
    return first.lstrip(" \t") + newline + rest
