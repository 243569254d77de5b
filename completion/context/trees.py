"""One tree-sitter tree per open document, kept current by incremental re-parsing.

Each `update` finds the single edit that turns the old text into the new one (longest common prefix
and suffix of the UTF-8 bytes), tells tree-sitter about it with `Tree.edit`, and re-parses with the
old tree so only the damaged region is re-lexed. Every update yields a new immutable
`ParsedDocument`, so a request that took a snapshot keeps a tree that matches its text.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

from tree_sitter import Parser, Tree

from .languages import LANGUAGES, language_for, new_parser
from .paths import display_path
from .recent import RecentChunks

if TYPE_CHECKING:
    from .definitions import DefinitionIndex

# Above this size a document is kept as plain text: parsing it would stall the server for seconds.
MAX_PARSED_BYTES = 16 << 20

# Lone surrogates can reach us from JSON; "surrogatepass" keeps the bytes <-> text mapping exact.
ENCODING_ERRORS = "surrogatepass"


def encode(text: str) -> bytes:
    return text.encode("utf-8", ENCODING_ERRORS)


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8", ENCODING_ERRORS)
    except UnicodeDecodeError:  # a slice that cuts a character: never expected, never fatal
        return data.decode("utf-8", "replace")


@dataclass(eq=False)
class ParsedDocument:
    """An immutable snapshot: text, its UTF-8 bytes, and the tree (None for unknown languages)."""

    uri: str
    language: str | None
    text: str
    tree: Tree | None
    source: bytes = field(repr=False)
    version: int = 0

    @cached_property
    def is_ascii(self) -> bool:
        return self.text.isascii()

    def byte_offset(self, char_offset: int) -> int:
        """UTF-8 byte offset of a code-point offset (tree-sitter counts bytes)."""
        if self.is_ascii:
            return char_offset
        return len(encode(self.text[:char_offset]))

    @cached_property
    def definitions(self) -> "DefinitionIndex":
        """Top-level and class-level definitions, built on first use and kept for this version."""
        from .definitions import build_definition_index

        return build_definition_index(self)


class SnippetPlan(NamedTuple):
    line: int                 # the cursor line they were chosen for
    budget: int               # the snippet budget they were chosen within
    snippets: list            # [Snippet]


class Edit(NamedTuple):
    start_byte: int
    old_end_byte: int
    new_end_byte: int
    start_point: tuple[int, int]
    old_end_point: tuple[int, int]
    new_end_point: tuple[int, int]


def _first_difference(a: bytes, b: bytes, limit: int, from_end: bool) -> int:
    """Length of the common prefix (or suffix) of a and b, at most `limit`.

    Compares growing chunks with memcmp-backed slice equality, then bisects the first unequal
    chunk, so a 5 MB document costs a few C-level passes instead of a Python loop per byte.
    """
    la, lb = len(a), len(b)

    def equal(lo: int, hi: int) -> bool:
        if from_end:
            return a[la - hi : la - lo] == b[lb - hi : lb - lo]
        return a[lo:hi] == b[lo:hi]

    lo, step = 0, 256
    while lo < limit:
        hi = min(lo + step, limit)
        if not equal(lo, hi):
            break
        lo, step = hi, step * 2
    else:
        return limit
    # equal up to lo, a difference somewhere in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if equal(lo, mid):
            lo = mid
        else:
            hi = mid
    return lo


def _is_continuation(data: bytes, index: int) -> bool:
    return index < len(data) and (data[index] & 0xC0) == 0x80


def _point(data: bytes, offset: int) -> tuple[int, int]:
    """(row, byte column) of a byte offset, as tree-sitter counts them."""
    row = data.count(b"\n", 0, offset)
    return row, offset - (data.rfind(b"\n", 0, offset) + 1)


def minimal_edit(old: bytes, new: bytes) -> Edit | None:
    """The single replaced range that turns `old` into `new`; None when they are equal."""
    if old == new:
        return None
    shortest = min(len(old), len(new))
    prefix = _first_difference(old, new, shortest, from_end=False)
    # keep edit boundaries on character boundaries
    while prefix > 0 and (_is_continuation(old, prefix) or _is_continuation(new, prefix)):
        prefix -= 1
    suffix = _first_difference(old, new, shortest - prefix, from_end=True)
    while suffix > 0 and (_is_continuation(old, len(old) - suffix) or _is_continuation(new, len(new) - suffix)):
        suffix -= 1
    old_end, new_end = len(old) - suffix, len(new) - suffix
    start_point = _point(old, prefix)
    old_end_point = (
        start_point[0] + old.count(b"\n", prefix, old_end),
        old_end - (old.rfind(b"\n", 0, old_end) + 1),
    )
    new_end_point = (
        start_point[0] + new.count(b"\n", prefix, new_end),
        new_end - (new.rfind(b"\n", 0, new_end) + 1),
    )
    return Edit(prefix, old_end, new_end, start_point, old_end_point, new_end_point)


class DocumentTrees:
    """One tree-sitter tree per open document, updated incrementally."""

    def __init__(self, workspace_roots: list[str] | None = None) -> None:
        self._documents: dict[str, ParsedDocument] = {}
        self._parsers: dict[str, Parser] = {}
        self._lock = threading.RLock()  # parsers are not thread-safe; handlers may run in threads
        # Folders (paths or file:// URIs) that display paths are made relative to.
        self.workspace_roots: list[str] = list(workspace_roots or [])
        # Learned bytes-per-token ratios, per language (see budget.TokenMeter).
        self.bytes_per_token: dict[str | None, float] = {}
        # Where each document's last prefix window started (a byte offset): keeping it while the
        # user types keeps the prompt's prefix stable, so the engine reuses its KV cache.
        self.prefix_anchors: dict[str, int] = {}
        # The snippets each document's prompt carries, and where they were chosen (extract.py).
        self.snippet_plans: dict[str, SnippetPlan] = {}
        # Recently edited / viewed / yanked chunks, for the prompt's snippets (see recent.py).
        self.recent = RecentChunks()

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self, uri: str, language: str | None, text: str) -> None:
        if language not in LANGUAGES:
            language = language_for(language, uri)
        source = encode(text)
        with self._lock:
            tree = self._parse(language, source, None)
            self._documents[uri] = ParsedDocument(uri, language, text, tree, source)
            self.recent.add_lines_around(uri, source, 0, "viewed")   # an opened file shows its top

    def update(self, uri: str, text: str, *, remember: bool = True) -> None:
        """Replace the document's full text, re-parsing only what the edit touched. `remember`:
        keep the lines around the edit among the recent chunks."""
        with self._lock:
            old = self._documents.get(uri)
            if old is None:
                self.open(uri, None, text)
                return
            if text == old.text:
                return
            source = encode(text)
            edit = minimal_edit(old.source, source) if len(source) <= MAX_PARSED_BYTES else None
            if remember and edit is not None:
                self.recent.add_lines_around(uri, source, edit.start_byte, "edited")
            tree = None
            if old.language is not None:
                previous = None
                if old.tree is not None and len(source) <= MAX_PARSED_BYTES:
                    if edit is not None:
                        # edit a copy: the old snapshot may still be in use by a request
                        previous = old.tree.copy()
                        previous.edit(*edit)
                tree = self._parse(old.language, source, previous)
            self._documents[uri] = ParsedDocument(uri, old.language, text, tree, source, old.version + 1)

    @contextmanager
    def as_if(self, uri: str, text: str):
        """The document as if its text were `text`, for one synchronous block (a pre-fetch builds
        the context of a future request this way); the real snapshot and its plans return after."""
        with self._lock:
            real = self._documents.get(uri)
            if real is None:
                raise KeyError(f"unknown document {uri}")
            kept = [(plans, plans.get(uri)) for plans in (self.prefix_anchors, self.snippet_plans)]
            self.update(uri, text, remember=False)
            try:
                yield self._documents[uri]
            finally:
                self._documents[uri] = real
                for plans, plan in kept:
                    if plan is None:
                        plans.pop(uri, None)
                    else:
                        plans[uri] = plan

    def close(self, uri: str) -> None:
        with self._lock:
            self._documents.pop(uri, None)
            self.prefix_anchors.pop(uri, None)
            self.snippet_plans.pop(uri, None)

    # -- queries ---------------------------------------------------------------------------------

    def get(self, uri: str) -> ParsedDocument | None:
        return self._documents.get(uri)

    def documents(self) -> list[ParsedDocument]:
        return list(self._documents.values())

    def display_path(self, uri: str) -> str:
        return display_path(uri, self.workspace_roots)

    # -- internals -------------------------------------------------------------------------------

    def _parse(self, language: str | None, source: bytes, previous: Tree | None) -> Tree | None:
        if language is None or len(source) > MAX_PARSED_BYTES:
            return None
        parser = self._parsers.get(language)
        if parser is None:
            parser = self._parsers[language] = new_parser(language)
        if previous is None:
            return parser.parse(source)
        return parser.parse(source, previous)
