"""The `adapt: "idle"` setting: `eyas adapt` on the workspace while the user is not typing.

The run is a child process at the lowest CPU priority (nice 19, one thread). Any use of the engine
(a completion request, a keystroke's warm-up) pauses it at once with SIGSTOP: it keeps its memory
and loses nothing, and its budget counts CPU time (`--clock cpu`), so a pause does not spend it.
After `idle_s` seconds without engine use it continues (SIGCONT). When it ends, `on_done` gets the
run's record (`last-run.json`), and the server swaps a kept drafter in between requests. If the
server dies, the kernel kills the child (PR_SET_PDEATHSIG), paused or not; the child's shards and
the previous drafter are written atomically, so nothing is lost either way.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

IDLE_S = 30.0          # seconds without engine use before the run starts or continues
MINUTES = 15.0         # the run's CPU budget
PR_SET_PDEATHSIG = 1


def adapt_command(root: Path, model: str, minutes: float = MINUTES) -> list[str]:
    return [sys.executable, "-m", "completion.adapt", str(root), "--model", model, "--minutes", str(minutes),
            "--threads", "1", "--clock", "cpu", "--no-speed"]


def _low_priority_child() -> None:   # runs in the child between fork and exec
    os.nice(19)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class IdleAdapter:
    def __init__(self, command: list[str], record_path: Path, on_done, idle_s: float = IDLE_S):
        self.command, self.record_path, self.on_done, self.idle_s = command, record_path, on_done, idle_s
        self.proc: subprocess.Popen | None = None
        self.state = "waiting"            # waiting | running | paused | done | failed
        self.record: dict | None = None
        self.last_use = time.monotonic()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self._kill()

    def busy(self) -> None:
        """The engine is wanted: pause the run now."""
        self.last_use = time.monotonic()
        if self.proc is not None and self.proc.poll() is None and self.state == "running":
            self.proc.send_signal(signal.SIGSTOP)
            self.state = "paused"

    def idle(self) -> bool:
        return time.monotonic() - self.last_use >= self.idle_s

    async def run(self) -> None:
        """Start when idle, pause on use, continue when idle again, report the end. Cancel to stop."""
        try:
            while True:
                await asyncio.sleep(0.25)
                if self.proc is None:
                    if self.idle():
                        log.info("adapt: starting %s", " ".join(self.command))
                        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL, preexec_fn=_low_priority_child)
                        self.state = "running"
                    continue
                rc = self.proc.poll()
                if rc is not None:
                    self.state = "done" if rc == 0 else "failed"
                    if rc == 0 and self.record_path.exists():
                        self.record = json.loads(self.record_path.read_text())
                    log.info("adapt: ended with %s: %s", rc, self.record)
                    await self.on_done(self)
                    return
                if self.state == "paused" and self.idle():
                    self.proc.send_signal(signal.SIGCONT)
                    self.state = "running"
        finally:
            self._kill()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()       # SIGKILL works on a stopped process too; nothing is half-written
            self.proc.wait()
            self.state = "stopped"

    def status(self) -> dict:
        out = {"state": self.state}
        if self.record:
            out.update({k: self.record.get(k) for k in ("al_before", "al_after", "kept")})
        return out
