"""Pocket target training (part A): corpus, tokenizer, FIM samples, training loop, resume.

Everything runs on a tiny corpus copied from the standard library and a tiny model: seconds.
The shipped pocket pair (the embedded default) is checked too: tokenizer, size, the drafter beside it.
"""
from __future__ import annotations

import json
import random
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from completion.prompt import (ENDOFTEXT, FILE_SEP, FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX, IM_END,
                               REPO_NAME, PromptBuilder)
from completion.training import pocket
from completion.training import source_corpus as sc
from completion.training import tokenizer as tk

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TRICKY = [
    "",
    "def f(x):\r\n\treturn x  # CRLF and a tab\r\n",
    "emoji 😀👩‍👩‍👧 and CJK 漢字 and combining e\u0301 vs \u00e9 (NFC would merge them)\n",
    "        \n\n\n    \t  trailing spaces   \n",
    "text that mentions <|fim_prefix|> and <|endoftext|> literally",
    "\x00\x01\x7f bytes \u200b zero width \ufeff bom",
    "x" * 300 + "   " * 50,
]
SHIPPED = Path(pocket.DEFAULT_EXPORT)


def _make_source(root: Path) -> Path:
    """A small corpus: two 'repos' from real stdlib files, plus every kind of file to skip."""
    pkg = root / "alpha"
    (pkg / "sub").mkdir(parents=True)
    for i, name in enumerate(["textwrap.py", "bisect.py", "heapq.py", "shlex.py", "fnmatch.py", "colorsys.py",
                              "keyword.py", "glob.py", "abc.py", "copy.py"]):
        shutil.copy(STDLIB / name, (pkg if i % 2 else pkg / "sub") / name)
    beta = root / "beta"
    beta.mkdir()
    for name in ["__init__.py", "decoder.py", "encoder.py", "scanner.py"]:
        shutil.copy(STDLIB / "json" / name, beta / name)
    shutil.copy(STDLIB / "bisect.py", beta / "bisect_copy.py")                   # duplicate content
    (beta / "tests").mkdir()
    (beta / "tests" / "helpers.py").write_text("x = 1\n" * 50)                   # tests directory
    (beta / "_vendor").mkdir()
    (beta / "_vendor" / "six.py").write_text("y = 2\n" * 50)                     # vendored
    (beta / "test_thing.py").write_text("def test_x():\n    assert True\n" * 5)  # test file
    (beta / "latin1.py").write_bytes(b"# caf\xe9\n" + b"z = 3\n" * 30)           # not UTF-8
    (beta / "big.py").write_text("a = 1\n" * 40_000)                             # > 200 KB
    (beta / "table.py").write_text("DATA = '" + "q" * 5000 + "'\n")              # generated-looking
    (beta / "gen.py").write_text("# This file is auto-generated. Do not edit.\n" + "w = 4\n" * 30)
    (root / "single.py").write_text("def single():\n    return 'a top-level module is its own repo'\n" * 3)
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return _make_source(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def data(tmp_path_factory, source):
    out = tmp_path_factory.mktemp("pocket")
    return pocket.prepare(out, roots=[sc.SourceRoot(None, source)], vocab_size=600, chunk_tokens=200,
                          heldout_fraction=0.25)


def _args(data, **over):
    argv = ["--out", str(data.dir), "--size", "tiny", "--steps", "40", "--batch", "2", "--seq-len", "64",
            "--lr", "3e-3", "--warmup", "2", "--eval-every", "0"]
    args = pocket.parser().parse_args(argv)
    for k, v in over.items():
        setattr(args, k, v)
    return args


# ---------------------------------------------------------------------------------------------- corpus

def test_corpus_filters_dedupes_and_is_deterministic(source):
    stats = sc.CorpusStats()
    files = sc.collect([sc.SourceRoot(None, source)], stats=stats, heldout_fraction=0.25)
    again = sc.collect([sc.SourceRoot(None, source)], heldout_fraction=0.25)
    assert [(f.key, f.heldout, f.text) for f in files] == [(f.key, f.heldout, f.text) for f in again]
    keys = {f.key for f in files}
    assert "alpha/alpha/sub/textwrap.py" in keys and "beta/beta/decoder.py" in keys and "single/single.py" in keys
    for bad in ("tests/helpers.py", "_vendor/six.py", "test_thing.py", "latin1.py", "big.py", "table.py", "gen.py"):
        assert not any(k.endswith(bad) for k in keys), bad
    # bisect.py and beta/bisect_copy.py are the same bytes: exactly one survives (the first in order)
    assert sum(k.endswith(("bisect.py", "bisect_copy.py")) for k in keys) == 1
    assert stats.duplicates == 1
    assert {"not utf-8", "too large", "long lines", "generated", "test file"} <= set(stats.skipped)
    assert len({f.text for f in files}) == len(files)
    assert [f.key for f in files] == sorted(f.key for f in files)


def test_only_listed_packages_count(source):
    """Installing another package must not change the corpus (and so the tokenizer and checkpoints)."""
    files = sc.collect([sc.SourceRoot(None, source, only=frozenset({"alpha", "single"}))])
    assert {f.repo for f in files} == {"alpha", "single"}
    assert {"numpy", "torch", "transformers", "pygls"} <= sc.POCKET_PACKAGES
    assert not {"llama_cpp", "gguf", "requests"} & sc.POCKET_PACKAGES


def test_split_is_by_file_hash(source):
    keys = [f"repo/pkg/mod{i}.py" for i in range(5000)]
    held = [k for k in keys if sc.is_heldout(k)]
    assert 0.01 < len(held) / len(keys) < 0.03                      # ~2%
    assert held == [k for k in keys if sc.is_heldout(k)]            # stable
    files = sc.collect([sc.SourceRoot(None, source)], heldout_fraction=0.25)
    for f in files:
        assert f.heldout == (sc.split_hash(f.key) < 0.25)


def test_per_repo_cap(source):
    capped = sc.collect([sc.SourceRoot(None, source)], max_repo_bytes=20_000)
    full = sc.collect([sc.SourceRoot(None, source)], max_repo_bytes=None)
    size = lambda fs, repo: sum(len(f.text.encode()) for f in fs if f.repo == repo)  # noqa: E731
    assert size(capped, "alpha") <= 20_000 < size(full, "alpha")
    uncapped = sc.collect([sc.SourceRoot("std", source, capped=False)], max_repo_bytes=20_000)
    assert size(uncapped, "std") == sum(size(full, r) for r in ("alpha", "beta", "single"))


# ------------------------------------------------------------------------------------------- tokenizer

def _check_tokenizer(hf, texts=TRICKY):
    vocab = hf.get_vocab()
    for t in (ENDOFTEXT, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP, IM_END):
        assert t in vocab
        assert hf.encode(t, add_special_tokens=False) == [vocab[t]]        # one token
    assert hf.eos_token == ENDOFTEXT and hf.pad_token == ENDOFTEXT
    for text in texts:
        ids = hf.encode(text, add_special_tokens=False)
        assert hf.decode(ids, skip_special_tokens=False) == text
    pb = PromptBuilder(hf)                                                   # accepts the FIM tokens
    for text in texts:                                                       # special parsing off
        ids = pb.encode_text(text)
        assert hf.decode(ids) == text
        assert not set(ids) & set(pb.stop_ids) or not text
    prompt = pb.build(repo="r", path="a.py", prefix="def f(", suffix=")\n")
    assert prompt.ids[0] == vocab[REPO_NAME] and prompt.ids[-1] == vocab[FIM_MIDDLE]
    assert vocab[ENDOFTEXT] in prompt.stop_ids


def test_tokenizer_specials_roundtrip_and_prompt_builder(tmp_path, source):
    texts = [f.text for f in sc.collect([sc.SourceRoot(None, source)])]
    tok = tk.train_tokenizer(texts, vocab_size=700)
    assert tok.get_vocab_size() == 700
    assert [tok.token_to_id(t) for t in tk.SPECIAL_TOKENS] == list(range(8))
    tk.save(tok, tmp_path / "tok")
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    _check_tokenizer(hf, TRICKY + texts[:3])
    rng = random.Random(0)
    for _ in range(20):   # arbitrary unicode
        s = "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF),
                                    rng.randrange(0x1F300, 0x1FAFF), 9, 10, 13])) for _ in range(60))
        assert hf.decode(hf.encode(s, add_special_tokens=False)) == s
    # runs of spaces (indentation) become few tokens
    assert len(hf.encode("\n" + " " * 8 + "return", add_special_tokens=False)) <= 3


# ------------------------------------------------------------------------------------------------ data

def test_prepare_memmaps_and_chunks(data, source):
    tok = data.tokenizer()
    assert data.meta["train"]["tokens"] == len(data.train.tokens) > 0
    assert data.meta["heldout"]["tokens"] == len(data.heldout.tokens) > 0
    held = {i for i, (_r, _p, h) in enumerate(data.files) if h}
    for split, want_held in ((data.train, False), (data.heldout, True)):
        by_file: dict[int, list] = {}
        for start, end, fi in split.chunks.tolist():
            assert (fi in held) == want_held
            assert 0 < end - start
            by_file.setdefault(fi, []).append((start, end))
        for fi, spans in by_file.items():   # a file's chunks are contiguous and decode to the file
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            text = "".join(tok.decode(split.tokens[a:b].tolist()) for a, b in spans)
            repo, path, _ = data.files[fi]
            assert text == (source / path).read_text()
            for a, b in spans:   # chunks start at line starts
                if a != spans[0][0]:
                    assert tok.decode(split.tokens[spans[0][0]:a].tolist()).endswith("\n")
    assert (data.train.chunks[:, 1] - data.train.chunks[:, 0]).max() <= 200


def test_chunk_cuts_long_lines():
    tok = tk.train_tokenizer(["abc def\n" * 50, "x = 1\n" * 30], vocab_size=300)
    text = "short\n" + "word " * 300 + "\nend\n"
    ids, starts = pocket.encode_with_offsets(tok, text)
    cuts = pocket.chunk_cuts(text, starts, 50) + [len(ids)]
    assert all(0 < b - a <= 50 for a, b in zip(cuts, cuts[1:]))
    assert "".join(tok.decode(ids[a:b]) for a, b in zip(cuts, cuts[1:])) == text


def test_fim_split_shapes():
    rng = random.Random(0)
    text = "".join(f"line {i} = {i * i}\n" for i in range(40))
    for _ in range(500):
        pre, mid, suf = pocket.fim_split(text, rng)
        assert text.startswith(pre + mid + suf)
        assert text[len(pre) + len(mid):].startswith(suf)


def test_fim_cursors_sit_where_editors_ask():
    """Most cursors follow indentation at a line start or end a name, as in an editor; some are
    anywhere. The first pocket target, trained on uniform cuts, could not complete a fresh line."""
    rng = random.Random(0)
    text = "def f(x):\n\n    total = x + 1\n    return total\n" * 20
    cursors = [pocket.fim_cursor(text, rng) for _ in range(2000)]
    after_indent = sum(text[:p].rstrip(" ").endswith("\n") and text[p:p + 1] not in (" ", "\n")
                       for p in cursors)
    mid_word = sum(0 < p < len(text) and text[p - 1].isalnum() and text[p].isalnum() for p in cursors)
    assert 0.4 < after_indent / len(cursors) < 0.6
    assert 0.02 < mid_word / len(cursors) < 0.25


def _decode_parts(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_fim_and_plain_sample_format(data):
    tok = data.tokenizer()
    ids_of = {t: i for i, t in enumerate(tk.SPECIAL_TOKENS)}
    fim = pocket.SampleStream(data, "train", 64, seed=3, fim_rate=1.0)
    plain = pocket.SampleStream(data, "train", 64, seed=3, fim_rate=0.0)
    for row in data.train.chunks[:20]:
        start, end, fi = row.tolist()
        repo, path, _ = data.files[fi]
        chunk_text = tok.decode(data.train.tokens[start:end].tolist())
        header = f"{REPO_NAME}{repo}\n{FILE_SEP}{path}\n"

        ids, kinds = plain.sample(row)
        assert len(ids) == len(kinds)
        assert _decode_parts(tok, ids) == header + chunk_text + ENDOFTEXT
        assert ids[-1] == ids_of[ENDOFTEXT] and kinds[-1] == pocket.KIND_CODE

        ids, kinds = fim.sample(row)
        text = _decode_parts(tok, ids)
        assert text.startswith(header + FIM_PREFIX) and text.endswith(ENDOFTEXT)
        body = text[len(header + FIM_PREFIX):-len(ENDOFTEXT)]
        pre, rest = body.split(FIM_SUFFIX)
        suf, mid = rest.split(FIM_MIDDLE)
        assert chunk_text.startswith(pre + mid + suf)                 # PSM order, nothing lost in between
        assert [ids.count(ids_of[t]) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, ENDOFTEXT)] == [1, 1, 1, 1]
        m = ids.index(ids_of[FIM_MIDDLE])
        assert set(kinds[m + 1:]) <= {pocket.KIND_MIDDLE} and kinds[-1] == pocket.KIND_MIDDLE
        assert pocket.KIND_MIDDLE not in kinds[:m + 1]


def test_stream_packs_rows_and_restores(data):
    a = pocket.SampleStream(data, "train", 64, seed=1)
    x, y, kind = a.next_batch(3)
    assert x.shape == y.shape == kind.shape == (3, 64)
    assert torch.equal(x[:, 1:], y[:, :-1])
    st = a.state()
    want = a.next_batch(2)
    b = pocket.SampleStream(data, "train", 64, seed=1)
    b.restore(json.loads(json.dumps(st)))   # survives serialization
    got = b.next_batch(2)
    assert all(torch.equal(p, q) for p, q in zip(want, got))
    for _ in range(40):                      # wraps into the next epoch without error
        a.next_batch(4)


# -------------------------------------------------------------------------------------------- training

def test_model_config_and_layers():
    cfg = pocket.model_config("pocket", 16000)
    assert cfg.num_hidden_layers >= 6 and cfg.tie_word_embeddings
    model = pocket.build_model(cfg)
    n = pocket.count_params(model)
    assert 5e6 < n < 15e6 and n * 2 < 25e6        # bf16 bytes under ~25 MB
    with pytest.raises(ValueError):
        pocket.model_config({**pocket.SIZES["tiny"], "num_hidden_layers": 4}, 100)


def test_training_reduces_loss(data):
    torch.set_num_threads(1)
    tr = pocket.Trainer(data, _args(data, steps=40))
    before = pocket.evaluate(tr.model, data, 64, 2048)
    losses = [tr.train_step() for _ in range(40)]
    after = pocket.evaluate(tr.model, data, 64, 2048)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert after["all_loss"] < before["all_loss"] - 0.5
    assert 0 <= after["all_acc"] <= 1 and after["tokens"] > 0
    assert {"code_loss", "middle_loss", "context_loss"} <= set(after)


def test_resume_gives_the_same_next_step(data, tmp_path):
    torch.set_num_threads(1)
    args = _args(data, steps=10)
    a = pocket.Trainer(data, args)
    for _ in range(3):
        a.train_step()
    a.save(tmp_path / "ckpt.pt")
    next_a = [a.train_step() for _ in range(2)]

    b = pocket.Trainer(data, args)
    b.restore(tmp_path / "ckpt.pt")
    assert b.step == 3
    next_b = [b.train_step() for _ in range(2)]
    assert next_a == next_b
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), n


def test_cli_trains_resumes_and_exports(tmp_path, source):
    out, exp = tmp_path / "out", tmp_path / "target"
    common = ["--out", str(out), "--export-dir", str(exp), "--source", str(source), "--heldout-fraction",
              "0.25", "--vocab-size", "600", "--chunk-tokens", "200", "--size", "tiny", "--batch", "2",
              "--seq-len", "64", "--eval-tokens", "512", "--eval-every", "2", "--eval-tokens-quick", "128",
              "--log-every", "1", "--warmup", "1"]
    assert pocket.main(common + ["--steps", "3", "--no-export"]) == 0
    ck = torch.load(out / "ckpt.pt", weights_only=False)
    assert ck["step"] == 3
    assert pocket.main(common + ["--steps", "3"]) == 2                  # never silently restarts
    # --resume keeps the checkpoint's schedule (--steps 5 is ignored) and continues, not restarts
    assert pocket.main(common + ["--steps", "5", "--resume", "--no-export"]) == 0
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == 3
    assert pocket.main(common + ["--export-only"]) == 0
    log = (out / "train.log").read_text()
    assert "tok/s" in log and "ETA" in log and "final eval" in log and "sample" in log
    meta = json.loads((exp / "eyas.json").read_text())
    assert meta["trained"] is True
    assert {"tokens", "steps", "wall_s", "heldout_loss", "heldout_acc"} <= set(meta["train"])
    cfg = json.loads((exp / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["dtype"] == "bfloat16"
    from safetensors import safe_open
    with safe_open(str(exp / "model.safetensors"), "pt") as f:
        assert all(f.get_slice(k).get_dtype() == "BF16" for k in f.keys())
    from transformers import AutoModelForCausalLM, AutoTokenizer
    hf = AutoTokenizer.from_pretrained(str(exp))
    _check_tokenizer(hf)
    model = AutoModelForCausalLM.from_pretrained(str(exp))
    assert model.config.num_hidden_layers == 6


def test_carried_data_and_init_from_an_export(data, tmp_path):
    """A GPU round: the corpus prepared here is used as it is (no scan of that machine's packages)
    and training starts from the exported target's weights."""
    torch.set_num_threads(1)
    tr = pocket.Trainer(data, _args(data, steps=4))
    for _ in range(4):
        tr.train_step()
    exp = pocket.export(tr.model, data, tmp_path / "target", {"steps": 4})
    init = pocket.Trainer(data, _args(data, init=str(exp)))
    for (n, p), (_, q) in zip(tr.model.named_parameters(), init.model.named_parameters()):
        assert torch.equal(p.detach().bfloat16().float(), q.detach()), n        # the export is bf16
    out = tmp_path / "round"
    argv = ["--data", str(data.dir), "--out", str(out), "--init", str(exp), "--size", "tiny", "--steps", "2",
            "--batch", "2", "--seq-len", "64", "--warmup", "1", "--eval-every", "0", "--no-export",
            "--eval-tokens", "256"]
    assert pocket.main(argv) == 0
    assert (out / "ckpt.pt").exists() and not (out / "data.json").exists()
    assert "corpus:" not in (out / "train.log").read_text()
    with pytest.raises(SystemExit, match="model shape"):
        pocket.Trainer(data, _args(data, init=str(exp), size="pocket"))


def test_time_budget_fits_the_schedule(monkeypatch):
    from completion import training

    clock = [100.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    budget = training.TimeBudget(minutes=1, calibrate=2, margin=1.0)
    clock[0] += 10                               # the first step compiles: 10 s, not timed
    assert budget.fit(1, 1000) == 1000
    for step in (2, 3):                          # then 0.5 s a step: 2 steps/s for the 49 s left
        clock[0] += 0.5
        total = budget.fit(step, 1000)
    assert total == 3 + 2 * 49
    for step in (4, 5):                          # re-fitted every 2 steps: the same rate, the same end
        clock[0] += 0.5
        assert budget.fit(step, total) == total
    for step in (6, 7):                          # faster now: 6 steps in 2.5 s since the mark
        clock[0] += 0.25
        total = budget.fit(step, total)
    assert total == 7 + int(6 / 2.5 * (60 - 12.5)) > 101
    assert training.TimeBudget(minutes=60, calibrate=2).fit(1, 50) == 50 and total < 1000
    off = training.TimeBudget(minutes=0)
    assert [off.fit(s, 7) for s in range(1, 30)] == [7] * 29


# ---------------------------------------------------------------------------------------- the shipped one

def test_shipped_pocket_pair():
    from transformers import AutoConfig, AutoTokenizer

    from completion.models import POCKET_DIR, POCKET_DRAFT, POCKET_TARGET
    from completion.speculative import load_drafter
    assert SHIPPED == POCKET_TARGET
    meta = json.loads((SHIPPED / "eyas.json").read_text())
    assert meta["trained"] is True
    cfg = AutoConfig.from_pretrained(str(SHIPPED))
    assert cfg.num_hidden_layers >= 6
    shipped_bytes = sum(f.stat().st_size for f in POCKET_DIR.rglob("*") if f.is_file())
    assert shipped_bytes <= 40e6, f"the embedded pair is {shipped_bytes / 1e6:.1f} MB (the budget is 40 MB)"
    from transformers import AutoModelForCausalLM
    target = AutoModelForCausalLM.from_pretrained(str(SHIPPED))
    drafter = load_drafter(str(POCKET_DRAFT), target)
    assert drafter.config.max_depth >= 18
    hf = AutoTokenizer.from_pretrained(str(SHIPPED))
    assert len(hf) <= 16_384
    _check_tokenizer(hf)


def test_draft_embedded_is_the_drafter_shipped_with_the_model():
    from completion.models import MODELS, POCKET_DRAFT, ModelError, resolve_draft
    assert resolve_draft(None, None) is None and resolve_draft("pocket", "none") is None
    assert resolve_draft("pocket", "embedded") == str(POCKET_DRAFT)
    qwen = MODELS["qwen2.5-coder-0.5b"].draft
    assert (qwen / "config.json").exists() and (qwen / "model.safetensors").exists()
    assert resolve_draft(None, "embedded") == resolve_draft("qwen2.5-coder-0.5b", "embedded") == str(qwen)
    assert resolve_draft("/models/other", "/drafts/other") == "/drafts/other"
    for model in ("/models/other", "qwen2.5-coder-1.5b"):   # no drafter ships with them
        with pytest.raises(ModelError, match="no drafter ships with"):
            resolve_draft(model, "embedded")


def test_an_unset_draft_speculates_only_where_verification_is_cheap(tmp_path, monkeypatch):
    import dataclasses

    from completion import models
    assert models.default_draft("pocket", "bf16", "cpu") is None        # the toy's drafter stays opt-in
    (tmp_path / "config.json").write_text("{}")
    entry = dataclasses.replace(models.MODELS["qwen2.5-coder-0.5b"], draft=tmp_path)
    monkeypatch.setitem(models.MODELS, "qwen2.5-coder-0.5b", entry)
    assert models.default_draft(None, "bf16", "cpu") == models.SHIPPED_DRAFT
    assert models.default_draft("qwen2.5-coder-0.5b", "bf16", "cuda:0") == models.SHIPPED_DRAFT
    assert models.default_draft("qwen2.5-coder-0.5b", "int4", "cuda") == models.SHIPPED_DRAFT
    for precision in ("float32", "int4"):     # a CPU row of these costs ~2x: plain is faster
        assert models.default_draft(None, precision, "cpu") is None
    monkeypatch.setattr(models, "_native_kernels", lambda: True)      # int8 verifies on Eyas's kernels
    assert models.default_draft(None, "int8", "cpu") == models.SHIPPED_DRAFT
    monkeypatch.setattr(models, "_native_kernels", lambda: False)
    assert models.default_draft(None, "int8", "cpu") is None
    assert models.resolve_draft(None, models.default_draft(None, "bf16", "cpu")) == str(tmp_path)
