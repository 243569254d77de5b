"""`eyas engine serve`: one loaded engine shared by every editor window of the user.

Each LSP server connects to this process over a Unix socket (rpc.py frames) instead of loading
the model itself. Methods: generate (streams chunks), cancel, stats, health, shutdown.

Scheduling: the torch engine runs model work on one thread and holds a static KV cache per
document, so requests cannot be interleaved step by step without splitting its decode loop. A
request therefore runs whole once it has a turn, and turns go round-robin across clients
(`FairScheduler`): one busy window cannot starve another, completions are short (max_tokens
bounds a turn), and a superseded or cancelled request leaves the queue at once. vLLM batches
requests itself, so the vLLM backend gets many turns at a time.

The socket directory is 0700 and the socket 0600 (rpc.runtime_dir); a lock file beside the
socket, held for the daemon's life, makes a second daemon for the same socket exit at once.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fcntl
import itertools
import logging
import os
import signal
import sys
import time
from collections import Counter, OrderedDict, deque
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

from .base import GenerationParams
from .rpc import FrameError, encode_frame, parse_tcp, read_frame, socket_path

log = logging.getLogger("eyas.daemon")
VLLM_TURNS = 16   # concurrent requests handed to vLLM's own batching scheduler


class FairScheduler:
    """`slots` turns on the engine, handed out round-robin across clients."""

    def __init__(self, slots: int):
        self.free = slots
        self.waiting: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()

    @asynccontextmanager
    async def turn(self, client: str):
        if self.free > 0 and not self.waiting:
            self.free -= 1
        else:
            granted = asyncio.get_running_loop().create_future()
            self.waiting.setdefault(client, deque()).append(granted)
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release()   # granted just as we were cancelled: pass the turn on
                else:
                    self._forget(client, granted)
                raise
        try:
            yield
        finally:
            self._release()

    def queued(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def _forget(self, client: str, granted: asyncio.Future) -> None:
        queue = self.waiting.get(client)
        if queue is not None and granted in queue:
            queue.remove(granted)
            if not queue:
                del self.waiting[client]

    def _release(self) -> None:
        while self.waiting:
            client, queue = next(iter(self.waiting.items()))
            granted = queue.popleft()
            if queue:
                self.waiting.move_to_end(client)   # its next request waits behind the others
            else:
                del self.waiting[client]
            if not granted.done():
                granted.set_result(None)
                return
        self.free += 1


# -- request checking --------------------------------------------------------------------------
_PARAM_TYPES = {"max_tokens": (int,), "temperature": (int, float), "top_p": (int, float),
                "stop_ids": (list,), "seed": (int, type(None)), "cache_key": (str, type(None)),
                "mode": (str,), "num_speculative_tokens": (int, type(None))}
MAX_PROMPT_TOKENS = 1 << 17
MAX_NEW_TOKENS = 4096
MAX_OPEN_REQUESTS = 64   # per connection: a client that never stops asking cannot exhaust the daemon


def _check_type(name: str, value, types: tuple) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        raise TypeError(f"{name} must be {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}")


def _token_ids(name: str, value) -> list[int]:
    _check_type(name, value, (list,))
    for t in value:
        _check_type(f"{name}[]", t, (int,))
        if not 0 <= t < 1 << 31:
            raise ValueError(f"{name} holds an impossible token id {t}")
    return value


def parse_generate(params: dict, vocab_size: int | None) -> tuple[list[int], GenerationParams]:
    prompt = _token_ids("prompt_ids", params.get("prompt_ids"))
    if not 0 < len(prompt) <= MAX_PROMPT_TOKENS:
        raise ValueError(f"prompt_ids must hold 1..{MAX_PROMPT_TOKENS} tokens, got {len(prompt)}")
    if vocab_size and max(prompt) >= vocab_size:
        raise ValueError(f"token id {max(prompt)} is outside the vocabulary ({vocab_size})")
    options = params.get("params", {})   # not `or {}`: an empty list must be refused, not read as {}
    _check_type("params", options, (dict,))
    for key, value in options.items():
        if key not in GenerationParams.__dataclass_fields__:
            raise ValueError(f"unknown generation parameter {key!r}")
        if key in _PARAM_TYPES:
            _check_type(key, value, _PARAM_TYPES[key])
    _token_ids("stop_ids", options.get("stop_ids", []))
    if options.get("max_tokens", 0) > MAX_NEW_TOKENS:
        raise ValueError(f"max_tokens above {MAX_NEW_TOKENS}")
    return prompt, GenerationParams(**options)


# -- connections -------------------------------------------------------------------------------
class Connection:
    def __init__(self, number: int, writer: asyncio.StreamWriter):
        self.client = f"client-{number}"
        self.writer = writer
        self.tasks: dict[int, asyncio.Task] = {}
        self.stats: dict[int, dict] = {}         # request id -> its latest stats
        self.by_document: dict[str, int] = {}   # cache_key -> the request id that owns it now

    async def send(self, message: dict) -> None:
        if self.writer.is_closing():
            return
        try:
            self.writer.write(encode_frame(message))
            await self.writer.drain()
        except ConnectionError:
            pass   # the client went away; its reader loop ends and cancels what it asked for

    def send_nowait(self, message: dict) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_frame(message))

    def error(self, rid, code: str, message: str) -> dict:
        return {"id": rid if isinstance(rid, int) else None, "type": "error", "code": code, "message": message}


class Daemon:
    def __init__(self, load, slots: int, idle_exit_s: float):
        self.load, self.idle_exit_s = load, idle_exit_s
        self.scheduler = FairScheduler(slots)
        self.engine = None
        self.tokenizer_dir: str | None = None
        self.vocab_size: int | None = None
        self.state, self.error, self.progress = "loading", None, "starting"
        self.counts: Counter[str] = Counter()
        self.connections: set[Connection] = set()
        self.numbers = itertools.count(1)
        self.stopping = asyncio.Event()
        self.started = self.last_seen = time.monotonic()

    async def load_engine(self) -> None:
        self.progress = "loading the model"
        try:
            engine = await asyncio.to_thread(self.load)
            tokenizer = engine.tokenizer()
            self.tokenizer_dir = getattr(tokenizer, "name_or_path", None) or engine.info.model
            self.vocab_size = len(tokenizer)
            self.engine, self.state, self.progress = engine, "ready", "ready"
            log.info("engine ready: %s", engine.info)
        except Exception as exc:   # reported through health; the client shuts us down and retries
            self.state, self.error, self.progress = "failed", f"{type(exc).__name__}: {exc}", "failed"
            log.exception("engine failed to load")

    # -- methods -------------------------------------------------------------------------------
    def health(self) -> dict:
        info = dataclasses.asdict(self.engine.info) if self.engine else None
        return {"state": self.state, "error": self.error, "progress": self.progress, "info": info,
                "tokenizer_dir": self.tokenizer_dir, "pid": os.getpid()}

    def stats(self) -> dict:
        running = sum(len(c.tasks) for c in self.connections)
        return {"pid": os.getpid(), "rss_bytes": rss_bytes(), "uptime_s": round(time.monotonic() - self.started, 1),
                "connections": len(self.connections), "requests": running,
                "queued": self.scheduler.queued(), **self.counts}

    def start_generate(self, conn: Connection, rid: int, params: dict) -> None:
        if self.engine is None:
            raise RuntimeError(f"the engine is {self.state}" + (f": {self.error}" if self.error else ""))
        if rid in conn.tasks:
            raise ValueError(f"request id {rid} is already in use on this connection")
        if len(conn.tasks) >= MAX_OPEN_REQUESTS:
            raise ValueError(f"more than {MAX_OPEN_REQUESTS} open requests on one connection")
        prompt, gen = parse_generate(params, self.vocab_size)
        key = gen.cache_key
        if key is not None:
            older = conn.tasks.get(conn.by_document.get(key))
            if older is not None:   # the newest request for a document wins
                older.cancel()
                self.counts["superseded"] += 1
            conn.by_document[key] = rid
            # Windows share the engine's per-document KV caches; keep their documents apart.
            gen = dataclasses.replace(gen, cache_key=f"{conn.client}:{key}")
        task = asyncio.create_task(self.generate(conn, rid, prompt, gen))
        conn.tasks[rid] = task
        task.add_done_callback(lambda done: self.ended(conn, rid, key, done))

    async def generate(self, conn: Connection, rid: int, prompt: list[int], params: GenerationParams) -> None:
        try:
            async with self.scheduler.turn(conn.client):
                async with aclosing(self.engine.generate(prompt, params)) as stream:
                    async for chunk in stream:
                        conn.stats[rid] = chunk.stats.to_dict()
                        await conn.send({"id": rid, "type": "chunk", "token_ids": chunk.token_ids,
                                         "text": chunk.text, "stats": conn.stats[rid]})
            await conn.send({"id": rid, "type": "end", "stats": conn.stats.get(rid)})
            self.counts["completed"] += 1
        except Exception as exc:   # the request fails; the daemon and the other requests go on
            self.counts["failed"] += 1
            log.exception("generate %s failed", rid)
            await conn.send(conn.error(rid, "generate_failed", f"{type(exc).__name__}: {exc}"))

    def ended(self, conn: Connection, rid: int, key: str | None, task: asyncio.Task) -> None:
        """Bookkeeping for a finished request. A cancelled one gets its "end" frame here: a task
        cancelled before it first ran (superseded at once) never enters its own body."""
        conn.tasks.pop(rid, None)
        stats = conn.stats.pop(rid, None)
        if key is not None and conn.by_document.get(key) == rid:
            del conn.by_document[key]
        if task.cancelled():
            self.counts["cancelled"] += 1
            conn.send_nowait({"id": rid, "type": "end", "stats": dict(stats or {}, finish_reason="cancelled")})

    async def dispatch(self, conn: Connection, message: dict) -> None:
        rid, method, params = message.get("id"), message.get("method"), message.get("params", {})
        if isinstance(rid, bool) or not isinstance(rid, int) or not isinstance(method, str) or not isinstance(params, dict):
            self.counts["rejected"] += 1
            return await conn.send(conn.error(rid, "bad_request", "expected {id: int, method: str, params: map}"))
        try:
            if method == "generate":
                return self.start_generate(conn, rid, params)
            if method == "cancel":
                task = conn.tasks.get(params.get("id"))
                if task is not None:
                    task.cancel()
                result = {"cancelled": task is not None}
            elif method == "health":
                result = self.health()
            elif method == "stats":
                result = self.stats()
            elif method == "shutdown":
                self.stopping.set()
                result = {}
            else:
                raise LookupError(f"unknown method {method!r} (generate, cancel, stats, health, shutdown)")
        except (TypeError, ValueError, LookupError, RuntimeError) as exc:
            self.counts["rejected"] += 1
            code = ("unknown_method" if isinstance(exc, LookupError)
                    else "unavailable" if isinstance(exc, RuntimeError) else "bad_params")
            return await conn.send(conn.error(rid, code, str(exc)))
        await conn.send({"id": rid, "type": "result", "result": result})

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(next(self.numbers), writer)
        self.connections.add(conn)
        try:
            while True:
                try:
                    message = await read_frame(reader)
                except EOFError:
                    break
                except FrameError as exc:
                    self.counts["rejected"] += 1
                    await conn.send(conn.error(None, "bad_frame", str(exc)))
                    if exc.fatal:
                        break
                    continue
                await self.dispatch(conn, message)
        except ConnectionError:
            pass
        finally:   # a client that hangs up cancels what it asked for
            for task in list(conn.tasks.values()):
                task.cancel()
            self.connections.discard(conn)
            self.last_seen = time.monotonic()
            writer.close()

    async def watch_idle(self) -> None:
        """Exit when no window has been connected for idle_exit_s: the model's memory goes back."""
        while not self.stopping.is_set():
            await asyncio.sleep(min(5.0, self.idle_exit_s / 4))
            if not self.connections and time.monotonic() - self.last_seen > self.idle_exit_s:
                log.info("no clients for %.0f s: exiting", self.idle_exit_s)
                self.stopping.set()


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def hold_daemon_lock(sock: Path):
    """The lock file held for the daemon's life, or None when another daemon holds it."""
    fd = os.open(f"{sock}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def run(daemon: Daemon, address: str) -> int:
    port = parse_tcp(address)
    if port is not None:   # only when asked, and only on loopback: completions expose the user's code
        server = await asyncio.start_server(daemon.handle, "127.0.0.1", port, limit=1 << 16)
        address = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    else:
        sock = Path(address)
        if hold_daemon_lock(sock) is None:
            print(f"another daemon already serves {sock}", file=sys.stderr)
            return 0
        sock.unlink(missing_ok=True)   # a stale socket from a daemon that was killed
        umask = os.umask(0o177)        # born 0600: no moment when others could connect
        try:
            server = await asyncio.start_unix_server(daemon.handle, str(sock), limit=1 << 16)
        finally:
            os.umask(umask)
        os.chmod(sock, 0o600)
    print(f"eyas engine daemon {os.getpid()} listening on {address}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stopping.set)
    tasks = [asyncio.create_task(daemon.load_engine()), asyncio.create_task(daemon.watch_idle())]
    await daemon.stopping.wait()
    server.close()
    for conn in list(daemon.connections):
        conn.writer.close()
    for task in tasks:
        task.cancel()
    if daemon.engine is not None:
        await daemon.engine.close()
    if port is None:
        Path(address).unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eyas engine serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=("torch", "vllm"), default="torch")
    p.add_argument("--model", default=None, help="model name, directory, .gguf file or hub id (default: qwen2.5-coder-0.5b)")
    p.add_argument("--draft", default=None, help="P-EAGLE drafter directory or hub id")
    p.add_argument("--device", default=None)
    p.add_argument("--impl", choices=("lean", "hf"), default=None, help="torch engine forward")
    p.add_argument("--precision", default=None, help="torch engine: auto, float32, bf16, int8, int4, int4-head8")
    p.add_argument("--k", type=int, default=None, help="speculative tokens per step (vLLM)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", default=None, help="Unix socket path (default: one per configuration "
                       "in $XDG_RUNTIME_DIR/eyas, else a private 0700 temp dir)")
    where.add_argument("--tcp", type=int, default=None, metavar="PORT", help="listen on 127.0.0.1:PORT instead")
    p.add_argument("--idle-exit", type=float, default=900.0, help="exit after this many seconds without clients")
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("EYAS_LOG", "INFO"), format="%(asctime)s %(name)s %(message)s")
    address = (f"tcp://127.0.0.1:{args.tcp}" if args.tcp is not None
               else args.socket or str(socket_path(args.engine, args.model, args.draft, args.device, args.impl,
                                                         *([args.precision] if args.precision else []))))

    def load():
        from . import load_engine
        options = dict(device=args.device, draft=args.draft)
        if args.engine == "torch":
            options.update(impl=args.impl, precision=args.precision)
        elif args.k:
            options["num_speculative_tokens"] = args.k
        return load_engine(args.engine, args.model, **options)

    slots = VLLM_TURNS if args.engine == "vllm" else 1
    return asyncio.run(run(Daemon(load, slots, args.idle_exit), address))
