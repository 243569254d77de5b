"""The engine daemon as a real process (tiny random Qwen3): one start under a race, the socket's
permissions, greedy equality with the in-process engine, supersession, and every bad thing a
client can send (each answered with an error frame while other connections keep being served)."""
from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
import sys
import threading

import msgpack
import pytest

from completion.engine import GenerationParams
from completion.engine.daemon import FairScheduler
from completion.engine.daemon_client import DaemonEngine, daemon_command, ensure_daemon
from completion.engine.rpc import HEADER, MAX_FRAME_BYTES, call_sync, decode_payload, encode_frame, socket_path

START_TIMEOUT_S = 480   # a shared, busy 2-core machine: loading can crawl


@pytest.fixture(scope="module")
def daemon(tiny_model_dir, tmp_path_factory):
    """A daemon started by three racing clients: all must find the same single process."""
    run_dir = tmp_path_factory.mktemp("xdg")
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(run_dir)
    address = str(socket_path("torch", str(tiny_model_dir), None, None, None))
    command = daemon_command("torch", str(tiny_model_dir), None, None, None, address)
    states, errors = [], []

    def start():
        try:
            states.append(ensure_daemon(address, command, timeout=START_TIMEOUT_S))
        except Exception as exc:
            errors.append(exc)

    racers = [threading.Thread(target=start) for _ in range(3)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    yield {"address": address, "states": states, "errors": errors, "model": str(tiny_model_dir)}
    try:
        call_sync(address, "shutdown")
    except OSError:
        pass
    for state in states[:1]:
        try:
            os.kill(state["pid"], 9)
        except ProcessLookupError:
            pass
    if old is None:
        del os.environ["XDG_RUNTIME_DIR"]
    else:
        os.environ["XDG_RUNTIME_DIR"] = old


def connect(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(120)
    sock.connect(address)
    return sock


def receive(sock: socket.socket) -> dict | None:
    """The next frame, or None when the daemon closed the connection."""
    header = sock.recv(HEADER.size, socket.MSG_WAITALL)
    if len(header) < HEADER.size:
        return None
    (length,) = HEADER.unpack(header)
    return decode_payload(sock.recv(length, socket.MSG_WAITALL))


def still_serving(address: str) -> None:
    assert call_sync(address, "health", timeout=60)["state"] == "ready"


def test_one_daemon_for_racing_starts(daemon):
    assert not daemon["errors"], daemon["errors"]
    pids = {s["pid"] for s in daemon["states"]}
    assert len(pids) == 1 and len(daemon["states"]) == 3
    log = open(daemon["address"] + ".log").read()
    assert log.count("listening on") == 1


def test_socket_and_directory_permissions(daemon):
    sock = os.stat(daemon["address"])
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(daemon["address"])).st_mode) == 0o700


def test_greedy_output_equals_in_process_engine(daemon):
    from completion.engine.torch_engine import TorchEngine

    async def run(engine):
        ids = engine.tokenizer().encode("def fibonacci(n):\n    ", add_special_tokens=False)
        out = []
        async for chunk in engine.generate(ids, GenerationParams(max_tokens=12, cache_key="f.py")):
            out += chunk.token_ids
        await engine.close()
        return out, chunk.stats

    remote = DaemonEngine.load("torch", daemon["model"])
    assert remote.info.engine == "daemon:torch"
    theirs, stats = asyncio.run(run(remote))
    ours, _ = asyncio.run(run(TorchEngine.load(daemon["model"], device="cpu")))
    assert theirs == ours and len(ours) == 12
    assert stats.generated_tokens == 12 and stats.finish_reason == "length"


def test_newer_generate_for_a_document_supersedes_the_older(daemon):
    sock = connect(daemon["address"])
    request = {"prompt_ids": [1, 2, 3], "params": {"max_tokens": 400, "cache_key": "doc"}}
    sock.sendall(encode_frame({"id": 1, "method": "generate", "params": request}))
    sock.sendall(encode_frame({"id": 2, "method": "generate", "params": {**request, "params": {"max_tokens": 3, "cache_key": "doc"}}}))
    ends = {}
    while len(ends) < 2:
        frame = receive(sock)
        if frame["type"] == "end":
            ends[frame["id"]] = frame["stats"]
    assert ends[1]["finish_reason"] == "cancelled"
    assert ends[2]["finish_reason"] == "length" and ends[2]["generated_tokens"] == 3
    assert call_sync(daemon["address"], "stats")["superseded"] >= 1


def test_cancel_stops_a_generation(daemon):
    sock = connect(daemon["address"])
    sock.sendall(encode_frame({"id": 7, "method": "generate", "params": {"prompt_ids": [5, 6], "params": {"max_tokens": 4000}}}))
    assert receive(sock)["type"] == "chunk"
    sock.sendall(encode_frame({"id": 8, "method": "cancel", "params": {"id": 7}}))
    frames = [receive(sock)]
    while not (any(f["type"] == "end" for f in frames) and any(f["type"] == "result" for f in frames)):
        frames.append(receive(sock))
    end = next(f for f in frames if f["type"] == "end")
    assert end["stats"]["finish_reason"] == "cancelled" and end["stats"]["generated_tokens"] < 4000
    assert {"id": 8, "type": "result", "result": {"cancelled": True}} in frames


def test_malformed_msgpack_is_an_error_frame_and_the_connection_goes_on(daemon):
    sock = connect(daemon["address"])
    garbage = b"\xc1\xc1\xc1"   # 0xc1 is never valid msgpack
    sock.sendall(HEADER.pack(len(garbage)) + garbage)
    reply = receive(sock)
    assert reply["type"] == "error" and reply["code"] == "bad_frame" and "malformed" in reply["message"]
    sock.sendall(encode_frame({"id": 3, "method": "health", "params": {}}))
    assert receive(sock)["result"]["state"] == "ready"


def test_non_map_and_bad_envelope_are_error_frames(daemon):
    sock = connect(daemon["address"])
    for payload in (msgpack.packb([1, 2]), msgpack.packb({"id": "x", "method": "health"}),
                    msgpack.packb({"id": 4, "method": 12}), msgpack.packb({"id": 5, "method": "health", "params": [1]})):
        sock.sendall(HEADER.pack(len(payload)) + payload)
        assert receive(sock)["type"] == "error"
    still_serving(daemon["address"])


def test_truncated_frame_closes_only_that_connection(daemon):
    sock = connect(daemon["address"])
    sock.sendall(HEADER.pack(100) + b"\x81" * 10)
    sock.shutdown(socket.SHUT_WR)
    reply = receive(sock)
    assert reply["type"] == "error" and "truncated" in reply["message"]
    assert receive(sock) is None   # closed
    still_serving(daemon["address"])


def test_oversized_frame_is_refused_before_reading_it(daemon):
    sock = connect(daemon["address"])
    sock.sendall(struct.pack(">I", MAX_FRAME_BYTES + 1))   # no payload follows: nothing is read
    reply = receive(sock)
    assert reply["type"] == "error" and "exceeds" in reply["message"]
    assert receive(sock) is None
    still_serving(daemon["address"])


def test_unknown_method(daemon):
    sock = connect(daemon["address"])
    sock.sendall(encode_frame({"id": 9, "method": "rm -rf", "params": {}}))
    reply = receive(sock)
    assert reply == {"id": 9, "type": "error", "code": "unknown_method", "message": reply["message"]}


@pytest.mark.parametrize("params", [
    {"prompt_ids": "def f():"},
    {"prompt_ids": []},
    {"prompt_ids": [1, "2"]},
    {"prompt_ids": [1, -5]},
    {"prompt_ids": [10 ** 9]},
    {"prompt_ids": [1], "params": {"max_tokens": "64"}},
    {"prompt_ids": [1], "params": {"temperature": True}},
    {"prompt_ids": [1], "params": {"stop_ids": [None]}},
    {"prompt_ids": [1], "params": {"mode": "warp"}},
    {"prompt_ids": [1], "params": {"max_tokens": 10 ** 6}},
    {"prompt_ids": [1], "params": {"evil": 1}},
    {"prompt_ids": [1], "params": []},
])
def test_wrong_argument_types_are_error_frames(daemon, params):
    sock = connect(daemon["address"])
    sock.sendall(encode_frame({"id": 11, "method": "generate", "params": params}))
    reply = receive(sock)
    assert reply["type"] == "error" and reply["id"] == 11 and reply["code"] == "bad_params", reply
    other = connect(daemon["address"])   # meanwhile other connections are served
    other.sendall(encode_frame({"id": 1, "method": "generate", "params": {"prompt_ids": [1, 2], "params": {"max_tokens": 2}}}))
    frames = [receive(other)]
    while frames[-1]["type"] != "end":
        frames.append(receive(other))
    assert frames[-1]["stats"]["generated_tokens"] == 2


def test_several_clients_at_once(daemon):
    async def one(i):
        engine = DaemonEngine.load("torch", daemon["model"])
        got = []
        async for chunk in engine.generate([100 + i, 200, 300], GenerationParams(max_tokens=5, cache_key="same.py")):
            got += chunk.token_ids
        await engine.close()
        return got

    async def all_of_them():
        return await asyncio.gather(*(one(i) for i in range(4)))

    assert [len(g) for g in asyncio.run(all_of_them())] == [5, 5, 5, 5]
    stats = call_sync(daemon["address"], "stats")
    assert stats["requests"] == 0 and stats["queued"] == 0


def test_fair_scheduler_takes_turns_across_clients():
    order = []

    async def request(scheduler, client, n):
        async with scheduler.turn(client):
            order.append(f"{client}{n}")
            await asyncio.sleep(0)

    async def main():
        scheduler = FairScheduler(1)
        tasks = [asyncio.create_task(request(scheduler, "a", n)) for n in range(3)]
        tasks += [asyncio.create_task(request(scheduler, "b", 0)), asyncio.create_task(request(scheduler, "c", 0))]
        doomed = asyncio.create_task(request(scheduler, "c", 1))
        await asyncio.sleep(0)
        doomed.cancel()   # a cancelled waiter leaves the queue and takes no turn
        await asyncio.gather(*tasks)
        assert scheduler.free == 1 and not scheduler.waiting

    asyncio.run(main())
    assert order == ["a0", "a1", "b0", "c0", "a2"]


def test_tcp_listens_on_loopback_only(tiny_model_dir):
    import subprocess
    proc = subprocess.Popen([sys.executable, "-m", "completion.cli", "engine", "serve", "--tcp", "0",
                             "--model", "/nonexistent-model"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        address = line.split()[-1]
        assert address.startswith("tcp://127.0.0.1:")
        state = call_sync(address, "health", timeout=60)
        assert state["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(ValueError, match="127.0.0.1"):
        call_sync("tcp://0.0.0.0:80", "health")
