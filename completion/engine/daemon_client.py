"""The Engine contract over the daemon's socket (daemon.py), for LSP servers that share a model.

`DaemonEngine.load` finds the daemon for a configuration (one socket per configuration), starts it
when nothing answers, and waits until its model is ready. Several servers may race to start it:
a lock file beside the socket lets exactly one of them spawn, the others find it answering.

The tokenizer is loaded here from the directory the daemon reports in `health` (the prompt is built
in this process; only token ids cross the socket). If the daemon dies, every open stream ends at
once with EngineUnavailable (the socket closes with the process), and the next request starts a
new daemon.
"""
from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import itertools
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

from .base import Chunk, EngineInfo, GenerationParams, Stats
from .rpc import EngineUnavailable, FrameError, call_sync, encode_frame, open_connection, read_frame, socket_path

START_TIMEOUT_S = 600.0   # a big model (or vLLM's engine start) can take minutes to load
POLL_S = 0.2
HEALTH_TIMEOUT_S = 5.0
REPO = Path(__file__).resolve().parents[2]


def vllm_python() -> str:
    """vLLM lives in its own venv (it pins an older transformers): `make install-vllm`."""
    return os.environ.get("EYAS_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")


def daemon_command(backend: str, model, draft, device, impl, address: str, precision=None) -> list[str]:
    python = vllm_python() if backend == "vllm" else sys.executable
    command = [python, "-m", "completion.cli", "engine", "serve", "--engine", backend, "--socket", address]
    for flag, value in (("--model", model), ("--draft", draft), ("--device", device), ("--impl", impl),
                        ("--precision", precision)):
        if value:
            command += [flag, value]
    return command


def health(address: str) -> dict | None:
    """The daemon's health, or None when nothing listens at `address`. A daemon that listens but
    is too busy to answer in time (a starved CPU while a model loads) counts as still loading."""
    try:
        return call_sync(address, "health", timeout=HEALTH_TIMEOUT_S)
    except TimeoutError:
        return {"state": "loading", "progress": "busy"}
    except (OSError, RuntimeError, FrameError):
        return None


@contextmanager
def _spawn_lock(address: str):
    fd = os.open(f"{address}.spawn.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the lock


def _spawn(command: list[str], address: str) -> subprocess.Popen:
    env = dict(os.environ)
    if command[0] != sys.executable:
        env["PYTHONPATH"] = ""   # another venv: our site-packages must not leak into it
    with open(f"{address}.log", "ab") as log_file:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                env=env, cwd=REPO, start_new_session=True)   # outlives this window
    threading.Thread(target=proc.wait, daemon=True).start()   # reap it if it exits before we do
    return proc


def _log_tail(address: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(f"{address}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ensure_daemon(address: str, command: list[str] | None, progress: Callable[[str], None] | None = None,
                  timeout: float = START_TIMEOUT_S) -> dict:
    """The health of a ready daemon at `address`, starting one (when `command` is given) if none
    answers. Blocking: call it from a worker thread."""
    report = progress or (lambda message: None)
    proc = None
    if health(address) is None:
        if command is None:
            raise EngineUnavailable(f"no engine daemon answers at {address}")
        with _spawn_lock(address):
            if health(address) is None:   # nobody started it while we waited for the lock
                report("starting the engine daemon")
                proc = _spawn(command, address)
                deadline = time.monotonic() + timeout
                while health(address) is None:
                    if proc.poll() is not None:
                        raise RuntimeError(f"the engine daemon exited ({proc.returncode}):\n{_log_tail(address)}")
                    if time.monotonic() > deadline:
                        raise EngineUnavailable(f"the engine daemon did not answer within {timeout:.0f} s")
                    time.sleep(POLL_S)
    deadline, said = time.monotonic() + timeout, None
    while True:
        state = health(address)
        if state is None:
            raise EngineUnavailable(f"the engine daemon at {address} stopped answering:\n{_log_tail(address)}")
        if state["state"] == "ready":
            return state
        if state["state"] == "failed":
            try:   # let the next attempt start afresh (perhaps with the model fixed)
                call_sync(address, "shutdown")
            except (OSError, RuntimeError):
                pass
            raise RuntimeError(f"the engine daemon could not load the model: {state['error']}")
        if state.get("progress") != said:
            said = state.get("progress")
            report(f"engine daemon: {said}")
        if time.monotonic() > deadline:
            raise EngineUnavailable(f"the engine daemon was not ready within {timeout:.0f} s")
        time.sleep(POLL_S)


class _Link:
    """One open connection; a reader task routes each frame to the queue of its request id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.writer = writer
        self.streams: dict[int, asyncio.Queue] = {}
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.reader_task = asyncio.create_task(self._route(reader))

    async def _route(self, reader: asyncio.StreamReader) -> None:
        why = "the engine daemon closed the connection"
        try:
            while True:
                message = await read_frame(reader)
                queue = self.streams.get(message.get("id"))
                if queue is not None:
                    queue.put_nowait(message)
        except (EOFError, ConnectionError):
            pass
        except FrameError as exc:
            why = f"bad frame from the engine daemon: {exc}"
        finally:
            self.closed = True
            for queue in self.streams.values():
                queue.put_nowait(EngineUnavailable(why))
            self.writer.close()

    def send(self, message: dict) -> None:
        if self.closed:
            raise EngineUnavailable("the engine daemon connection is closed")
        self.writer.write(encode_frame(message))

    def close(self) -> None:
        self.reader_task.cancel()
        self.writer.close()


def _stats(d: dict | None) -> Stats:
    fields = Stats.__dataclass_fields__
    return Stats(**{k: v for k, v in (d or {}).items() if k in fields})


class DaemonEngine:
    def __init__(self, address: str, command: list[str] | None, tokenizer, info: EngineInfo):
        self.address, self.command, self._tokenizer, self.info = address, command, tokenizer, info
        self._link: _Link | None = None
        self._connecting: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._ids = itertools.count(1)

    @classmethod
    def load(cls, backend: str = "torch", model: str | None = None, *, draft: str | None = None,
             device: str | None = None, impl: str | None = None, precision: str | None = None, url: str | None = None,
             progress: Callable[[str], None] | None = None) -> "DaemonEngine":
        """`url`: the address of a daemon started by hand (`tcp://127.0.0.1:PORT` or a socket
        path); such a daemon is never started for you."""
        from transformers import AutoTokenizer

        address = url or str(socket_path(backend, model, draft, device, impl, *([precision] if precision else [])))
        command = None if url else daemon_command(backend, model, draft, device, impl, address, precision)
        state = ensure_daemon(address, command, progress)
        tokenizer = AutoTokenizer.from_pretrained(state["tokenizer_dir"])
        fields = EngineInfo.__dataclass_fields__
        info = EngineInfo(**{k: v for k, v in state["info"].items() if k in fields})
        info = dataclasses.replace(info, engine=f"daemon:{info.engine}")
        return cls(address, command, tokenizer, info)

    def tokenizer(self):
        return self._tokenizer

    def _lock(self) -> asyncio.Lock:
        """One connection attempt at a time, per event loop (a lock serves one loop only)."""
        loop = asyncio.get_running_loop()
        if self._connecting is None or self._connecting[0] is not loop:
            self._connecting = (loop, asyncio.Lock())
        return self._connecting[1]

    async def _connected(self) -> _Link:
        async with self._lock():
            link = self._link
            if link is None or link.closed or link.loop is not asyncio.get_running_loop():
                try:
                    reader, writer = await open_connection(self.address)
                except OSError:   # gone (killed?): start a new one, then connect
                    await asyncio.to_thread(ensure_daemon, self.address, self.command)
                    try:
                        reader, writer = await open_connection(self.address)
                    except OSError as exc:
                        raise EngineUnavailable(f"cannot reach the engine daemon at {self.address}: {exc}") from None
                self._link = _Link(reader, writer)
            return self._link

    async def generate(self, prompt_ids: list[int], params: GenerationParams) -> AsyncIterator[Chunk]:
        link = await self._connected()
        rid, queue, over = next(self._ids), asyncio.Queue(), False
        link.streams[rid] = queue
        options = {k: getattr(params, k) for k in params.__dataclass_fields__}
        options["stop_ids"] = list(options["stop_ids"])
        try:
            link.send({"id": rid, "method": "generate",
                       "params": {"prompt_ids": list(prompt_ids), "params": options}})
            while True:
                message = await queue.get()
                if isinstance(message, Exception):
                    over = True
                    raise message
                kind = message.get("type")
                if kind == "chunk":
                    yield Chunk(list(message["token_ids"]), message["text"], _stats(message["stats"]))
                    continue
                over = True
                if kind == "end":
                    return
                error = f"engine daemon: {message.get('code')}: {message.get('message')}"
                raise EngineUnavailable(error) if message.get("code") == "unavailable" else RuntimeError(error)
        finally:
            link.streams.pop(rid, None)
            if not over and not link.closed:   # closed or cancelled early: stop the daemon's work
                link.send({"id": rid, "method": "cancel", "params": {"id": rid}})

    async def close(self) -> None:
        if self._link is not None:
            self._link.close()
