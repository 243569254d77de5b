"""Bytes a well-behaved client would never send, written straight to the server's stdin."""
import asyncio
import json

import pytest

from conftest import SERVER_CMD


class RawClient:
    def __init__(self, proc):
        self.proc = proc

    @classmethod
    async def start(cls):
        proc = await asyncio.create_subprocess_exec(*SERVER_CMD, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
        return cls(proc)

    def send_bytes(self, body: bytes):
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def send(self, **message):
        self.send_bytes(json.dumps({"jsonrpc": "2.0", **message}).encode())

    async def read(self) -> dict:
        length = 0
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
            if not line:
                raise EOFError("server closed stdout")
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            elif line in (b"\r\n", b"\n") and length:
                return json.loads(await self.proc.stdout.readexactly(length))

    async def response(self, msg_id) -> dict:
        while True:
            msg = await self.read()
            if msg.get("id") == msg_id and "method" not in msg:
                return msg

    async def close(self):
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


INLINE = {"textDocument": {"uri": "file:///x.py"}, "position": {"line": 0, "character": 0},
          "context": {"triggerKind": 2}}


async def test_request_before_initialize_is_refused():
    c = await RawClient.start()
    try:
        c.send(id=1, method="textDocument/inlineCompletion", params=INLINE)
        reply = await c.response(1)
        assert reply["error"]["code"] == -32002 and "initialize" in reply["error"]["message"]
        c.send(id=2, method="initialize", params={"capabilities": {}})
        assert "capabilities" in (await c.response(2))["result"]
    finally:
        await c.close()


@pytest.mark.parametrize("garbage", [
    b"{this is not json",
    b'{"jsonrpc": "2.0", "id": 7, "method": "textDocument/inlineCompletion", "params": {"position": "x"}}',
    b"[1, 2, 3]",
    b'"\xff\xfe"',
])
async def test_malformed_frames_do_not_stop_the_server(garbage):
    c = await RawClient.start()
    try:
        c.send(id=1, method="initialize", params={"capabilities": {}})
        await c.response(1)
        c.send(method="initialized", params={})
        c.send_bytes(garbage)
        c.send(id=2, method="eyas/status", params=None)
        reply = await c.response(2)
        assert reply["result"]["engine"] == "torch"
    finally:
        await c.close()


async def test_tcp_listens_on_loopback_only():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(*SERVER_CMD, "--tcp", "--port", str(port),
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(100):   # wait for the listener
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the server never listened on 127.0.0.1")
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}).encode()
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        length = int(header.split(b":")[1].split(b"\r\n")[0])
        reply = json.loads(await reader.readexactly(length))
        assert reply["id"] == 1 and "inlineCompletionProvider" in reply["result"]["capabilities"]
        writer.close()
        # the listener is bound to loopback, not to every interface
        addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
        for addr in addrs:
            with pytest.raises(OSError):
                socket.create_connection((addr, port), timeout=1).close()
    finally:
        proc.kill()
        await proc.wait()
