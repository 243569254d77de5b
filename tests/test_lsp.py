"""End to end over real stdio: the `eyas serve` process with the pocket pair."""
import asyncio
import os
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from completion.telemetry import summarize
from conftest import SERVER_CMD

pytestmark = pytest.mark.asyncio(loop_scope="module")

URI = "file:///ws/demo.py"
SOURCE = "import os\n\n\ndef area(w, h):\n    \n\n\nclass Shape:\n    def size(self):\n        return 1\n"
CAPS = t.ClientCapabilities(
    general=t.GeneralClientCapabilities(position_encodings=[t.PositionEncodingKind.Utf16]),
    window=t.WindowClientCapabilities(work_done_progress=True),
    text_document=t.TextDocumentClientCapabilities(inline_completion=t.InlineCompletionClientCapabilities()))


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_CMD))
async def client(lsp_client: LanguageClient):
    lsp_client.init_result = await lsp_client.initialize_session(t.InitializeParams(
        capabilities=CAPS, workspace_folders=[t.WorkspaceFolder("file:///ws", "ws")]))
    yield
    await lsp_client.shutdown_session()


def open_doc(client, uri, text, language="python", version=1):
    client.text_document_did_open(t.DidOpenTextDocumentParams(t.TextDocumentItem(uri, language, version, text)))


def inline(client, uri, line, character, kind=t.InlineCompletionTriggerKind.Automatic):
    return client.text_document_inline_completion_async(t.InlineCompletionParams(
        text_document=t.TextDocumentIdentifier(uri), position=t.Position(line, character),
        context=t.InlineCompletionContext(trigger_kind=kind)))


def as_dict(obj):
    """pygls hands back custom results as namedtuples."""
    if hasattr(obj, "_asdict"):
        return {k: as_dict(v) for k, v in obj._asdict().items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj


async def status(client):
    return as_dict(await client.protocol.send_request_async("eyas/status", None))


async def test_capabilities(client):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    sync = caps.text_document_sync
    assert sync.change == t.TextDocumentSyncKind.Incremental
    assert caps.position_encoding == t.PositionEncodingKind.Utf16


async def test_inline_completion_and_status(client):
    open_doc(client, URI, SOURCE)
    result = await inline(client, URI, 4, 4)
    st = await status(client)
    assert st["state"] == "ready" and st["engine"] == "torch" and st["device"] == "cpu"
    assert st["trained"] is True and "pocket" in st["note"] and st["draft"] is None
    last = st["latency_ms"]["last"]
    assert last is not None and last["tokens"] >= 1
    for key in ("context", "prompt", "prefill", "decode", "postprocess", "total"):
        assert key in last
    if result is not None:   # a small model may produce nothing worth showing here
        item = result.items[0]
        assert item.range.start == t.Position(4, 4) and item.insert_text
    # the model loaded with work-done progress: begin ... end
    kinds = [type(r).__name__ for reports in client.progress_reports.values() for r in reports]
    assert "WorkDoneProgressBegin" in kinds and "WorkDoneProgressEnd" in kinds


async def test_incremental_change_reuses_prefix(client):
    uri = "file:///ws/reuse.py"
    open_doc(client, uri, SOURCE)
    await inline(client, uri, 4, 4)
    client.text_document_did_change(t.DidChangeTextDocumentParams(
        t.VersionedTextDocumentIdentifier(version=2, uri=uri),
        [t.TextDocumentContentChangePartial(range=t.Range(t.Position(4, 4), t.Position(4, 4)), text="r")]))
    await inline(client, uri, 4, 5)
    last = (await status(client))["latency_ms"]["last"]
    assert last["reused_tokens"] > 0


async def test_newer_request_cancels_older(client):
    uri = "file:///ws/race.py"
    open_doc(client, uri, SOURCE)
    older = asyncio.ensure_future(inline(client, uri, 4, 4))
    await asyncio.sleep(0.01)
    newer = await inline(client, uri, 4, 4)
    with pytest.raises(JsonRpcException) as err:
        await older
    assert err.value.code == -32800   # RequestCancelled
    assert newer is None or newer.items


async def test_cancel_request(client):
    uri = "file:///ws/cancel.py"
    open_doc(client, uri, SOURCE)
    params = t.InlineCompletionParams(
        text_document=t.TextDocumentIdentifier(uri), position=t.Position(4, 4),
        context=t.InlineCompletionContext(trigger_kind=t.InlineCompletionTriggerKind.Automatic))
    fut = asyncio.wrap_future(client.protocol.send_request(
        t.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="to-cancel"))
    await asyncio.sleep(0.01)
    client.protocol.notify(t.CANCEL_REQUEST, t.CancelParams(id="to-cancel"))
    with pytest.raises(JsonRpcException) as err:
        await fut
    assert err.value.code == -32800   # RequestCancelled
    assert (await status(client))["state"] == "ready"   # still serving


async def test_configuration_max_tokens_and_enable(client):
    uri = "file:///ws/conf.py"
    open_doc(client, uri, SOURCE)
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(
        settings={"eyas": {"maxTokens": 2, "temperature": "hot"}}))
    await inline(client, uri, 4, 4)
    assert (await status(client))["latency_ms"]["last"]["tokens"] <= 2
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(
        settings={"eyas": {"enable": {"python": False}}}))
    served = (await status(client))["served"]
    assert await inline(client, uri, 4, 4) is None
    assert (await status(client))["served"] == served
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(
        settings={"eyas": {"enable": {"python": True}, "maxTokens": 16}}))


async def test_completion_fallback_is_empty_for_inline_clients(client):
    uri = "file:///ws/fallback.py"
    open_doc(client, uri, SOURCE)
    result = await client.text_document_completion_async(t.CompletionParams(
        t.TextDocumentIdentifier(uri), t.Position(4, 4)))
    assert list(result.items) == []


# -- bad input: each case gets an empty result or a clear error, and the server keeps serving --

async def test_unknown_uri(client):
    assert await inline(client, "file:///ws/never-opened.py", 0, 0) is None


@pytest.mark.parametrize("line,character,fragment", [
    (99, 0, "past the end of the document"),
    (4, 50, "past the end of line"),
])
async def test_position_out_of_range(client, line, character, fragment):
    open_doc(client, URI, SOURCE)
    with pytest.raises(JsonRpcException) as err:
        await inline(client, URI, line, character)
    assert err.value.code == -32602 and fragment in str(err.value)
    assert (await status(client))["state"] == "ready"


async def test_position_inside_surrogate_pair(client):
    uri = "file:///ws/emoji.py"
    open_doc(client, uri, "s = '🎉'\n")
    with pytest.raises(JsonRpcException) as err:
        await inline(client, uri, 0, 6)   # between the two UTF-16 halves of the emoji
    assert "inside a character" in str(err.value)
    await inline(client, uri, 0, 7)        # just after it is fine


async def test_huge_binary_crlf_and_unknown_language(client):
    big = "def f(x):\n    return x\n" * 220_000          # ~5 MB
    open_doc(client, "file:///ws/big.py", big)
    await inline(client, "file:///ws/big.py", 300_000, 4)
    open_doc(client, "file:///ws/bin.py", "ab\x00\x01\x02cd\n\x00\n")
    await inline(client, "file:///ws/bin.py", 0, 3)
    open_doc(client, "file:///ws/crlf.py", "def f(x):\r\n    \r\n")
    res = await inline(client, "file:///ws/crlf.py", 1, 4)
    if res is not None:
        assert "\n" not in res.items[0].insert_text.replace("\r\n", "")
    open_doc(client, "file:///ws/notes.zz", "some text in a language nobody knows\n", language="zz")
    await inline(client, "file:///ws/notes.zz", 0, 4)
    assert (await status(client))["state"] == "ready"


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_CMD))
async def utf8_client(lsp_client: LanguageClient):
    caps = t.ClientCapabilities(general=t.GeneralClientCapabilities(
        position_encodings=[t.PositionEncodingKind.Utf8, t.PositionEncodingKind.Utf16]))
    lsp_client.init_result = await lsp_client.initialize_session(t.InitializeParams(capabilities=caps))
    yield
    await lsp_client.shutdown_session()


async def test_utf8_negotiation_and_completion_fallback(utf8_client):
    assert utf8_client.init_result.capabilities.position_encoding == t.PositionEncodingKind.Utf8
    uri = "file:///ws/u8.py"
    open_doc(utf8_client, uri, "s = 'é'\nx = ")
    with pytest.raises(JsonRpcException):   # byte 6 is inside the two-byte 'é'
        await inline(utf8_client, uri, 0, 6)
    # no inline capability: textDocument/completion runs the model
    result = await utf8_client.text_document_completion_async(t.CompletionParams(
        t.TextDocumentIdentifier(uri), t.Position(1, 4)))
    assert isinstance(result, t.CompletionList)
    for item in result.items:
        assert item.text_edit.range.start == t.Position(1, 4)


async def switch_model(client, model: str) -> dict:
    """Change the model setting; the status once the reload has ended."""
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings={"eyas": {"model": model}}))
    for _ in range(100):
        st = await status(client)
        if st["state"] != "loading":
            break
        await asyncio.sleep(0.1)
    return st


async def test_model_switch_failure_is_reported_not_frozen(client):
    """Runs last in this module: it reloads the model three times."""
    uri = "file:///ws/switch.py"
    open_doc(client, uri, SOURCE)
    st = await switch_model(client, "/nonexistent/model-dir")
    assert st["state"] == "failed" and "nonexistent" in st["error"]
    with pytest.raises(JsonRpcException, match="engine is unavailable"):
        await inline(client, uri, 4, 4)
    # an unknown name: the user is told what the names are, in a message, and the server keeps serving
    st = await switch_model(client, "qwen9-coder")
    assert st["state"] == "failed" and "unknown model 'qwen9-coder'" in st["error"]
    assert any("qwen9-coder" in m.message and "qwen2.5-coder-0.5b" in m.message and m.type == t.MessageType.Error
               for m in client.messages)
    await switch_model(client, "pocket")
    await inline(client, uri, 4, 4)
    assert (await status(client))["state"] == "ready"


async def test_editor_events_count_towards_acceptance(client):
    """What VS Code and Neovim report: shown and partial accepts as notifications, a full accept as
    the item's command. Lengths that are not counts are ignored, never fatal."""
    open_doc(client, "file:///ws/events.py", SOURCE)
    result = await inline(client, "file:///ws/events.py", 4, 4)
    before = await status(client)
    if result is not None:
        assert result.items[0].command.command == "eyas.accepted"
        item = result.items[0]
        assert list(item.command.arguments) == ["file:///ws/events.py", len(item.insert_text), "engine"]
    client.protocol.notify("eyas/shown", {"uri": "file:///ws/events.py", "length": 12})
    client.protocol.notify("eyas/partialAccept", {"uri": "file:///ws/events.py", "length": 5})
    client.protocol.notify("eyas/shown", {"uri": "file:///ws/events.py", "length": "lots"})
    client.protocol.notify("eyas/shown", None)
    client.protocol.notify("eyas/yank", {"uri": "file:///ws/events.py", "text": "def helper(a, b, c):\n    return a"})
    client.protocol.notify("eyas/yank", {"text": 42})
    await client.workspace_execute_command_async(
        t.ExecuteCommandParams(command="eyas.accepted", arguments=["file:///ws/events.py", 7]))
    st = await status(client)
    assert st["shown"] - before["shown"] == 3 and st["shown_chars"] - before["shown_chars"] == 12
    assert st["partial"] - before["partial"] == 1 and st["accepted"] - before["accepted"] == 1
    assert st["accepted_chars"] - before["accepted_chars"] == 12
    # the same events, kept locally for `eyas stats` (conftest points EYAS_TELEMETRY at a temp file)
    local = summarize(Path(os.environ["EYAS_TELEMETRY"]))["language"]["python"]
    assert local["shown"] >= 2 and local["accepted"] >= 1 and local["partials"] >= 1 and local["requests"] >= 1


async def test_multiline_never_and_speculative_k_settings(client):
    uri = "file:///ws/multi.py"
    open_doc(client, uri, "def total(xs):\n    \n")
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(
        settings={"eyas": {"multiline": {"python": "never"}, "speculativeK": 99, "maxTokens": 32}}))
    result = await inline(client, uri, 1, 4)
    if result is not None:
        assert "\n" not in result.items[0].insert_text
    logs = [m.message for m in client.log_messages]
    assert any("speculativeK" in m and "1..32" in m for m in logs)
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(
        settings={"eyas": {"multiline": "auto", "maxTokens": 16}}))


def change(client, uri, version, line, character, text):
    client.text_document_did_change(t.DidChangeTextDocumentParams(
        t.VersionedTextDocumentIdentifier(uri=uri, version=version),
        [t.TextDocumentContentChangePartial(t.Range(t.Position(line, character), t.Position(line, character)), text)]))


async def wait_for(predicate, client, timeout=20.0):
    for _ in range(int(timeout / 0.05)):
        st = await status(client)
        if predicate(st):
            return st
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; last status {st}")


async def test_typed_through_cache_and_prefetch(client):
    """Typing into the ghost text answers from the cache (no engine call); after an answer the
    next completion, as if it were accepted, is computed in the background, so accepting it and
    asking again answers from the cache too."""
    uri = "file:///ws/cache.py"
    source = "import os\n\n\ndef list_files(root):\n    return sorted(os.listdir(root\n"
    open_doc(client, uri, source)
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings={"eyas": {"maxTokens": 24}}))
    line, col = 4, len("    return sorted(os.listdir(root")
    prefetched = (await status(client))["prefetched"]
    first = await inline(client, uri, line, col)
    assert first is not None, "the pocket model proposes something at the end of this call"
    text = first.items[0].insert_text
    st = await wait_for(lambda s: s["prefetched"] > prefetched, client)
    served, hits = st["served"], st["cache"]["hits"]
    change(client, uri, 2, line, col, text[0])                       # type its first character
    typed = await inline(client, uri, line, col + 1)
    assert typed is not None and typed.items[0].insert_text == text[1:]
    st = await status(client)
    assert st["served"] == served and st["cache"]["hits"] == hits + 1 and st["latency_ms"]["last"]["cached"]
    change(client, uri, 3, line, col + 1, text[1:])                  # accept the rest
    offset = source.index("root\n") + 4 + len(text)
    now = source[:offset - len(text)] + text + source[offset - len(text):]
    pos_line, pos_col = now.count("\n", 0, offset), offset - (now.rfind("\n", 0, offset) + 1)
    final = await inline(client, uri, pos_line, pos_col)
    st = await status(client)
    assert st["served"] == served, ("the pre-fetched completion answered", repr(text), final)


async def test_invoked_request_returns_distinct_candidates(client):
    uri = "file:///ws/candidates.py"
    open_doc(client, uri, "import os\n\n\ndef list_files(root):\n    \n")
    served = (await status(client))["served"]
    result = await inline(client, uri, 4, 4, kind=t.InlineCompletionTriggerKind.Invoked)
    assert (await status(client))["served"] - served == 3     # one greedy run, two sampled
    if result is not None:
        texts = [item.insert_text for item in result.items]
        assert 1 <= len(texts) <= 3 and len(set(texts)) == len(texts)
    auto = await inline(client, uri, 4, 4)
    assert auto is None or len(auto.items) == 1


async def test_idle_edit_warms_the_prefix_cache(client):
    """An edit followed by a pause prefills the next prompt, so the request that follows reuses it."""
    uri = "file:///ws/warm.py"
    open_doc(client, uri, SOURCE)
    await inline(client, uri, 4, 4)
    warmed = (await status(client))["warmed"]
    change(client, uri, 2, 4, 4, "x = w\n    ")            # type a line at the cursor, then pause
    await wait_for(lambda s: s["warmed"] > warmed, client)
    await inline(client, uri, 5, 4)
    last = (await status(client))["latency_ms"]["last"]
    assert last["reused_tokens"] >= last["prompt_tokens"] - 1    # all of it was prefilled already


async def test_a_document_builds_small_prompts_until_its_full_prompt_is_warm(client):
    """Typing at once in a long file just opened: requests build small prompts (answers.QUICK_BUDGET:
    a cold 1k-token prefill is longer than a typist's pause on 2 cores) until a warm-up in a pause
    has prefilled the full one; the next request builds the full prompt and reuses that prefill."""
    uri = "file:///ws/long.py"
    body = "".join(f"def step_{i}(x):\n    return x * {i} + {i * 7 % 13}\n\n\n" for i in range(120))
    open_doc(client, uri, body + "def last(x):\n    \n")
    line = body.count("\n") + 1
    await inline(client, uri, line, 4)
    first = (await status(client))["latency_ms"]["last"]
    change(client, uri, 2, line, 4, "y = x\n    ")
    await inline(client, uri, line + 1, 4)
    second = (await status(client))["latency_ms"]["last"]
    assert first["prompt_tokens"] <= 256 + 32 + 32 and second["prompt_tokens"] <= 256 + 32 + 32
    warmed = (await status(client))["warmed"]
    await wait_for(lambda s: s["warmed"] > warmed, client)   # the pause after the answer
    change(client, uri, 3, line + 1, 4, "z")
    await inline(client, uri, line + 1, 5)
    later = (await status(client))["latency_ms"]["last"]
    assert later["prompt_tokens"] > 256 + 32 + 32 and later["reused_tokens"] > 256 + 32 + 32


async def test_a_key_that_types_the_running_completion_joins_it(client):
    """An editor's next key cancels the request in flight, not its generation: a key that types
    what the generation produces is answered from it (no new engine run); one that types something
    else starts a new one. Items say where they came from."""
    text = "def total(xs):\n    result = 0\n    for x in xs:\n        \n"
    open_doc(client, "file:///ws/join-ref.py", text)
    reference = await inline(client, "file:///ws/join-ref.py", 3, 8)
    assert reference is not None and reference.items[0].command.arguments[2] == "engine"
    first = reference.items[0].insert_text
    uri = "file:///ws/join.py"
    open_doc(client, uri, text)
    started = (await status(client))["generations"]
    pending = asyncio.ensure_future(inline(client, uri, 3, 8))
    await wait_for(lambda s: s["generations"] == started + 1, client)
    change(client, uri, 2, 3, 8, first[0])
    joined = await inline(client, uri, 3, 9)
    assert joined.items[0].insert_text == first[1:] and joined.items[0].command.arguments[2] in ("joined", "cache")
    assert (await status(client))["generations"] == started + 1
    await asyncio.gather(pending, return_exceptions=True)   # answered, or cancelled by the newer request
    change(client, uri, 3, 3, 9, "zz")
    other = await inline(client, uri, 3, 11)
    assert (await status(client))["generations"] == started + 2
    assert other is None or other.items[0].command.arguments[2] == "engine"
