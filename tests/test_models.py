"""The model registry (completion/models): names, GGUF files, packaged parts, the conversion cache.

GGUF files here are real ones, written by completion/evaluation/gguf_export.py from tiny random
models and read back by completion/models/gguf.py. Packaged models are faked with part packages
on sys.path. The slow tests run the real default model as `make demo` does.
"""
import ast
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from completion import models
from completion.models import ModelError, PackagedModel, resolve_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "eyas" / "models"


def logits(model_dir, ids, dtype=torch.float32):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A tiny random Qwen3 and its f32 GGUF export."""
    from completion.evaluation.gguf_export import export_gguf
    from completion.models.tiny import build_tiny_model
    d = tmp_path_factory.mktemp("tiny-gguf")
    hf = build_tiny_model(d / "hf", seed=3)
    return hf, export_gguf(hf, d / "tiny-f32.gguf", "f32")


IDS = [151659, 755, 9396, 1445, 982, 151660, 198, 151661, 262, 470]


def test_gguf_file_converts_once_and_matches(tiny_gguf, cache):
    hf, gguf = tiny_gguf
    blob = gguf.parent / "sha256-0123abcd"   # as Ollama stores them: no suffix
    shutil.copy(gguf, blob)
    assert Path(resolve_model(str(blob), progress=False)).parent == cache / "gguf"
    path = Path(resolve_model(str(gguf), progress=False))
    assert path.parent == cache / "gguf" and json.loads((path / "eyas.json").read_text())["source"] == str(gguf)
    # f32 tensors stay f32: the converted model computes exactly what the original does
    assert torch.equal(logits(path, IDS), logits(hf, IDS))
    from transformers import AutoTokenizer
    ours, theirs = AutoTokenizer.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(hf))
    text = "def f(x):\n    return x<|fim_middle|> é"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    # a second load reads the cache: nothing is converted again
    stamp = (path / "config.json").stat().st_mtime_ns
    assert resolve_model(str(gguf), progress=False) == str(path)
    assert (path / "config.json").stat().st_mtime_ns == stamp
    assert not list(path.parent.glob("*.partial-*"))


def test_quantized_gguf_converts_close(tiny_gguf, tmp_path, cache):
    from completion.evaluation.gguf_export import export_gguf
    hf, _ = tiny_gguf
    q8 = export_gguf(hf, tmp_path / "tiny-q8_0.gguf", "q8_0")
    path = resolve_model(str(q8), progress=False)
    ours, ref = logits(path, IDS), logits(hf, IDS)
    # (a random model's logits are nearly flat, so compare values, not argmaxes)
    assert (ours - ref).abs().max() < 0.05 * ref.abs().max()
    assert torch.corrcoef(torch.stack([ours.flatten(), ref.flatten()]))[0, 1] > 0.99


def test_llama_rows_unpermute():
    from completion.models.gguf import permute_rows, unpermute_rows
    w = torch.randn(4 * 8, 5).numpy()
    assert not (permute_rows(w, 4) == w).all()
    assert (unpermute_rows(permute_rows(w, 4), 4) == w).all()


def test_bad_inputs_say_what_to_do(tmp_path, cache):
    with pytest.raises(ModelError, match="unknown model 'qwen9'.*qwen2.5-coder-0.5b.*pocket"):
        resolve_model("qwen9")
    with pytest.raises(ModelError, match="no GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ModelError, match="not a GGUF file"):
        resolve_model(str(junk))
    junk.write_bytes(b"GGUF" + b"\xff" * 64)   # the magic, then garbage
    with pytest.raises(ModelError, match="not a readable GGUF"):
        resolve_model(str(junk))
    assert not list(cache.rglob("*.partial-*")) and not [p for p in (cache / "gguf").iterdir()]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    assert resolve_model("pocket") == str(models.POCKET_TARGET)
    assert resolve_model("Qwen/Qwen3-Coder-30B-A3B-Instruct") == "Qwen/Qwen3-Coder-30B-A3B-Instruct"


@pytest.fixture
def packaged(tiny_gguf, tmp_path, monkeypatch, cache):
    """A registry entry whose three parts are packages `eyastestpart1..3` on sys.path."""
    data = tiny_gguf[1].read_bytes()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    site = tmp_path / "site"
    for i in (1, 2, 3):
        pkg = site / f"eyastestpart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data[cut[i - 1]:cut[i]])
    monkeypatch.syspath_prepend(str(site))
    entry = PackagedModel("test-model", "a tiny test model", "eyastestpart", "1.0", parts=3, size=len(data),
                          sha256=hashlib.sha256(data).hexdigest(), extra=None)
    monkeypatch.setitem(models.MODELS, "test-model", entry)
    return site


def test_packaged_parts_assemble_check_and_convert(packaged, tiny_gguf, cache, monkeypatch):
    import completion.models.gguf as converter
    # interrupted half-way: nothing half-written is left, and the next load converts afresh
    real_convert = converter.convert

    def interrupted(gguf, out, **kw):
        (Path(out)).mkdir(parents=True)
        (Path(out) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(converter, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve_model("test-model", progress=False)
    assert not (cache / "test-model").exists() and not list(cache.glob("*.partial-*"))
    monkeypatch.setattr(converter, "convert", real_convert)
    path = resolve_model("test-model", progress=False)
    assert torch.equal(logits(path, IDS), logits(tiny_gguf[0], IDS))
    assert not list(Path(path).glob("*.gguf"))   # the assembled file is not kept
    rows = {r["name"]: r for r in models.model_rows()}
    assert rows["test-model"]["installed"] and rows["test-model"]["cached"]


def test_packaged_missing_corrupt_and_full_disk(packaged, cache, monkeypatch):
    part2 = packaged / "eyastestpart2" / "data" / "part02.bin"
    good = part2.read_bytes()
    part2.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ModelError, match=r"corrupt.*pip install --force-reinstall eyastestpart1==1.0"):
        resolve_model("test-model", progress=False)
    part2.write_bytes(good)
    aside = packaged.parent / "aside"
    shutil.move(packaged / "eyastestpart3", aside)
    with pytest.raises(ModelError, match=r"not installed \(missing 1 of 3 parts\).*pip install eyastestpart3==1.0"):
        resolve_model("test-model", progress=False)
    assert not models.MODELS["test-model"].installed()
    monkeypatch.setattr(models.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 5))
    shutil.move(aside, packaged / "eyastestpart3")
    importlib.invalidate_caches()
    with pytest.raises(ModelError, match="not enough disk space"):
        resolve_model("test-model", progress=False)


def test_models_command_lists_names():
    out = subprocess.run([sys.executable, "-m", "completion.cli", "models", "--json"], capture_output=True,
                         text=True, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["qwen2.5-coder-0.5b"]["default"] and rows["qwen2.5-coder-0.5b"]["installed"]
    assert rows["pocket"]["installed"] and "qwen2.5-coder-1.5b" in rows


# ---- the real default model --------------------------------------------------------------------

@pytest.mark.slow
def test_demo_completes_fib_with_the_real_model():
    """What `make demo` runs: a real completion that parses where it is inserted."""
    out = subprocess.run([sys.executable, "-m", "completion.cli", "complete", "examples/fib.py:6:5", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["model"] == "qwen2.5-coder-0.5b" and result["engine"]["precision"]
    assert result["completion"].strip()
    source = (ROOT / "examples/fib.py").read_text()
    lines = source.splitlines(keepends=True)
    offset = sum(len(l) for l in lines[:5]) + 4
    ast.parse(source[:offset] + result["completion"] + source[offset:])


@pytest.mark.slow
def test_assembled_gguf_file_works_as_model(tmp_path, cache):
    """The packaged parts concatenated are a plain llama.cpp GGUF file: it works as --model too."""
    entry = models.MODELS["qwen2.5-coder-0.5b"]
    gguf = tmp_path / "qwen2.5-coder-0.5b-instruct.gguf"
    with open(gguf, "wb") as out:
        for i in range(1, entry.parts + 1):
            out.write(entry.part_path(i).read_bytes())
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "completion.cli", "complete", "examples/fib.py:6:5", "--json",
                          "--model", str(gguf), "--max-tokens", "16"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["model"] == str(gguf) and "return" in result["raw"]
