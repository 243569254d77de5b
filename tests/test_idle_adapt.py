"""The idle-mode adaptation run (lsp_server/idle_adapt.py) with a real child process: it starts
only after the idle wait, runs at nice 19, is stopped (state T) the moment the engine is wanted and
continues once idle again, reports its record when it ends, and dies with a stop(), paused or not."""
import asyncio
import json
import sys
import time

from lsp_server.config import ServerConfig
from lsp_server.idle_adapt import IdleAdapter, adapt_command

CHILD = ("import json, sys, time\n"
         "for _ in range(30): time.sleep(0.05)\n"
         "open(sys.argv[1], 'w').write(json.dumps({'kept': True, 'al_before': {'4': 1.2}, 'al_after': {'4': 1.5}}))\n")


def proc_state(pid: int) -> tuple[str, int]:
    """(state letter, nice) from /proc/PID/stat."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return fields[0], int(fields[16])


async def wait_for(check, timeout=10.0):
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.02)


async def test_the_run_waits_for_idle_pauses_on_use_and_reports_its_end(tmp_path):
    record = tmp_path / "last-run.json"
    ended = []

    async def on_done(adapter):
        ended.append(adapter.record)

    adapter = IdleAdapter([sys.executable, "-c", CHILD, str(record)], record, on_done, idle_s=0.5)
    adapter.start()
    await asyncio.sleep(0.3)
    assert adapter.state == "waiting" and adapter.proc is None          # not idle long enough yet
    await wait_for(lambda: adapter.state == "running")
    assert proc_state(adapter.proc.pid)[1] == 19                       # the lowest priority
    await asyncio.sleep(0.2)
    t = time.monotonic()
    adapter.busy()                                                      # a request: stopped at once
    await wait_for(lambda: proc_state(adapter.proc.pid)[0] == "T", timeout=1.0)
    assert time.monotonic() - t < 1.0 and adapter.state == "paused"
    for _ in range(10):                                                 # typing goes on: stays paused
        adapter.busy()
        await asyncio.sleep(0.1)
        assert proc_state(adapter.proc.pid)[0] == "T" and not record.exists()
    await wait_for(lambda: adapter.state == "running", timeout=2.0)     # idle again: it continues
    await wait_for(lambda: ended, timeout=10.0)
    assert adapter.state == "done" and ended == [json.loads(record.read_text())]
    assert adapter.status() == {"state": "done", "al_before": {"4": 1.2}, "al_after": {"4": 1.5}, "kept": True}


async def test_stop_kills_a_paused_run(tmp_path):
    async def on_done(adapter):
        raise AssertionError("a stopped run does not report")

    adapter = IdleAdapter([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "r.json", on_done,
                          idle_s=0.0)
    adapter.start()
    await wait_for(lambda: adapter.state == "running")
    adapter.busy()
    await wait_for(lambda: proc_state(adapter.proc.pid)[0] == "T", timeout=1.0)
    adapter.stop()
    assert adapter.proc.poll() is not None and adapter.state == "stopped"
    await asyncio.sleep(0.3)


def test_the_adapt_setting_and_the_command():
    cfg, problems = ServerConfig().merged({"adapt": "idle"})
    assert cfg.adapt == "idle" and not problems
    cfg, problems = ServerConfig().merged({"adapt": "always"})
    assert cfg.adapt == "off" and problems and "adapt" in problems[0]
    cmd = adapt_command("/src/repo", "qwen2.5-coder-0.5b")
    assert cmd[1:4] == ["-m", "completion.adapt", "/src/repo"] and cmd[-3:] == ["--clock", "cpu", "--no-speed"]
