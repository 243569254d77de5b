"""Engines: token ids in, streamed chunks out (DESIGN §4)."""
from .base import Chunk, Engine, EngineInfo, GenerationParams, Stats

__all__ = ["Chunk", "Engine", "EngineInfo", "GenerationParams", "Stats", "load_engine"]


def load_engine(kind: str = "torch", model: str | None = None, **kw) -> Engine:
    if kind == "torch":
        from .torch_engine import TorchEngine
        return TorchEngine.load(model, **kw)
    raise ValueError(f"unknown engine {kind!r} (available: torch)")
