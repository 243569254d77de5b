"""A client of an OpenAI-compatible `/v1/completions` server (a remote `vllm serve` fleet).

The prompt ids are decoded back to text and sent raw (`prompt`): the FIM markers are already in
it, and vLLM refuses a `suffix` for Qwen. The reply streams as server-sent events; cancelling the
iterating task closes the connection, which makes vLLM abort the request. vLLM's extensions ask
for the generated token ids and our stop ids (`return_token_ids`, `stop_token_ids`); a server that
ignores them still works (ids are then re-encoded from the text). `ignore_eos`: like every engine
here, generation stops on `stop_ids` only.

Plain asyncio streams and a minimal HTTP/1.1 reader, so no new dependency: `Connection: close`,
chunked or plain bodies. Connection failures are retried with backoff before the first byte of a
reply; after that a failure ends the request (its tokens would be lost anyway).
"""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
from typing import AsyncIterator
from urllib.parse import urlsplit

from .base import Chunk, EngineInfo, GenerationParams, Stats
from .rpc import EngineUnavailable

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0      # between two events of a stream (a busy server may queue us a while)
RETRY_DELAYS_S = (0.2, 0.5, 1.0)
MAX_LINE_BYTES = 1 << 20


class Remote:
    """Where the server is and how to talk to it."""

    def __init__(self, url: str, api_key: str | None, connect_timeout: float, read_timeout: float):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s)://host[:port] URL, got {url!r}")
        self.url, self.tls = url, parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.tls else 80)
        self.base = parts.path.rstrip("/").removesuffix("/v1")
        self.api_key, self.connect_timeout, self.read_timeout = api_key, connect_timeout, read_timeout

    async def open(self, method: str, path: str, body: dict | None):
        """(status, headers, reader, writer) once the head of the reply has arrived; retries
        refused and reset connections with backoff."""
        payload = json.dumps(body).encode() if body is not None else b""
        head = [f"{method} {self.base}{path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: close",
                "Accept: text/event-stream, application/json", f"Content-Length: {len(payload)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        if self.api_key:
            head.append(f"Authorization: Bearer {self.api_key}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            await asyncio.sleep(delay)
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, ssl=self.tls or None, limit=MAX_LINE_BYTES),
                    self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                if attempt == len(RETRY_DELAYS_S):
                    raise EngineUnavailable(f"cannot connect to {self.url}: {exc or type(exc).__name__}") from None
                continue
            try:
                writer.write(request)
                status, headers = await asyncio.wait_for(_read_head(reader), self.read_timeout)
                return status, headers, reader, writer
            except asyncio.TimeoutError:
                writer.close()
                raise EngineUnavailable(f"{self.url} did not answer within {self.read_timeout:.0f} s") from None
            except (OSError, ValueError) as exc:
                writer.close()
                raise EngineUnavailable(f"bad reply from {self.url}: {exc}") from None

    def models(self) -> list[str]:
        """The served model names (blocking; at load time only), with the same retries."""
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            time.sleep(delay)
            cls = http.client.HTTPSConnection if self.tls else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.connect_timeout)
            try:
                conn.request("GET", f"{self.base}/v1/models", headers=(
                    {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}))
                reply = conn.getresponse()
                status, body = reply.status, reply.read(1 << 20)
                break
            except (OSError, http.client.HTTPException) as exc:
                if attempt == len(RETRY_DELAYS_S):
                    raise EngineUnavailable(f"cannot reach {self.url}: {exc}") from None
            finally:
                conn.close()
        try:
            listing = json.loads(body)["data"] if status == 200 else None
            return [entry["id"] for entry in listing]
        except (ValueError, KeyError, TypeError):
            raise EngineUnavailable(f"{self.url}/v1/models: HTTP {status}: {body[:200]!r}") from None


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = (await reader.readline()).decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP reply: {status_line[:80]!r}")
    headers = {}
    while (line := (await reader.readline()).decode("latin-1").strip()):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, headers: dict, timeout: float) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive, de-chunked."""
    if "chunked" not in headers.get("transfer-encoding", ""):
        while part := await asyncio.wait_for(reader.read(1 << 16), timeout):
            yield part
        return
    while True:
        size_line = await asyncio.wait_for(reader.readline(), timeout)
        try:
            size = int(size_line.split(b";")[0].strip() or b"x", 16)
        except ValueError:
            raise ValueError(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            return
        yield (await asyncio.wait_for(reader.readexactly(size + 2), timeout))[:-2]   # data + CRLF


async def _events(reader, headers, timeout) -> AsyncIterator[dict]:
    """Server-sent events' `data:` payloads as JSON, until `[DONE]`."""
    pending = b""
    async for part in _body(reader, headers, timeout):
        pending += part
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue   # comments, event names, keep-alives
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            try:
                yield json.loads(data)
            except ValueError:
                raise ValueError(f"an event that is not JSON: {data[:120]!r}") from None
        if len(pending) > MAX_LINE_BYTES:
            raise ValueError("an event line beyond 1 MB")
    raise ValueError("the stream ended without [DONE]")


class OpenAIEngine:
    def __init__(self, remote: Remote, model: str, tokenizer, info: EngineInfo):
        self.remote, self.model, self._tokenizer, self.info = remote, model, tokenizer, info

    @classmethod
    def load(cls, model: str | None = None, *, url: str | None = None, api_key_env: str | None = None,
             tokenizer: str | None = None, connect_timeout: float = CONNECT_TIMEOUT_S,
             read_timeout: float = READ_TIMEOUT_S, progress=None, **_ignored) -> "OpenAIEngine":
        """`model`: the served model name (default: the server's first model, which `vllm serve DIR`
        names DIR); `tokenizer`: where its tokenizer is (default: `model`). `**_ignored` takes the
        local-engine options (device, draft, impl) that mean nothing for a remote server."""
        from transformers import AutoTokenizer

        if not url:
            raise ValueError("the openai engine needs a server URL (--url / setting `url`)")
        api_key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not api_key:
            raise ValueError(f"the API key variable {api_key_env} is not set")
        remote = Remote(url, api_key, connect_timeout, read_timeout)
        if progress:
            progress(f"asking {url} for its models")
        if model is None:
            names = remote.models()
            if not names:
                raise EngineUnavailable(f"{url}/v1/models lists no model: pass the model name")
            model = names[0]
        tok = AutoTokenizer.from_pretrained(tokenizer or model)
        return cls(remote, model, tok, EngineInfo(engine="openai", model=model, device=url))

    def tokenizer(self):
        return self._tokenizer

    def _body(self, prompt_ids: list[int], params: GenerationParams) -> dict:
        body = {"model": self.model, "prompt": self._tokenizer.decode(prompt_ids, skip_special_tokens=False),
                "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "stream": True, "return_token_ids": True, "skip_special_tokens": False,
                "stop_token_ids": list(params.stop_ids), "ignore_eos": True}   # our stops are stop_ids
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    async def generate(self, prompt_ids: list[int], params: GenerationParams) -> AsyncIterator[Chunk]:
        stats = Stats(prompt_tokens=len(prompt_ids))
        t0 = time.perf_counter()
        status, headers, reader, writer = await self.remote.open("POST", "/v1/completions",
                                                                 self._body(prompt_ids, params))
        try:
            if status != 200:
                detail = b"".join([p async for p in _body(reader, headers, self.remote.read_timeout)])[:300]
                raise EngineUnavailable(f"{self.remote.url}: HTTP {status}: {detail!r}")
            first = True
            async for event in _events(reader, headers, self.remote.read_timeout):
                if isinstance(event, dict) and "error" in event:   # vLLM reports engine failures in-stream
                    raise EngineUnavailable(f"{self.remote.url}: {str(event['error'])[:300]}")
                choice = (event.get("choices") or [{}])[0] if isinstance(event, dict) else {}   # [] : a usage event
                if not isinstance(choice, dict) or not isinstance(choice.get("text", ""), str):
                    raise ValueError(f"an event without choices[0].text: {str(event)[:120]}")
                text = choice.get("text") or ""
                ids = choice.get("token_ids")
                if not isinstance(ids, list):
                    ids = self._tokenizer.encode(text, add_special_tokens=False)
                now = (time.perf_counter() - t0) * 1e3
                if first:   # time to the first event: the server's queueing + prefill
                    stats.prefill_ms, first = now, False
                stats.decode_ms = now - stats.prefill_ms
                stats.generated_tokens += len(ids)
                stats.finish_reason = {"length": "length", "stop": "stop"}.get(choice.get("finish_reason"),
                                                                              stats.finish_reason)
                if ids or text:
                    yield Chunk(list(ids), text, stats)
        except asyncio.TimeoutError:
            raise EngineUnavailable(f"{self.remote.url} went silent for {self.remote.read_timeout:.0f} s") from None
        except (ValueError, asyncio.IncompleteReadError, OSError) as exc:
            raise EngineUnavailable(f"bad stream from {self.remote.url}: {exc}") from None
        except (asyncio.CancelledError, GeneratorExit):
            stats.finish_reason = "cancelled"
            raise
        finally:
            writer.close()   # closing is the cancel: vLLM aborts a request whose client went away

    async def close(self) -> None:
        pass
