"""Prefix and suffix windows around the cursor, cut at syntactic boundaries.

Builders take a room in bytes and return at most that many bytes (see budget.fit). The text next to
the cursor is always exact; only the far edge of a window moves, to a line that starts (prefix) or
ends (suffix) a statement. Scope headers and imports that lie above the prefix window are put in
front of it, so the model still sees `class Foo:` / `import x` when the window cannot reach them.
"""

from __future__ import annotations

from tree_sitter import Node

from .languages import LanguageSpec
from .lines import char_end, char_start, line_end, line_start
from .syntax import BOUNDARY, ENCLOSING_BOUNDARY, LineRange, ends_statement, import_ranges, starts_statement

# How many lines a window edge may move to find a statement boundary before settling for any line.
MAX_BOUNDARY_PROBES = 40
# How many lines past a plain statement boundary it may move on to find one in an enclosing block.
MAX_EXTRA_PROBES = 12
# Imports and scope headers may take at most this share of the prefix room.
EXTRAS_SHARE = 1 / 3
# A new window leaves this share of its room free, and a previous start is kept while the window
# uses between MIN_ANCHORED_SHARE and all of it. Typing then moves the window start (and so
# invalidates the engine's cached prefix) once per ~GROW_SLACK of the budget, not every keystroke.
GROW_SLACK = 0.25
MIN_ANCHORED_SHARE = 0.5


class PrefixBuilder:
    def __init__(self, source: bytes, cursor: int, root: Node | None, spec: LanguageSpec | None,
                 scopes: list[LineRange], anchor: int | None = None) -> None:
        self.source = source
        self.anchor = anchor  # the previous request's window start, if any
        self.cursor = cursor
        self.cursor_line = line_start(source, cursor)
        self.root = root
        self.spec = spec
        self.scopes = scopes
        self._imports: list[LineRange] | None = None
        self.extra_bytes = 0  # size of the imports + headers part of the last build
        self.start = 0  # where the window part of the last build starts

    def window_start(self, earliest: int) -> int:
        """Start of a window that begins no earlier than `earliest`."""
        if earliest <= 0:
            return 0
        if earliest > self.cursor_line:  # the cursor line alone is too long: cut inside it
            return char_start(self.source, earliest)
        newline = self.source.find(b"\n", earliest - 1, self.cursor_line)
        start = self.cursor_line if newline < 0 else newline + 1
        if self.root is None:
            return start
        fallback, probes = None, MAX_BOUNDARY_PROBES
        probe = start
        while probes > 0 and probe < self.cursor_line:
            quality = starts_statement(self.source, self.root, self.spec, probe, self.cursor)
            if quality == ENCLOSING_BOUNDARY:
                return probe
            if quality == BOUNDARY and fallback is None:
                fallback, probes = probe, min(probes, MAX_EXTRA_PROBES)
            probe = line_end(self.source, probe)
            probes -= 1
        return start if fallback is None else fallback

    def imports_before(self, start: int) -> list[LineRange]:
        if self.root is None:
            return []
        if self._imports is None:  # one scan per request, up to the cursor line; starts filter it
            self._imports = import_ranges(self.source, self.root, self.spec, self.cursor_line)
        return [found for found in self._imports if found.end <= start]

    def headers_before(self, start: int) -> tuple[list[LineRange], int]:
        """Scope headers above a window starting at `start`, and the start moved past a header the
        window would otherwise begin in the middle of."""
        outside = []
        for header in self.scopes:
            if header.start >= start:
                continue
            if header.end > start:  # window starts inside a multi-line signature
                if header.end > self.cursor_line:
                    continue  # …that reaches the cursor line: it is in the window anyway
                start = header.end
            outside.append(header)
        return outside, start

    def start_within(self, room: int) -> int:
        """The previous start while it still fits `room` well, else a fresh one with slack."""
        a, cursor = self.anchor, self.cursor
        if (a is not None and 0 <= a <= self.cursor_line and (a == 0 or self.source[a - 1] == 0x0A)
                and MIN_ANCHORED_SHARE * room <= cursor - a <= room):
            return a
        earliest = cursor - int(room * (1 - GROW_SLACK))
        if earliest > self.cursor_line:  # no slack to spare: the cursor line comes first
            earliest = cursor - room
        return self.window_start(earliest)

    def build(self, room: int) -> bytes:
        source, cursor = self.source, self.cursor
        start = self.start = self.start_within(room)
        self.extra_bytes = 0
        if start == 0:
            return source[start:cursor]
        headers, start = self.headers_before(start)
        imports = self.imports_before(start)
        wanted = _size(headers) + _size(imports)
        if not wanted:
            self.start = start
            return source[start:cursor]
        # make room for the extras by starting the window later, then fill what is left
        reserve = min(int(room * EXTRAS_SHARE), wanted)
        start = self.start_within(room - reserve)
        headers, start = self.headers_before(start)
        imports = self.imports_before(start)
        left = room - (cursor - start)
        chosen_headers = []
        for header in reversed(headers):  # innermost scopes matter most
            if header.end - header.start <= left:
                chosen_headers.append(header)
                left -= header.end - header.start
        chosen_headers.reverse()
        chosen_imports = []
        for found in imports:
            if found.end - found.start > left:
                break
            chosen_imports.append(found)
            left -= found.end - found.start
        pieces = [source[a:b] for a, b in chosen_imports + chosen_headers]
        self.start = start
        self.extra_bytes = sum(len(piece) for piece in pieces)
        pieces.append(source[start:cursor])
        return b"".join(pieces)


class SuffixBuilder:
    def __init__(self, source: bytes, cursor: int, root: Node | None, spec: LanguageSpec | None) -> None:
        self.source = source
        self.cursor = cursor
        self.cursor_line_end = line_end(source, cursor)
        self.root = root
        self.spec = spec

    def build(self, room: int) -> bytes:
        source, cursor = self.source, self.cursor
        end = cursor + room
        if end >= len(source):
            return source[cursor:]
        if end < self.cursor_line_end:  # the rest of the cursor line alone is too long
            return source[cursor : char_end(source, end)]
        stop = source.rfind(b"\n", self.cursor_line_end - 1, end) + 1
        if self.root is None:
            return source[cursor:stop]
        fallback, probes = None, MAX_BOUNDARY_PROBES
        probe_end = stop
        while probes > 0 and probe_end > self.cursor_line_end:
            probe_start = line_start(source, probe_end - 1)
            quality = ends_statement(source, self.root, self.spec, probe_start, probe_end, cursor)
            if quality == ENCLOSING_BOUNDARY:
                return source[cursor:probe_end]
            if quality == BOUNDARY and fallback is None:
                fallback, probes = probe_end, min(probes, MAX_EXTRA_PROBES)
            probe_end = probe_start
            probes -= 1
        return source[cursor : stop if fallback is None else fallback]


def _size(ranges: list[LineRange]) -> int:
    return sum(end - start for start, end in ranges)
