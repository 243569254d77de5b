"""Shared fixtures. Servers the tests start with SERVER_CMD load the pocket pair in float32 (fast,
exact); the editor tests run the real default model. Engine-level tests use tiny random Qwen3 /
Qwen2 models with the real Qwen tokenizer, built once per session."""
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# One torch thread, here and in the servers the tests start: tiny models on a shared 2-core
# machine run many times faster without threads waiting on each other.
os.environ.setdefault("EYAS_THREADS", "1")
# servers the tests start keep their local telemetry here, not in the user's state folder
os.environ.setdefault("EYAS_TELEMETRY", os.path.join(tempfile.mkdtemp(prefix="eyas-telemetry-"), "telemetry.sqlite"))
torch.set_num_threads(1)

SERVER_CMD = [sys.executable, "-m", "completion.cli", "serve", "--model", "pocket", "--precision", "float32"]


def need_native_kernels() -> None:
    """Skip where Eyas's CPU kernels cannot run; with EYAS_REQUIRE_NATIVE=1 (CI) fail instead
    where the CPU has their instructions but the kernels did not build or load."""
    from completion.engine.lean import native

    if native.available():
        return
    if os.environ.get("EYAS_REQUIRE_NATIVE") == "1" and not native.missing_flags() \
            and os.environ.get("EYAS_NATIVE", "1") != "0":
        pytest.fail(f"this CPU has the kernels' instructions, but they are not in use: {native.reason()}")
    pytest.skip(f"Eyas's CPU kernels are not in use: {native.reason()}")


def need_llama_cpp() -> dict[str, Path]:
    """llama.cpp's programs (`make install-peers`); skip without them, or fail with
    EYAS_REQUIRE_PEERS=1."""
    from completion.evaluation.llama_cpp import PROGRAMS, NotBuilt, program

    try:
        return {name: program(name) for name in PROGRAMS}
    except NotBuilt as why:
        if os.environ.get("EYAS_REQUIRE_PEERS") == "1":
            pytest.fail(str(why))
        pytest.skip(str(why))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from completion.models.tiny import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from transformers import AutoTokenizer
    from completion.models.tiny import qwen_tokenizer_dir
    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
