"""The editor-facing face of Eyas: a pygls server over stdio (or 127.0.0.1 TCP).

State lives on `EyasServer`; handlers are small functions named after their LSP method. The model
loads in a worker thread after `initialized` (with work-done progress), so the event loop keeps
answering while it loads; completion handlers are `async`, so `$/cancelRequest` and a newer request
for the same document both stop a generation between decode steps.
"""
from __future__ import annotations

import asyncio
import logging
import os
import statistics
import uuid
from collections import deque
from pathlib import Path

from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from completion.cache import CompletionCache
from completion.context import DocumentTrees, language_for
from completion.engine import load_engine
from completion.models import DEFAULT_MODEL
from completion.service import Completer, CompletionSettings
from completion.telemetry import Telemetry, default_path

from .answers import CANDIDATES, Running, complete_at, warm
from .config import ServerConfig
from .idle_adapt import IdleAdapter, adapt_command
from .positions import LineIndex, PositionError

log = logging.getLogger("eyas")
VERSION = "0.1.0"
STATUS_METHOD = "eyas/status"
ACCEPT_COMMAND = "eyas.accepted"             # the inline item's command: [uri, characters, source]
SHOWN_NOTIFICATION = "eyas/shown"            # {"uri", "length"}: the editor displayed a suggestion
PARTIAL_NOTIFICATION = "eyas/partialAccept"  # {"uri", "length"}: the user took part of one (word/line)
DISMISSED_NOTIFICATION = "eyas/dismissed"    # {"uri"}: the user waved a suggestion away (Escape)
YANK_NOTIFICATION = "eyas/yank"              # {"uri", "text"}: text the user yanked/copied, for context
RECENT = 50   # latencies kept for eyas/status


class EyasServer(LanguageServer):
    def __init__(self, config: ServerConfig | None = None):
        super().__init__("eyas", VERSION)
        self.config = config or ServerConfig()
        self.trees = DocumentTrees()
        self.completer: Completer | None = None
        self.engine_state = "not loaded"   # -> "loading" -> "ready" | "failed"
        self.engine_error: str | None = None
        self.loading: asyncio.Task | None = None
        self.inflight: dict[str, asyncio.Task] = {}    # per document: the request handler waiting
        self.running: dict[str, Running] = {}          # per document: its latest generation
        self.latencies: deque[dict] = deque(maxlen=RECENT)
        self.served = 0        # engine runs that ended with a completion
        self.generations = 0   # engine runs started for requests (a key's cost; pre-fetches apart)
        self.sources = {"cache": 0, "engine": 0, "joined": 0}   # where answers came from (answers.Answer)
        # what the editors report, for acceptance rates (counts and characters)
        self.events = {"shown": 0, "accepted": 0, "partial": 0, "dismissed": 0, "shown_chars": 0,
                       "accepted_chars": 0}
        self.telemetry = Telemetry(default_path())
        self.initialized = False
        self.inline_client = False     # the client speaks textDocument/inlineCompletion
        self.repo = "workspace"
        self.root: Path | None = None                    # the workspace folder (an adapted drafter's key)
        self.line_indexes: dict[str, LineIndex] = {}   # per document, rebuilt when its text changes
        self.cache = CompletionCache()
        # background work that every real request cancels: a pre-fetch, and a KV warm-up after it
        self.prefetching: asyncio.Task | None = None
        self.warming: asyncio.Task | None = None
        self.prefetched = self.warmed = 0
        self.adapter: IdleAdapter | None = None        # the `adapt: idle` run, if one was started
        self.last_cursor: dict[str, int] = {}          # per document: where completions were last asked
        self.warm_documents: set[str] = set()          # documents whose full prompt the engine has cached

    # -- model ---------------------------------------------------------------------------------
    def start_loading(self) -> None:
        if self.loading is not None:
            self.loading.cancel()
        self.engine_state = "loading"   # now, not when the task first runs: status must not lag
        self.loading = asyncio.ensure_future(self._load())

    async def _load(self) -> None:
        cfg = self.config
        self.engine_error = None
        old, self.completer = self.completer, None
        if old is not None:
            await old.engine.close()
        token = await self._begin_progress(f"Eyas: loading {cfg.model or DEFAULT_MODEL}")
        try:
            engine = await asyncio.to_thread(load_engine, cfg.engine, cfg.model, device=cfg.device,
                                           draft=cfg.draft, **self._engine_options(token))
            self.completer = Completer(engine, self.trees, self._settings())
            self.engine_state = "ready"
            log.info("engine ready: %s", engine.info)
            self.start_adapting()
        except Exception as exc:   # a broken model must not take the server down
            self.engine_state, self.engine_error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("engine failed to load")
            self.window_show_message(types.ShowMessageParams(
                types.MessageType.Error, f"Eyas could not load the model: {self.engine_error}"))
        finally:
            if token is not None:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=self.engine_state))

    def _engine_options(self, token) -> dict:
        """What the engine kind needs beyond the model: the torch forward, or the address of a
        daemon or remote server and a way to report the daemon's loading progress."""
        cfg = self.config
        if cfg.engine == "torch":
            return {"impl": cfg.impl, "precision": cfg.precision, "compile_steps": cfg.compile,
                    "workspace": str(self.root) if self.root else None}
        loop = asyncio.get_running_loop()

        def progress(message: str) -> None:   # called from the loading thread
            if token is not None:
                loop.call_soon_threadsafe(self.work_done_progress.report, token,
                                          types.WorkDoneProgressReport(message=message))
        if cfg.engine == "openai":
            return {"url": cfg.url, "api_key_env": cfg.api_key_env, "progress": progress}
        if cfg.engine == "vllm":
            return {"url": cfg.url, "impl": cfg.impl, "progress": progress}
        return {"url": cfg.url, "impl": cfg.impl, "precision": cfg.precision, "progress": progress}

    async def _begin_progress(self, title: str):
        caps = self.client_capabilities
        if not (caps and caps.window and caps.window.work_done_progress):
            return None
        token = str(uuid.uuid4())
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), timeout=5)
        except Exception:
            return None
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=False))
        return token

    def _settings(self) -> CompletionSettings:
        c = self.config
        return CompletionSettings(max_tokens=c.max_tokens, temperature=c.temperature, top_p=c.top_p)

    async def ready_completer(self) -> Completer:
        if self.loading is None:
            self.start_loading()
        await asyncio.shield(self.loading)
        if self.completer is None:
            raise JsonRpcInternalError(f"the completion engine is unavailable: {self.engine_error}")
        return self.completer

    def apply_settings(self, settings: object) -> None:
        new, problems = self.config.merged(settings)
        for p in problems:
            self.window_log_message(types.LogMessageParams(types.MessageType.Warning, f"eyas: ignored setting {p}"))
        reload = new.needs_reload(self.config)
        if reload or new.max_tokens != self.config.max_tokens or new.multiline != self.config.multiline:
            self.cache.clear()   # answers computed under other settings
            for uri in list(self.running):
                self.stop_generation(uri)
        self.config = new
        if new.adapt == "off" and self.adapter is not None:
            self.adapter.stop()
        if reload and self.loading is not None:
            self.start_loading()
        elif new.adapt == "idle":
            self.start_adapting()
        elif self.completer is not None:
            self.completer.settings = self._settings()

    # -- adapting the drafter to the workspace in idle time (idle_adapt.py) ----------------------
    def start_adapting(self) -> None:
        """Once per session, where it can help: the torch engine speculating with the model's
        default drafter, a workspace folder, and no drafter adapted to its current commit yet."""
        from completion.adapt import git_commit, read_provenance, repo_dir, repo_root
        cfg, engine = self.config, self.completer.engine if self.completer else None
        if (cfg.adapt != "idle" or self.adapter is not None or self.root is None or engine is None
                or cfg.engine != "torch" or cfg.draft is not None or not engine.info.draft):
            return
        root = repo_root(self.root)
        done = read_provenance(root)
        if done is not None and done.get("commit") == git_commit(root):
            return
        self.adapter = IdleAdapter(adapt_command(root, engine.info.model), repo_dir(root) / "last-run.json",
                                   self._adapted)
        self.adapter.start()

    async def _adapted(self, adapter: IdleAdapter) -> None:
        from completion.adapt import repo_dir, repo_root
        record = adapter.record or {}
        engine = self.completer.engine if self.completer else None
        if record.get("kept") and engine is not None and hasattr(engine, "use_drafter"):
            await engine.use_drafter(str(repo_dir(repo_root(self.root)) / "drafter"))
            self.window_log_message(types.LogMessageParams(types.MessageType.Info,
                f"eyas: drafter adapted to {self.repo}: held-out AL@4 {record['al_before']['4']:.2f} -> "
                f"{record['al_after']['4']:.2f}"))

    def engine_wanted(self) -> None:
        """A request or a keystroke's warm-up: the idle adaptation steps aside at once."""
        if self.adapter is not None:
            self.adapter.busy()

    # -- documents -----------------------------------------------------------------------------
    def line_index(self, uri: str) -> LineIndex:
        source = self.workspace.get_text_document(uri).source
        index = self.line_indexes.get(uri)
        if index is None or index.text is not source:
            index = self.line_indexes[uri] = LineIndex(source)
        return index

    def stop_generation(self, uri: str) -> None:
        if (running := self.running.pop(uri, None)) is not None:
            running.generation.cancel()

    def cancel_background(self) -> None:
        for task in (self.prefetching, self.warming):
            if task is not None:
                task.cancel()
        self.prefetching = self.warming = None

    def record_latency(self, figures: dict, language_id: str | None) -> None:
        self.latencies.append(figures)
        self.sources[figures["source"]] += 1
        self.telemetry.log("request", language=language_id, engine=self.config.engine,
                           latency_ms=figures["total"], cached=figures["cached"])

    def record(self, event: str, uri: object, length: object) -> None:
        """An editor event; a length that is not a small count is ignored, never fatal."""
        self.events[event] += 1
        if not (isinstance(length, int) and not isinstance(length, bool) and 0 <= length < 1 << 20):
            length = None
        if length is not None and event != "dismissed":
            self.events["shown_chars" if event == "shown" else "accepted_chars"] += length
        doc = self.workspace.text_documents.get(uri) if isinstance(uri, str) else None
        self.telemetry.log(event, language=doc.language_id if doc else None, engine=self.config.engine,
                           length=length)

    def status(self) -> dict:
        totals = [l["total"] for l in self.latencies]
        spec = [l["acceptance_length"] for l in self.latencies if l["acceptance_length"] > 0]
        info = self.completer.engine.info if self.completer else None
        return {
            "state": self.engine_state, "error": self.engine_error,
            "engine": info.engine if info else self.config.engine,
            "model": info.model if info else (self.config.model or DEFAULT_MODEL),
            "draft": info.draft if info else self.config.draft,
            "device": info.device if info else self.config.device,
            "trained": info.trained if info else None,
            "note": info.note if info else "",
            "served": self.served, "generations": self.generations, **self.events, "prefetched": self.prefetched,
            "warmed": self.warmed,
            "cache": {"hits": self.cache.hits, "misses": self.cache.misses}, "answers": dict(self.sources),
            "adapt": self.adapter.status() if self.adapter else {"state": "off" if self.config.adapt == "off"
                                                                 else "not needed"},
            "acceptance_length": round(statistics.fmean(spec), 3) if spec else None,
            "latency_ms": {"last": list(self.latencies)[-1] if self.latencies else None,
                           "p50_total": statistics.median(totals) if totals else None,
                           "recent_totals": totals[-10:]},
        }


def create_server(config: ServerConfig | None = None) -> EyasServer:
    ls = EyasServer(config)
    _register(ls)
    return ls


def _register(ls: EyasServer) -> None:
    @ls.feature(types.INITIALIZE)
    def initialize(ls: EyasServer, params: types.InitializeParams):
        caps = params.capabilities.text_document
        ls.inline_client = bool(caps and caps.inline_completion is not None)
        root = (params.workspace_folders or [None])[0]
        root_uri = root.uri if root else params.root_uri
        if root_uri:
            ls.root = Path(to_fs_path(root_uri) or root_uri)
            ls.repo = ls.root.name or ls.repo
        ls.apply_settings(params.initialization_options)
        ls.initialized = True

    @ls.feature(types.INITIALIZED)
    def initialized(ls: EyasServer, params: types.InitializedParams):
        ls.start_loading()

    @ls.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: EyasServer, params: types.DidOpenTextDocumentParams):
        d = params.text_document
        ls.trees.open(d.uri, language_for(d.language_id, to_fs_path(d.uri) or d.uri), d.text)
        warm(ls, d.uri)

    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: EyasServer, params: types.DidChangeTextDocumentParams):
        uri = params.text_document.uri
        if ls.trees.get(uri) is not None:   # pygls has already applied the edits
            ls.trees.update(uri, ls.workspace.get_text_document(uri).source)
            last = params.content_changes[-1] if params.content_changes else None
            if isinstance(last, types.TextDocumentContentChangePartial):   # the caret sits after it
                try:
                    at = ls.line_index(uri).offset(last.range.start, ls.workspace.position_encoding)
                    ls.last_cursor[uri] = at + len(last.text)
                except PositionError:
                    pass
            warm(ls, uri)

    @ls.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: EyasServer, params: types.DidSaveTextDocumentParams):
        warm(ls, params.text_document.uri)

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: EyasServer, params: types.DidCloseTextDocumentParams):
        uri = params.text_document.uri
        ls.trees.close(uri)
        ls.line_indexes.pop(uri, None)
        ls.cache.forget(uri)
        ls.last_cursor.pop(uri, None)
        ls.warm_documents.discard(uri)
        ls.stop_generation(uri)
        if (task := ls.inflight.pop(uri, None)) is not None:
            task.cancel()

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: EyasServer, params: types.DidChangeConfigurationParams):
        ls.apply_settings(params.settings)

    @ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: EyasServer, params: types.InlineCompletionParams):
        if params.context and params.context.selected_completion_info is not None:
            return None   # a completion popup is open: items would have to extend its text
        invoked = params.context is not None and params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        answer = await complete_at(ls, params.text_document.uri, params.position,
                                   candidates=CANDIDATES if invoked else 1)
        if answer is None:
            return None
        at = types.Range(answer.position, answer.position)
        return types.InlineCompletionList(items=[
            types.InlineCompletionItem(
                insert_text=text, range=at,
                command=types.Command(title="Eyas: accepted", command=ACCEPT_COMMAND,
                                      arguments=[params.text_document.uri, len(text), answer.source]))
            for text in answer.texts])

    @ls.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
    async def completion(ls: EyasServer, params: types.CompletionParams):
        if ls.inline_client:   # it shows our ghost text already; don't run the model twice
            return types.CompletionList(is_incomplete=False, items=[])
        answer = await complete_at(ls, params.text_document.uri, params.position)
        if answer is None:
            return types.CompletionList(is_incomplete=True, items=[])
        text, position = answer.texts[0], answer.position
        first = text.splitlines()[0] if text.strip() else text
        item = types.CompletionItem(
            label=first.strip()[:80] or text[:80], kind=types.CompletionItemKind.Text, detail="Eyas",
            text_edit=types.TextEdit(types.Range(position, position), text),
            sort_text="0", filter_text=first, insert_text_format=types.InsertTextFormat.PlainText)
        return types.CompletionList(is_incomplete=True, items=[item])

    @ls.command(ACCEPT_COMMAND)
    def accepted(ls: EyasServer, *args):
        ls.record("accepted", args[0] if args else None, args[1] if len(args) > 1 else None)

    @ls.feature(SHOWN_NOTIFICATION)
    def shown(ls: EyasServer, params=None):
        ls.record("shown", getattr(params, "uri", None), getattr(params, "length", None))

    @ls.feature(PARTIAL_NOTIFICATION)
    def partially_accepted(ls: EyasServer, params=None):
        ls.record("partial", getattr(params, "uri", None), getattr(params, "length", None))

    @ls.feature(YANK_NOTIFICATION)
    def yanked(ls: EyasServer, params=None):
        text, uri = getattr(params, "text", None), getattr(params, "uri", None)
        if isinstance(text, str):
            ls.trees.recent.add(uri if isinstance(uri, str) else "untitled:yank", text, "yanked")

    @ls.feature(DISMISSED_NOTIFICATION)
    def dismissed(ls: EyasServer, params=None):
        ls.record("dismissed", getattr(params, "uri", None), None)

    @ls.feature(STATUS_METHOD)
    def status(ls: EyasServer, params=None):
        return ls.status()


def serve(config: ServerConfig, tcp_port: int | None = None) -> None:
    logging.basicConfig(level=os.environ.get("EYAS_LOG", "INFO"), format="%(asctime)s %(name)s %(message)s")
    if os.environ.get("EYAS_LOG", "INFO") != "DEBUG":
        logging.getLogger("pygls").setLevel(logging.WARNING)   # it logs every message at INFO
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")   # stdout is the protocol channel
    ls = create_server(config)
    if tcp_port is not None:
        ls.start_tcp("127.0.0.1", tcp_port)   # loopback only: completions expose the user's code
    else:
        ls.start_io()
