"""Recently edited, viewed and yanked code: a small ring of chunks the prompt can draw on.

Each chunk is a few lines around an edit, the top of an opened file, or text the editor reports as
yanked/copied. A new chunk evicts older ones that say nearly the same thing (word-set Jaccard), so
typing in one place keeps one chunk there, not dozens. At prompt time the chunks share the snippet
budget left after definitions: the ones most similar to the text around the cursor go in, the ones
too similar to it (already in the prompt) stay out, and the chosen ones keep ring order, oldest
first, so the prompt's beginning stays stable across keystrokes and the engine reuses its KV cache.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from .lines import line_end, line_start

CHUNK_LINES = 16        # lines per chunk around an edit
CAPACITY = 24           # chunks kept
EVICT_SIMILARITY = 0.5  # a new chunk replaces older ones at least this similar
LOCAL_SIMILARITY = 0.5  # chunks at least this similar to the cursor's surroundings add nothing
MIN_WORDS = 4           # smaller chunks (blank lines, a brace) are not worth a slot
MAX_CHUNK_BYTES = 4096

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


def words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


@dataclass(frozen=True)
class Chunk:
    uri: str
    text: str
    kind: str            # "edited" | "viewed" | "yanked"
    words: frozenset[str]


class RecentChunks:
    def __init__(self, capacity: int = CAPACITY):
        self.chunks: deque[Chunk] = deque(maxlen=capacity)

    def add(self, uri: str, text: str, kind: str) -> None:
        text = text.strip("\n")[:MAX_CHUNK_BYTES]
        found = words(text)
        if len(found) < MIN_WORDS:
            return
        for old in [c for c in self.chunks if similarity(c.words, found) >= EVICT_SIMILARITY]:
            self.chunks.remove(old)
        self.chunks.append(Chunk(uri, text, kind, found))

    def add_lines_around(self, uri: str, source: bytes, offset: int, kind: str) -> None:
        """The CHUNK_LINES lines centred on the line holding byte `offset`."""
        start = end = line_start(source, offset)
        for _ in range(CHUNK_LINES // 2):
            if start == 0:
                break
            start = line_start(source, start - 1)
        for _ in range(CHUNK_LINES - CHUNK_LINES // 2):
            if end >= len(source):
                break
            end = line_end(source, end)
        self.add(uri, source[start:end].decode("utf-8", "replace"), kind)

    def forget(self, uri: str) -> None:
        for old in [c for c in self.chunks if c.uri == uri]:
            self.chunks.remove(old)

    def relevant(self, local: str, window: str) -> list[Chunk]:
        """Chunks worth showing next to `local` (the text around the cursor), most similar first;
        none that `window` (the text the prompt already holds) contains."""
        near = words(local)
        scored = [(similarity(c.words, near), i, c) for i, c in enumerate(self.chunks)]
        return [c for s, _, c in sorted(scored, key=lambda x: (-x[0], -x[1]))
                if s < LOCAL_SIMILARITY and c.text not in window]
