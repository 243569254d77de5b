"""What the tree says around the cursor: statement boundaries, the scope chain, import lines."""

from __future__ import annotations

import re
from typing import NamedTuple

from tree_sitter import Node

from .languages import LanguageSpec
from .lines import indentation, last_text_before, line_end, line_start, text_bounds

# A signature longer than this is cut to its first line: it is context, not the point.
MAX_HEADER_LINES = 12

# Scope types that only count as scopes when they have a body of their own
# (`struct point *p` in a parameter list is a type, not an enclosing scope).
_NEED_BODY = frozenset({"struct_specifier", "union_specifier", "enum_specifier", "class_specifier"})
# Conditionals that wrap a whole C header (include guards) are looked through for #includes.
_IMPORT_WRAPPERS = frozenset({"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif"})
_PYTHON_HEADER = re.compile(rb"(?:async[ \t]+)?(?:def|class)[ \t]")


class LineRange(NamedTuple):
    """Whole lines of the source: [start, end) in bytes, `end` just past the last newline."""

    start: int
    end: int


def body_of(node: Node, spec: LanguageSpec) -> Node | None:
    body = node.child_by_field_name("body")
    if body is None and spec.body_types:
        for child in node.named_children:
            if child.type in spec.body_types:
                return child
    return body


def _is_scope(node: Node, spec: LanguageSpec) -> bool:
    if node.type not in spec.scope_types:
        return False
    if node.type == "arrow_function":  # `x => x + 1` has no statements to be inside of
        body = node.child_by_field_name("body")
        return body is not None and body.type == "statement_block"
    if node.type in _NEED_BODY:
        return node.child_by_field_name("body") is not None
    return True


# -- window boundaries ---------------------------------------------------------------------------


# Boundary quality: a statement line is good, one whose statement sits in a block that also holds
# the cursor is better (a window starting inside a sibling function would open with a stray body).
NOT_A_BOUNDARY, BOUNDARY, ENCLOSING_BOUNDARY = 0, 1, 2


def _boundary(node: Node, spec: LanguageSpec, cursor: int) -> int:
    parent = node.parent
    if parent is None or parent.parent is None:
        return ENCLOSING_BOUNDARY
    if parent.type not in spec.statement_parents:
        return NOT_A_BOUNDARY
    return ENCLOSING_BOUNDARY if parent.start_byte <= cursor <= parent.end_byte else BOUNDARY


def starts_statement(source: bytes, root: Node, spec: LanguageSpec, start: int, cursor: int) -> int:
    """Does the line starting at `start` open a statement or definition (not continue one)?"""
    first, last = text_bounds(source, start, line_end(source, start))
    if first == last:
        return NOT_A_BOUNDARY
    node = root.descendant_for_byte_range(first, first)
    if node is None or node.start_byte != first:
        return NOT_A_BOUNDARY
    while True:  # the largest node that starts here
        parent = node.parent
        if parent is None or parent.parent is None or parent.start_byte != first:
            break
        node = parent
    return _boundary(node, spec, cursor) if node.is_named else NOT_A_BOUNDARY


def ends_statement(source: bytes, root: Node, spec: LanguageSpec, start: int, end: int, cursor: int) -> int:
    """Does the line [start, end) finish a statement or definition?"""
    first, last = text_bounds(source, start, end)
    if first == last:
        return NOT_A_BOUNDARY
    node = root.descendant_for_byte_range(last - 1, last)
    if node is None or node.end_byte != last:
        return NOT_A_BOUNDARY
    while True:  # the largest node that ends here
        parent = node.parent
        if parent is None or parent.parent is None or parent.end_byte != last:
            break
        node = parent
    return _boundary(node, spec, cursor) if node.is_named else NOT_A_BOUNDARY


# -- scope chain ---------------------------------------------------------------------------------


def scope_nodes(source: bytes, root: Node, spec: LanguageSpec, cursor: int) -> list[Node]:
    """Enclosing class/function/impl… nodes of the cursor, outermost first."""
    cursor_line = line_start(source, cursor)
    line_text, line_text_end = text_bounds(source, cursor_line, line_end(source, cursor_line))
    max_indent = None
    if line_text < cursor:
        # the character before the cursor belongs to the same scopes as the cursor
        node = root.named_descendant_for_byte_range(cursor - 1, cursor)
    elif line_text < line_text_end:
        # cursor in the indentation of a line: it belongs to that line's statement
        node = root.named_descendant_for_byte_range(line_text, line_text)
    elif spec.indent_scoped:
        # a blank line after a Python block lies outside the block's node: place it by its column
        anchor = last_text_before(source, cursor_line)
        if anchor == 0:
            return []
        node = root.named_descendant_for_byte_range(anchor - 1, anchor)
        max_indent = cursor - cursor_line
    else:
        node = root.named_descendant_for_byte_range(cursor, cursor)
    chain = []
    while node is not None:
        if _is_scope(node, spec) and node.start_byte < cursor:
            if max_indent is None or node.start_point[1] < max_indent:
                chain.append(node)
        node = node.parent
    chain.reverse()
    return chain


def header_range(source: bytes, spec: LanguageSpec, node: Node) -> LineRange:
    """The lines of a definition's header: from its first line to the line where its body opens
    (Python `:`, `{` on the signature line); a body opening on a line of its own is left out."""
    first = node
    parent = node.parent
    if parent is not None and parent.type in spec.wrapper_types and parent.type != "decorated_definition":
        first = parent  # `template <…>` / `export` belong to the header; decorators do not
    start = line_start(source, first.start_byte)
    body = body_of(node, spec)
    last = node.start_byte
    if body is not None:
        previous = body.prev_sibling
        while previous is not None and previous.is_extra:  # a comment between `:` and the body
            previous = previous.prev_sibling
        last = previous.end_byte - 1 if previous is not None else body.start_byte
        last = max(last, node.start_byte)
    end = line_end(source, last)
    if source.count(b"\n", start, end) > MAX_HEADER_LINES:
        end = line_end(source, node.start_byte)
    return LineRange(start, end)


def indented_headers(source: bytes, cursor: int, max_lines: int = 2000) -> list[LineRange]:
    """Python scope headers found by indentation alone, for text the parser could not make sense of."""
    cursor_line = line_start(source, cursor)
    first, _ = text_bounds(source, cursor_line, line_end(source, cursor_line))
    limit = min(first, cursor) - cursor_line  # the cursor line's indentation (up to the cursor)
    headers: list[LineRange] = []
    end = cursor_line
    for _ in range(max_lines):
        if end == 0 or limit == 0:
            break
        start = line_start(source, end - 1)
        text_first, text_last = text_bounds(source, start, end)
        if text_first < text_last:
            indent = indentation(source, start)
            if indent < limit:
                if _PYTHON_HEADER.match(source, text_first):
                    headers.append(LineRange(start, end))
                limit = indent
        end = start
    headers.reverse()
    return headers


# -- imports and the node at the cursor ----------------------------------------------------------


def import_ranges(source: bytes, root: Node, spec: LanguageSpec, before: int) -> list[LineRange]:
    """Whole lines of file-level imports that end before `before`, in file order."""
    ranges: list[LineRange] = []
    _collect_imports(source, root, spec, before, ranges, depth=0)
    return ranges


def _collect_imports(source, parent, spec, before, ranges, depth):
    for child in parent.children:
        if child.start_byte >= before:
            return
        kind = child.type
        if kind in spec.import_types:
            start = line_start(source, child.start_byte)
            end = line_end(source, max(child.end_byte - 1, child.start_byte))
            if end > before:
                return
            if ranges and start < ranges[-1].end:  # two imports on one line: one range
                ranges[-1] = LineRange(ranges[-1].start, max(end, ranges[-1].end))
            else:
                ranges.append(LineRange(start, end))
        elif kind in _IMPORT_WRAPPERS and depth < 4:
            _collect_imports(source, child, spec, before, ranges, depth + 1)


_WORD_END = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")


def cursor_node_type(source: bytes, root: Node, cursor: int) -> str:
    """Type of the smallest named node spanning the cursor.

    tree-sitter's lookup of an empty range finds a node with start <= cursor < end, so it misses
    a node that ends at the cursor and reports one that merely starts there (`|// next`). A node
    ending at the cursor spans it when typing there would extend it: a word (`foo|`) or a line
    comment (`# note|`); not a closed string or bracket (`"abc"|`), where the cursor is outside.
    """
    inside = root.named_descendant_for_byte_range(cursor, cursor)
    if inside is not None and inside.start_byte >= cursor:
        inside = None
    if cursor > 0:
        before = root.named_descendant_for_byte_range(cursor - 1, cursor)
        if before is not None and before.end_byte == cursor and _open_at_end(source, before):
            if inside is None or before.end_byte - before.start_byte < inside.end_byte - inside.start_byte:
                return before.type
        if inside is None and cursor < len(source):
            inside = root.named_descendant_for_byte_range(cursor - 1, cursor + 1)
    return inside.type if inside is not None else root.type


def _open_at_end(source: bytes, node: Node) -> bool:
    if "comment" in node.type:
        return not source.startswith(b"*/", node.end_byte - 2)
    return source[node.end_byte - 1] in _WORD_END
