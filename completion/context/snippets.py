"""Definitions from other open documents of the symbols used near the cursor."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .budget import FILL, TokenMeter
from .definitions import Definition
from .lines import line_end, line_start

if TYPE_CHECKING:
    from .trees import DocumentTrees, ParsedDocument

LINES_ABOVE = 20
LINES_BELOW = 10
# Minified files have huge lines: never scan more than this many bytes on either side.
MAX_SCAN_BYTES = 6000
MAX_NAMES = 64
MAX_DEFINITIONS_PER_NAME = 3
# A word being typed (`make_wid|`) is looked up by prefix once it has this many characters.
MIN_TYPED_PREFIX = 3
MAX_TYPED_MATCHES = 3
SEPARATOR = "\n\n"

_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_WORD_BYTES = frozenset(bytes([byte]) for byte in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass
class Snippet:
    path: str  # display path of the other file
    text: str
    kind: str = "definition"


def nearby_names(source: bytes, cursor: int) -> tuple[list[str], str]:
    """Identifiers on the lines around the cursor, nearest first, and the word being typed."""
    start = line_start(source, cursor)
    for _ in range(LINES_ABOVE):
        if start == 0 or cursor - start > MAX_SCAN_BYTES:
            break
        start = line_start(source, start - 1)
    end = line_end(source, cursor)
    for _ in range(LINES_BELOW):
        if end >= len(source) or end - cursor > MAX_SCAN_BYTES:
            break
        end = line_end(source, end)
    start = max(start, cursor - MAX_SCAN_BYTES)
    end = min(end, cursor + MAX_SCAN_BYTES)
    before = _IDENTIFIER.findall(source, start, cursor)
    after = _IDENTIFIER.findall(source, cursor, end)
    typed = before[-1] if before and source[cursor - 1 : cursor] in _WORD_BYTES else b""
    # interleave outwards from the cursor: the n-th word before it, then the n-th word after it
    ordered: dict[bytes, None] = {}
    for index in range(max(len(before), len(after))):
        if index < len(before):
            ordered[before[-1 - index]] = None
        if index < len(after):
            ordered[after[index]] = None
        if len(ordered) >= MAX_NAMES:
            break
    return [word.decode("ascii") for word in ordered if len(word) > 1], typed.decode("ascii")


def collect_snippets(trees: "DocumentTrees", document: "ParsedDocument", cursor: int,
                     meter: TokenMeter, budget: int) -> list[Snippet]:
    if budget <= 0:
        return []
    others = [other for other in trees.documents() if other.uri != document.uri and other.tree is not None]
    if not others:
        return []
    names, typed = nearby_names(document.source, cursor)
    if len(typed) >= MIN_TYPED_PREFIX:
        # what the user is typing right now is the best guess of what they need
        matches = []
        for other in others:
            matches.extend(other.definitions.names_with_prefix(typed, MAX_TYPED_MATCHES))
        names = sorted(set(matches), key=len)[:MAX_TYPED_MATCHES] + names
    room = budget * meter.bytes_per_token * FILL
    chosen: list[tuple[ParsedDocument, Definition]] = []
    used = 0
    for name in names:
        for other in others:
            for definition in other.definitions.lookup(name)[:MAX_DEFINITIONS_PER_NAME]:
                if _already_shown(chosen, other, definition):
                    continue
                size = len(definition.text) + len(SEPARATOR)
                if used + size > room:
                    continue  # a smaller definition further down may still fit
                chosen.append((other, definition))
                used += size
        if used >= room:
            break
    return _confirm(trees, chosen, meter, budget)


def _already_shown(chosen, document, definition: Definition) -> bool:
    """Same record (grouped Go specs share one) or a member of a container shown whole."""
    for other, shown in chosen:
        if other is document and shown.start <= definition.start and definition.end <= shown.end:
            if shown.complete or (shown.start, shown.end) == (definition.start, definition.end):
                return True
    return False


def _confirm(trees, chosen, meter: TokenMeter, budget: int) -> list[Snippet]:
    """One real count of everything chosen; drop from the least relevant end until it fits."""
    while chosen:
        joined = SEPARATOR.join(definition.text for _, definition in chosen)
        tokens = meter.count(joined, len(joined.encode("utf-8", "surrogatepass")))
        if tokens <= budget:
            break
        keep_chars = len(joined) * budget / tokens * FILL
        total = 0
        kept = []
        for item in chosen:
            total += len(item[1].text) + len(SEPARATOR)
            if total > keep_chars:
                break
            kept.append(item)
        chosen = kept if len(kept) < len(chosen) else chosen[:-1]
    return [Snippet(trees.display_path(document.uri), definition.text, "definition") for document, definition in chosen]


LOCAL_CHARS = 1500   # the text either side of the cursor that recent chunks are compared with


def recent_snippets(trees: "DocumentTrees", prefix: str, suffix: str, meter: TokenMeter,
                    budget: int) -> list[Snippet]:
    """Recent chunks (edited, viewed, yanked) for what is left of the snippet budget: the most
    similar to the cursor's surroundings first, listed in ring order (see recent.py)."""
    if budget <= 0:
        return []
    window = prefix + suffix
    ranked = trees.recent.relevant(prefix[-LOCAL_CHARS:] + suffix[:LOCAL_CHARS], window)
    room = budget * meter.bytes_per_token * FILL
    chosen, used = [], 0
    for chunk in ranked:
        size = len(chunk.text) + len(SEPARATOR)
        if used + size <= room:
            chosen.append(chunk)
            used += size
    while chosen:   # one real count; drop the least relevant until it fits
        joined = SEPARATOR.join(c.text for c in chosen)
        if meter.count(joined, len(joined.encode("utf-8", "surrogatepass"))) <= budget:
            break
        chosen.pop()
    order = {id(c): i for i, c in enumerate(trees.recent.chunks)}
    chosen.sort(key=lambda c: order[id(c)])
    return [Snippet(trees.display_path(c.uri), c.text, c.kind) for c in chosen]
