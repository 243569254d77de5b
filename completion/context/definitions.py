"""Index of each document's top-level and class-level definitions, for cross-file snippets.

Built once per document version (lazily, on `ParsedDocument.definitions`) by walking the top of the
tree: no query runs over the whole file, and bodies are never visited except to list members.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Callable, Iterator

from tree_sitter import Node

from .languages import SPECS, LanguageSpec
from .lines import line_end, line_start, text_bounds
from .syntax import body_of, header_range
from .trees import decode as _decode

if TYPE_CHECKING:
    from .trees import ParsedDocument

# A definition this short is shown whole; a longer one by its signature (or class outline).
SHORT_DEFINITION_LINES = 8
SHORT_DEFINITION_BYTES = 1200
OUTLINE_MAX_LINES = 24
_OUTLINE_KINDS = frozenset({"class", "struct", "enum", "interface", "trait", "impl"})
# At class level only behaviour and nested types are worth a snippet; fields are mostly noise.
_MEMBER_KINDS = frozenset({"function", "method", "constructor", "class", "struct", "enum", "interface", "trait", "type"})
_MAX_DEPTH = 4


class Definition:
    """A named definition; its shown text is rendered on first use (most are never shown)."""

    __slots__ = ("name", "kind", "start", "end", "_render", "_shown")

    def __init__(self, name: str, kind: str, start: int, end: int, render: Callable[[], tuple[str, bool]]) -> None:
        self.name = name
        self.kind = kind
        self.start = start  # byte range of its lines in the source (decorators/export included)
        self.end = end
        self._render = render
        self._shown: tuple[str, bool] | None = None

    @property
    def text(self) -> str:
        """The whole definition when short, else its signature or outline; container header first."""
        return self._rendered()[0]

    @property
    def complete(self) -> bool:
        """Whether `text` holds the whole definition."""
        return self._rendered()[1]

    def _rendered(self) -> tuple[str, bool]:
        if self._shown is None:
            self._shown = self._render()
        return self._shown

    def __repr__(self) -> str:
        return f"Definition({self.name!r}, {self.kind!r}, {self.start}..{self.end})"


class DefinitionIndex:
    def __init__(self, definitions: list[Definition]) -> None:
        self.by_name: dict[str, list[Definition]] = {}
        for definition in definitions:
            self.by_name.setdefault(definition.name, []).append(definition)
        self.names = sorted(self.by_name)

    def __len__(self) -> int:
        return sum(len(found) for found in self.by_name.values())

    def lookup(self, name: str) -> list[Definition]:
        return self.by_name.get(name, [])

    def names_with_prefix(self, prefix: str, limit: int) -> list[str]:
        found = []
        index = bisect_left(self.names, prefix)
        while index < len(self.names) and len(found) < limit and self.names[index].startswith(prefix):
            found.append(self.names[index])
            index += 1
        return found


EMPTY_INDEX = DefinitionIndex([])


def build_definition_index(document: "ParsedDocument") -> DefinitionIndex:
    if document.tree is None or document.language not in SPECS:
        return EMPTY_INDEX
    builder = _IndexBuilder(document.source, SPECS[document.language])
    builder.walk(document.tree.root_node.children, depth=0, holder=None)
    return DefinitionIndex(builder.definitions)


class _Once:
    """A call made at most once; definitions sharing a node (Go `type (A …; B …)`) share it."""

    def __init__(self, function, *args) -> None:
        self._function, self._args, self._result = function, args, None

    def __call__(self):
        if self._result is None:
            self._result = self._function(*self._args)
            self._args = None
        return self._result


class _IndexBuilder:
    def __init__(self, source: bytes, spec: LanguageSpec) -> None:
        self.source = source
        self.spec = spec
        self.definitions: list[Definition] = []

    def text(self, node: Node) -> str:
        return _decode(self.source[node.start_byte : node.end_byte])

    def walk(self, children: list[Node], depth: int, holder: tuple[Node, Node] | None) -> None:
        spec = self.spec
        for outer in children:
            node = unwrap(outer, spec)
            if node.type in spec.namespace_types and holder is None and depth < _MAX_DEPTH:
                self.walk(list(members(node, spec)), depth + 1, holder)
                continue
            kind = spec.definition_types.get(node.type)
            if kind is None or (holder is not None and kind not in _MEMBER_KINDS):
                continue
            names = self.names(node)
            if not names:
                continue
            if kind == "declaration":
                kind = "function" if _declares_function(node) else "variable"
            elif holder is not None and kind == "function":
                kind = "method"
            start = line_start(self.source, outer.start_byte)
            end = line_end(self.source, max(outer.end_byte - 1, outer.start_byte))
            render = _Once(self.render, outer, node, kind, start, end, holder)
            for name in names:
                self.definitions.append(Definition(name, kind, start, end, render))
            if node.type in spec.member_holders and holder is None and depth < _MAX_DEPTH:
                self.walk(list(members(node, spec)), depth + 1, (outer, node))

    def render(self, outer: Node, node: Node, kind: str, start: int, end: int,
               holder: tuple[Node, Node] | None) -> tuple[str, bool]:
        shown, complete = self.snippet_text(outer, node, kind, start, end)
        if holder is not None:  # a method is shown inside its class header
            shown = self.header_text(*holder) + "\n" + shown
        return shown, complete

    # -- names -----------------------------------------------------------------------------------

    def names(self, node: Node) -> list[str]:
        kind = node.type
        if kind == "expression_statement":  # Python `NAME = …`
            assignment = node.named_children[0] if node.named_child_count else None
            if assignment is not None and assignment.type == "assignment":
                left = assignment.child_by_field_name("left")
                if left is not None and left.type == "identifier":
                    return [self.text(left)]
            return []
        if kind in ("lexical_declaration", "variable_declaration"):  # JS/TS `const a = …, b = …`
            names = []
            for declarator in node.named_children:
                name = declarator.child_by_field_name("name") if declarator.type == "variable_declarator" else None
                if name is not None and name.type == "identifier":
                    names.append(self.text(name))
            return names
        if kind in ("type_declaration", "const_declaration", "var_declaration"):  # Go, possibly grouped
            return [self.text(name) for spec_node in _go_specs(node) for name in spec_node.children_by_field_name("name")]
        if kind == "impl_item":  # `impl<T> Trait for path::Type<T>` is filed under Type
            target = node.child_by_field_name("type")
            if target is None:
                return []
            return [self.text(target).split("<", 1)[0].rsplit("::", 1)[-1].strip()]
        name = node.child_by_field_name("name")
        if name is not None:
            return [self.text(name)]
        names = []
        for declarator in node.children_by_field_name("declarator"):  # C/C++ declarator chains
            innermost = _innermost_declarator(declarator)
            if innermost is not None:
                names.append(self.text(innermost))
        return names

    # -- shown text ------------------------------------------------------------------------------

    def header_text(self, outer: Node, node: Node) -> str:
        start = line_start(self.source, outer.start_byte)
        end = header_range(self.source, self.spec, node).end
        return _decode(self.source[start:end]).rstrip("\r\n")

    def snippet_text(self, outer: Node, node: Node, kind: str, start: int, end: int) -> tuple[str, bool]:
        """What a snippet shows, and whether that is the whole definition."""
        lines = self.source.count(b"\n", start, end - 1) + 1
        if lines <= SHORT_DEFINITION_LINES and end - start <= SHORT_DEFINITION_BYTES:
            return _decode(self.source[start:end]).rstrip("\r\n"), True
        header = self.header_text(outer, node)
        if kind not in _OUTLINE_KINDS or body_of(node, self.spec) is None:
            return header, False
        return self.outline(header, node, end), False

    def outline(self, header: str, node: Node, end: int) -> str:
        """Header, one line (or signature) per member, and the closing brace line if there is one."""
        parts = [header]
        count = header.count("\n") + 1
        for member_outer in members(node, self.spec):
            if count >= OUTLINE_MAX_LINES:
                break
            if "comment" in member_outer.type:
                continue
            member = unwrap(member_outer, self.spec)
            if body_of(member, self.spec) is not None:
                text = self.header_text(member_outer, member)
            elif member_outer.start_point[0] == member_outer.end_point[0]:  # a one-line field
                start = line_start(self.source, member_outer.start_byte)
                text = _decode(self.source[start : line_end(self.source, member_outer.start_byte)]).rstrip("\r\n")
            else:  # the first line of a multi-line statement (a docstring…) would be a fragment
                continue
            parts.append(text)
            count += text.count("\n") + 1
        last_line = line_start(self.source, end - 1)
        first, last = text_bounds(self.source, last_line, end)
        if self.source[first:last] in (b"}", b"};", b"end"):
            parts.append(_decode(self.source[last_line:end]).rstrip("\r\n"))
        return "\n".join(parts)


def unwrap(node: Node, spec: LanguageSpec) -> Node:
    """The declaration inside decorator/export/template wrappers."""
    while node.type in spec.wrapper_types:
        inner = (
            node.child_by_field_name("definition")
            or node.child_by_field_name("declaration")
            or (node.named_children[-1] if node.named_child_count else None)
        )
        if inner is None or inner.type == "comment":
            break
        node = inner
    return node


def members(node: Node, spec: LanguageSpec) -> Iterator[Node]:
    """Named children of a definition's body (Java enum bodies nest their members one deeper)."""
    body = body_of(node, spec)
    container = body if body is not None else node
    for child in container.named_children:
        if child.type in spec.body_types:
            yield from child.named_children
        else:
            yield child


def _go_specs(node: Node) -> Iterator[Node]:
    for child in node.named_children:
        if child.type.endswith("_spec_list"):
            yield from (spec for spec in child.named_children if spec.type.endswith("_spec"))
        elif child.type.endswith("_spec") or child.type == "type_alias":
            yield child


def _innermost_declarator(node: Node) -> Node | None:
    for _ in range(16):
        inner = node.child_by_field_name("declarator")
        if inner is None and node.type in ("qualified_identifier", "template_function"):
            inner = node.child_by_field_name("name")
        if inner is None:
            break
        node = inner
    if node.type in ("identifier", "field_identifier", "type_identifier", "destructor_name", "operator_name"):
        return node
    return None


def _declares_function(node: Node) -> bool:
    for declarator in node.children_by_field_name("declarator"):
        for _ in range(16):
            if declarator.type == "function_declarator":
                return True
            inner = declarator.child_by_field_name("declarator")
            if inner is None:
                break
            declarator = inner
    return False


