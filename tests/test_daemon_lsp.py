"""A real `eyas serve` over stdio with `engine: daemon` (tiny random Qwen3): the server starts the
shared daemon with work-done progress; when the daemon is SIGKILLed mid-generation the in-flight
request ends empty within a second, and the next request starts a new daemon and is served."""
import asyncio
import os
import signal
import tempfile
import time

import pytest
import pytest_lsp
from lsprotocol import types as t
from pytest_lsp import ClientServerConfig, LanguageClient

from completion.engine.rpc import call_sync, socket_path
from conftest import SERVER_CMD
from test_lsp import CAPS, inline, open_doc, status

pytestmark = pytest.mark.asyncio(loop_scope="module")

RUN_DIR = tempfile.mkdtemp(prefix="eyas-lsp-daemon-")   # the daemon's socket lives here, not in the user's
URI = "file:///ws/kill.py"
# A function body with an empty line at the cursor: a multi-line completion, which random tokens
# rarely end, so the generation is still running when the daemon is killed.
SOURCE = "import os\n\n\ndef area(w, h):\n    \n"


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=SERVER_CMD, server_env={**os.environ, "XDG_RUNTIME_DIR": RUN_DIR}))
async def client(lsp_client: LanguageClient, tiny_model_dir):
    lsp_client.init_result = await lsp_client.initialize_session(t.InitializeParams(
        capabilities=CAPS, workspace_folders=[t.WorkspaceFolder("file:///ws", "ws")],
        initialization_options={"engine": "daemon", "model": str(tiny_model_dir), "maxTokens": 8,
                                "requestTimeout": 600}))
    lsp_client.tiny = str(tiny_model_dir)
    yield
    await lsp_client.shutdown_session()
    address = daemon_address(lsp_client.tiny)
    try:
        os.kill(call_sync(address, "health")["pid"], signal.SIGKILL)
    except OSError:
        pass


def daemon_address(model: str) -> str:
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = RUN_DIR
    try:
        return str(socket_path("torch", model, None, None, None, "float32"))   # SERVER_CMD's precision
    finally:
        if old is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = old


def set_max_tokens(client, n: int) -> None:
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings={"eyas": {"maxTokens": n}}))


async def wait_until(check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_daemon_killed_mid_generation(client):
    # every answer from the daemon itself: no cache hits, no background requests to count
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(
        settings={"eyas": {"cache": False, "prefetch": False}}))
    open_doc(client, URI, SOURCE)
    first = inline(client, URI, 4, 4)
    await asyncio.wait_for(first, 900)   # starts the daemon: slow on a busy machine
    st = await status(client)
    assert st["state"] == "ready" and st["engine"] == "daemon:torch", st
    kinds = [type(r).__name__ for reports in client.progress_reports.values() for r in reports]
    assert "WorkDoneProgressReport" in kinds and "WorkDoneProgressEnd" in kinds
    address = daemon_address(client.tiny)
    pid = call_sync(address, "health", timeout=60)["pid"]
    served = st["served"]

    set_max_tokens(client, 4000)
    pending = asyncio.ensure_future(inline(client, URI, 4, 4))   # sent now, answered after the kill
    await wait_until(lambda: call_sync(address, "stats", timeout=60)["requests"] >= 1, 120)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    result = await asyncio.wait_for(pending, 30)
    ended_after = time.monotonic() - killed_at
    assert result is None
    assert ended_after < 1.0, f"the in-flight request ended {ended_after:.2f} s after the kill"

    set_max_tokens(client, 8)
    client.text_document_did_change(t.DidChangeTextDocumentParams(
        text_document=t.VersionedTextDocumentIdentifier(version=2, uri=URI),
        content_changes=[t.TextDocumentContentChangePartial(range=t.Range(t.Position(4, 4), t.Position(4, 4)),
                                                            text="r")]))
    # the next request restarts the daemon; one that races the old connection's teardown may end
    # empty like the killed one (the editor asks again on the next key), so allow a second ask
    for _ in range(2):
        await asyncio.wait_for(inline(client, URI, 4, 5), 900)
        st = await status(client)
        if st["served"] == served + 1:
            break
    assert st["served"] == served + 1, st
    assert call_sync(address, "health", timeout=60)["pid"] != pid
