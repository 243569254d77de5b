"""The daemon's wire format and where its socket lives (DESIGN §4, Daemon RPC).

A frame is a 4-byte big-endian length, then that many bytes of msgpack holding one map:
    request   {"id": int, "method": str, "params": {...}}
    replies   {"id": int, "type": "result", "result": {...}}
              {"id": int, "type": "chunk", "token_ids": [...], "text": str, "stats": {...}}
              {"id": int, "type": "end", "stats": {...} | None}          (a generate is over)
              {"id": int | None, "type": "error", "code": str, "message": str}
The length is checked against MAX_FRAME_BYTES before a byte of the payload is read, so a bad
client costs the daemon at most one frame's memory.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
import struct
import tempfile
from pathlib import Path

import msgpack

MAX_FRAME_BYTES = 4 << 20   # a 32k-token prompt is ~160 KB of msgpack; anything near 4 MB is an error
HEADER = struct.Struct(">I")
TCP_PREFIX = "tcp://127.0.0.1:"


class FrameError(Exception):
    """A frame that cannot be used. `fatal`: the stream is out of step (oversized or truncated
    frame) and the connection must close; otherwise only this frame is lost."""

    def __init__(self, message: str, fatal: bool):
        super().__init__(message)
        self.fatal = fatal


class EngineUnavailable(ConnectionError):
    """The engine behind a process boundary (daemon, remote server) is gone or not answering.
    The LSP server turns it into an empty completion, never a crash."""


def encode_frame(message: dict) -> bytes:
    payload = msgpack.packb(message, use_bin_type=True)
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(payload)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit", fatal=False)
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> dict:
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:   # msgpack raises several unrelated types for bad input
        raise FrameError(f"malformed msgpack: {exc}", fatal=False) from None
    if not isinstance(message, dict):
        raise FrameError(f"a frame must hold a map, got {type(message).__name__}", fatal=False)
    return message


async def read_frame(reader: asyncio.StreamReader) -> dict:
    """The next message; EOFError at a clean end of stream, FrameError for a bad frame."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError from None
        raise FrameError("truncated frame header", fatal=True) from None
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte limit", fatal=True)
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError(f"truncated frame: {length} bytes announced", fatal=True) from None
    return decode_payload(payload)


# -- addresses ---------------------------------------------------------------------------------
def runtime_dir() -> Path:
    """A directory only this user can enter: $XDG_RUNTIME_DIR/eyas, else <tmp>/eyas-<uid>.
    Refuses one that another user owns or others can open (someone could impersonate the daemon)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "eyas" if base and os.path.isdir(base) else Path(tempfile.gettempdir()) / f"eyas-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} must be a directory owned by uid {os.getuid()} with mode 0700")
    return path


def socket_path(*config: str | None) -> Path:
    """One socket per engine configuration, so windows asking for the same model share a daemon
    and a window asking for another model gets its own."""
    digest = hashlib.sha256(repr(config).encode()).hexdigest()[:12]
    return runtime_dir() / f"engine-{digest}.sock"


def parse_tcp(address: str) -> int | None:
    """The port of a `tcp://127.0.0.1:PORT` address, None for a socket path."""
    if not address.startswith("tcp://"):
        return None
    if not address.startswith(TCP_PREFIX) or not address[len(TCP_PREFIX):].isdigit():
        raise ValueError(f"TCP daemons listen on 127.0.0.1 only: expected {TCP_PREFIX}PORT, got {address!r}")
    return int(address[len(TCP_PREFIX):])


async def open_connection(address: str):
    port = parse_tcp(address)
    if port is not None:
        return await asyncio.open_connection("127.0.0.1", port, limit=MAX_FRAME_BYTES)
    return await asyncio.open_unix_connection(address, limit=MAX_FRAME_BYTES)


def call_sync(address: str, method: str, params: dict | None = None, timeout: float = 2.0) -> dict:
    """One request, one reply, blocking: for callers without an event loop (starting a daemon).
    Raises OSError when nothing answers and RuntimeError for an error reply."""
    port = parse_tcp(address)
    family = socket.AF_INET if port is not None else socket.AF_UNIX
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port) if port is not None else address)
        sock.sendall(encode_frame({"id": 0, "method": method, "params": params or {}}))
        (length,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
        if length > MAX_FRAME_BYTES:
            raise ConnectionError(f"reply of {length} bytes exceeds the frame limit")
        reply = decode_payload(_recv_exactly(sock, length))
    if reply.get("type") == "error":
        raise RuntimeError(f"{method}: {reply.get('code')}: {reply.get('message')}")
    return reply.get("result") or {}


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("the daemon closed the connection")
        data += part
    return data
