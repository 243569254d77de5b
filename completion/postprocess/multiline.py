"""Single- or multi-line: how much the model may write at this cursor.

Decided in this order (first match wins):

| situation at the cursor                                                  | mode   |
|--------------------------------------------------------------------------|--------|
| inside a string literal or comment (lexer state, or cursor_node says so) | single |
| text after the cursor other than closing brackets, `;`, `,`              | single |
| Python line continued with a backslash (cursor line or the one above)   | single |
| inside an unclosed ( or [ (argument list, literal); Python: any bracket  | single |
| cursor line empty or whitespace only (a statement may start here)        | multi  |
| cursor line ends a block opener: `{` (brace languages) or, in Python,    | multi  |
|   `:` on a def/class/if/for/while/with/try/... line                      |        |
| cursor_node is a block, body, function or class node                     | multi  |
| anything else (finishing an expression or statement)                     | single |
"""
from __future__ import annotations

import re

from .completion_site import CompletionSite
from .context import SiteContext, context_of
from .lexer import MASK
from .syntax import INDENT

AFTER_CURSOR_OK = set(")]};, \t")

PYTHON_COMPOUND_HEADER = re.compile(
    r"\s*(async\s+)?(def|class|if|elif|else|for|while|try|except|finally|with|match|case)\b")

LITERAL_NODES = {"char_literal", "character_literal", "rune_literal", "escape_sequence", "text_block"}

BLOCK_NODES = {
    "block", "statement_block", "compound_statement", "declaration_list", "field_declaration_list",
    "class_body", "interface_body", "enum_body", "constructor_body", "function_definition",
    "class_definition", "decorated_definition", "function_declaration", "method_declaration",
    "method_definition", "class_declaration", "function_item", "impl_item", "trait_item", "mod_item",
}


def is_multiline(site: CompletionSite) -> bool:
    try:
        return _decide(context_of(site), site.cursor_node)
    except Exception:   # a wrong guess costs a shorter completion, never a failed request
        return False


def _decide(ctx: SiteContext, cursor_node: str | None) -> bool:
    if not ctx.cursor_state.in_code or _is_literal_node(cursor_node):
        return False
    if not set(ctx.line_suffix) <= AFTER_CURSOR_OK:
        return False
    code_line = ctx.masked_cursor_line.replace(MASK, " ").rstrip()
    if ctx.family == INDENT and _continues_previous_line(ctx, code_line):
        return False
    if ctx.opens and (ctx.opens[-1].char in "([" or ctx.family == INDENT):
        return False
    if not code_line.strip():
        return True
    if ends_block_opener(ctx, code_line):
        return True
    return _is_block_node(cursor_node)


def ends_block_opener(ctx: SiteContext, masked_line: str) -> bool:
    """Does this (masked) line open a block whose body starts on the next line?"""
    code_line = masked_line.replace(MASK, " ").rstrip()
    if ctx.family == INDENT:
        # `:` also ends lambdas and annotations; a block needs a compound statement header,
        # or the `):` that ends a header spread over several lines.
        return code_line.endswith(":") and (PYTHON_COMPOUND_HEADER.match(code_line) is not None
                                            or code_line.lstrip()[:1] in (")", "]"))
    return code_line.endswith("{")


def _continues_previous_line(ctx: SiteContext, code_line: str) -> bool:
    """A backslash at the end of the cursor line, or of the line above an empty cursor line."""
    if code_line.endswith("\\"):
        return True
    previous = ctx.prefix_lines[-2] if len(ctx.prefix_lines) > 1 else ""
    return not code_line.strip() and previous.rstrip().endswith("\\")


def _is_literal_node(node: str | None) -> bool:
    return bool(node) and ("string" in node or "comment" in node or node in LITERAL_NODES)


def _is_block_node(node: str | None) -> bool:
    return bool(node) and (node in BLOCK_NODES or node.endswith("_block") or node.endswith("body"))
