"""Line arithmetic on UTF-8 bytes. Every search is a C-level bytes.find/rfind, never a byte loop."""

from __future__ import annotations

_BLANK = b" \t\r\n\f\v"


def line_start(source: bytes, offset: int) -> int:
    return source.rfind(b"\n", 0, offset) + 1


def line_end(source: bytes, offset: int) -> int:
    """Offset just past the line containing `offset`, newline included (len(source) on the last line)."""
    newline = source.find(b"\n", offset)
    return len(source) if newline < 0 else newline + 1


def text_bounds(source: bytes, start: int, end: int) -> tuple[int, int]:
    """The non-blank part [first, last+1) of source[start:end]; (end, end) when it is blank."""
    chunk = source[start:end]
    left = chunk.lstrip(_BLANK)
    if not left:
        return end, end
    first = start + len(chunk) - len(left)
    return first, first + len(left.rstrip(_BLANK))


def last_text_before(source: bytes, offset: int, window: int = 4096) -> int:
    """Offset just past the last non-blank byte before `offset` (0 if there is none)."""
    end = offset
    while end > 0:
        start = max(0, end - window)
        stripped = source[start:end].rstrip(_BLANK)
        if stripped:
            return start + len(stripped)
        end = start
    return 0


def char_start(source: bytes, offset: int) -> int:
    """Move `offset` forward onto the start of a UTF-8 character (for hard cuts inside a line)."""
    while offset < len(source) and (source[offset] & 0xC0) == 0x80:
        offset += 1
    return offset


def char_end(source: bytes, offset: int) -> int:
    """Move `offset` back onto a character boundary."""
    while 0 < offset < len(source) and (source[offset] & 0xC0) == 0x80:
        offset -= 1
    return offset


def indentation(source: bytes, start: int) -> int:
    """Width in bytes of the blanks (spaces/tabs) opening the line that starts at `start`."""
    chunk = source[start : start + 256]
    return len(chunk) - len(chunk.lstrip(b" \t"))


def text_lines(data: str) -> str:
    """Lines joined by '\\n', without line terminators ('\\r' of CRLF files removed)."""
    return "\n".join(line.rstrip("\r") for line in data.rstrip("\r\n").split("\n"))
