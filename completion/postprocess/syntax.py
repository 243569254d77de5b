"""Per-language lexical facts: how strings and comments are written, and how blocks are shaped.

Only what the rules need to tell code from text: the post-processor never parses, it scans.
"""
from __future__ import annotations

from dataclasses import dataclass

INDENT = "indent"   # blocks are made by indentation (Python)
BRACE = "brace"     # blocks are made by {} (C-like languages)


@dataclass(frozen=True)
class Quote:
    open: str
    close: str
    escapes: bool = True        # a backslash escapes the next character
    spans_lines: bool = False   # False: an unterminated literal ends at the newline (error recovery)


@dataclass(frozen=True)
class Syntax:
    family: str
    quotes: tuple[Quote, ...]               # longest opening first
    line_comments: tuple[str, ...] = ()
    block_comment: tuple[str, str] | None = None
    # Rust: 'a is a lifetime, 'a' a char; only the second is a literal.
    quote_may_be_lifetime: bool = False


DQ, SQ = Quote('"', '"'), Quote("'", "'")
C_COMMENTS = {"line_comments": ("//",), "block_comment": ("/*", "*/")}

PYTHON = Syntax(INDENT, (Quote('"""', '"""', spans_lines=True), Quote("'''", "'''", spans_lines=True),
                         DQ, SQ), line_comments=("#",))
JAVASCRIPT = Syntax(BRACE, (DQ, SQ, Quote("`", "`", spans_lines=True)), **C_COMMENTS)
GO = Syntax(BRACE, (DQ, SQ, Quote("`", "`", escapes=False, spans_lines=True)), **C_COMMENTS)
RUST = Syntax(BRACE, (Quote('r#"', '"#', escapes=False, spans_lines=True),
                      Quote('r"', '"', escapes=False, spans_lines=True),
                      Quote('"', '"', spans_lines=True), SQ),
              quote_may_be_lifetime=True, **C_COMMENTS)
JAVA = Syntax(BRACE, (Quote('"""', '"""', spans_lines=True), DQ, SQ), **C_COMMENTS)
C_LIKE = Syntax(BRACE, (DQ, SQ), **C_COMMENTS)

SYNTAX_BY_LANGUAGE = {
    "python": PYTHON,
    "javascript": JAVASCRIPT, "typescript": JAVASCRIPT, "tsx": JAVASCRIPT, "jsx": JAVASCRIPT,
    "javascriptreact": JAVASCRIPT, "typescriptreact": JAVASCRIPT,   # VS Code's language ids
    "go": GO, "rust": RUST, "java": JAVA, "c": C_LIKE, "cpp": C_LIKE,
}


def syntax_for(language: str | None, prefix: str) -> Syntax:
    """Known languages get their table. Unknown text gets plain quotes and no comments (a '#'
    may be a colour, a '//' a URL), and is treated as brace-shaped only if the prefix has braces."""
    known = SYNTAX_BY_LANGUAGE.get((language or "").lower())
    if known is not None:
        return known
    family = BRACE if "{" in prefix else INDENT
    return Syntax(family, (DQ, SQ))
