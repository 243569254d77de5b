"""LSP positions ↔ character offsets, in the negotiated encoding (utf-16 by default, utf-8, utf-32).

Decoding the encoded line prefix does the work in C, and a cut inside a character (half of a UTF-16
surrogate pair, part of a UTF-8 sequence) fails to decode: that is how we detect it.
"""
from __future__ import annotations

import bisect
import re

from lsprotocol.types import Position, PositionEncodingKind

_NEWLINE = re.compile("\n")


class PositionError(ValueError):
    pass


class LineIndex:
    """Start offsets of the lines of one text (built once per document version)."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]

    def line(self, n: int) -> str:
        end = self.starts[n + 1] if n + 1 < len(self.starts) else len(self.text)
        return self.text[self.starts[n]:end].rstrip("\r\n")

    def offset(self, pos: Position, encoding: str) -> int:
        if pos.line < 0 or pos.character < 0:
            raise PositionError(f"negative position {pos.line}:{pos.character}")
        if pos.line >= len(self.starts):
            raise PositionError(f"line {pos.line} is past the end of the document ({len(self.starts)} lines)")
        line = self.line(pos.line)
        return self.starts[pos.line] + _column(line, pos.character, encoding, pos.line)

    def position(self, offset: int, encoding: str) -> Position:
        n = bisect.bisect_right(self.starts, offset) - 1
        head = self.text[self.starts[n]:offset]
        if encoding == PositionEncodingKind.Utf8:
            return Position(n, len(head.encode("utf-8", "surrogatepass")))
        if encoding == PositionEncodingKind.Utf32:
            return Position(n, len(head))
        return Position(n, len(head.encode("utf-16-le", "surrogatepass")) // 2)


def _column(line: str, character: int, encoding: str, line_no: int) -> int:
    """Code-point column of an encoded column on `line`."""
    if encoding == PositionEncodingKind.Utf32:
        units, width, codec = len(line), 1, None
    elif encoding == PositionEncodingKind.Utf8:
        codec, width = "utf-8", 1
    else:
        codec, width = "utf-16-le", 2
    if codec is None:
        if character > units:
            raise PositionError(f"character {character} is past the end of line {line_no} ({units} characters)")
        return character
    data = line.encode(codec, "surrogatepass")
    if character * width > len(data):
        raise PositionError(f"character {character} is past the end of line {line_no} "
                            f"({len(data) // width} {encoding} code units)")
    try:
        return len(data[: character * width].decode(codec))   # strict: a cut character fails
    except UnicodeDecodeError:
        raise PositionError(f"character {character} on line {line_no} falls inside a character "
                            f"(e.g. half of a UTF-16 surrogate pair)") from None
