"""Engines: token ids in, streamed chunks out (DESIGN §4)."""
from .base import Chunk, Engine, EngineInfo, GenerationParams, Stats

__all__ = ["Chunk", "Engine", "EngineInfo", "GenerationParams", "Stats", "load_engine"]


def default_threads() -> int:
    """Torch threads for the engine: EYAS_THREADS, else all cores but one. The spare core keeps
    the editor and the server's event loop responsive, and small decode steps on an oversubscribed
    machine are dominated by threads waiting for each other."""
    import os
    if os.environ.get("EYAS_THREADS"):
        return max(1, int(os.environ["EYAS_THREADS"]))
    return max(1, (os.cpu_count() or 2) - 1)


def load_engine(kind: str = "torch", model: str | None = None, **kw) -> Engine:
    if kind == "torch":
        import torch
        torch.set_num_threads(default_threads())
        from .torch_engine import TorchEngine
        return TorchEngine.load(model, **kw)
    raise ValueError(f"unknown engine {kind!r} (available: torch)")
