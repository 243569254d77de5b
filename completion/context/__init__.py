"""Tree-sitter context for completions: languages, incremental trees, windows, scopes, snippets.

    trees = DocumentTrees()
    trees.open(uri, language_for(language_id, path), text)
    trees.update(uri, new_text)                       # on every didChange
    context = build_context(trees, uri, cursor, count_tokens, ContextBudget())
"""

from .budget import TokenMeter
from .definitions import Definition, DefinitionIndex
from .extract import CodeContext, ContextBudget, build_context, cursor_line
from .languages import LANGUAGES, SPECS, LanguageSpec, grammar, language_for
from .paths import display_path
from .snippets import Snippet
from .trees import DocumentTrees, Edit, ParsedDocument, minimal_edit

__all__ = [
    "LANGUAGES",
    "SPECS",
    "CodeContext",
    "ContextBudget",
    "Definition",
    "DefinitionIndex",
    "DocumentTrees",
    "Edit",
    "LanguageSpec",
    "ParsedDocument",
    "Snippet",
    "TokenMeter",
    "build_context",
    "cursor_line",
    "display_path",
    "grammar",
    "language_for",
    "minimal_edit",
]
