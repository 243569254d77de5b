"""Engines: token ids in, streamed chunks out (DESIGN §4)."""
from .base import Chunk, Engine, EngineInfo, GenerationParams, Stats

__all__ = ["Chunk", "Engine", "EngineInfo", "GenerationParams", "Stats", "load_engine"]


def default_threads() -> int:
    """Torch threads for the engine: EYAS_THREADS, else every core of a small machine (up to 4)
    and all but one of a larger one. A key's answer is a short burst of prefill that two cores
    finish in about half the time of one (docs/bench-session.md); on a larger machine the spare
    core keeps the editor and the event loop responsive."""
    import os
    if os.environ.get("EYAS_THREADS"):
        return max(1, int(os.environ["EYAS_THREADS"]))
    cores = os.cpu_count() or 2
    return cores if cores <= 4 else cores - 1


ENGINE_KINDS = ("torch", "daemon", "vllm", "openai")
# The torch engine's `precision`: activations' dtype, and for int8 / int4 weight-only quantized
# projections in the lean forward; "auto" picks per device (torch_engine.resolve_precision).
PRECISIONS = ("auto", "float32", "bf16", "int8", "int4", "int4-head8")


def load_engine(kind: str = "torch", model: str | None = None, **kw) -> Engine:
    """torch: in this process. daemon: the torch engine in the shared daemon (started on demand).
    vllm: vLLM in this process when it is importable, else in a daemon under .venv-vllm.
    openai: a remote OpenAI-compatible /v1/completions server (`url=`)."""
    import importlib.util
    if kind == "torch":
        import torch
        torch.set_num_threads(default_threads())
        from .torch_engine import TorchEngine
        return TorchEngine.load(model, **kw)
    if kind == "vllm" and importlib.util.find_spec("vllm") is not None:
        from .vllm_engine import VllmEngine   # only the vLLM venv gets here
        return VllmEngine.load(model, **kw)
    if kind in ("daemon", "vllm"):
        # vLLM cannot be imported beside our transformers: it runs in a daemon under .venv-vllm.
        from .daemon_client import DaemonEngine
        return DaemonEngine.load("vllm" if kind == "vllm" else "torch", model, **kw)
    if kind == "openai":
        from .openai_engine import OpenAIEngine
        return OpenAIEngine.load(model, **kw)
    raise ValueError(f"unknown engine {kind!r} (available: {', '.join(ENGINE_KINDS)})")
