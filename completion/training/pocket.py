"""The pocket target: a small Qwen3 trained from scratch on this machine's Python source, with FIM.

    eyas train pocket [--steps N --batch B --seq-len T --threads 1 --out out/pocket --resume]

Stages (each skipped when its output is already there and matches):
  1. corpus    `source_corpus.collect()`: stdlib + site-packages .py files, deduped, split by file;
  2. tokenizer byte-level BPE (16k) with Qwen3-Coder's control tokens, `<out>/tokenizer/`;
  3. tokens    every file tokenized once (special-token parsing off) and cut at line starts into
               chunks of <= `chunk_tokens`; `<out>/{train,heldout}.bin` (uint16 memmap) plus
               `.chunks.npy` rows (start, end, file index) and `files.json`;
  4. train     AdamW, cosine schedule, packed rows of `seq_len` tokens; resumable checkpoint
               `<out>/ckpt.pt` (model, optimizer, step, RNG, data position) every `--ckpt-every` s,
               progress lines in `<out>/train.log`;
  5. export    bf16 Hugging Face directory (`completion/models/pocket/target/` by default) with the
               tokenizer and `eyas.json`, then greedy sample completions.

Training samples follow the inference prompt (completion/prompt): a repo-level header
`<|repo_name|>{repo}\\n<|file_sep|>{path}\\n`, then for `fim_rate` of the chunks a character-level
PSM infilling sample `<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>M<|endoftext|>`, otherwise the
chunk left to right followed by `<|endoftext|>`. The middle is cut like an IDE request: mostly the
rest of a line or a few lines from a cursor anywhere, sometimes a long random span; the suffix is
sometimes cut to a few lines, as the context room windows it. Samples are packed back to back
(plain causal attention; `<|endoftext|>` separates documents).

Measured on the project's 2-core Xeon (avx512_bf16, no AMX), 1 thread, `pocket` size (10.4M params):
fp32 eager ~1130 tok/s at 4x1024, fp32 `--compile` ~1350 tok/s (+45 s compile), bf16 autocast
~590 tok/s (slower: hence off by default); seq 2048 costs ~30% more per token than 1024.
The shipped target: 800 steps x 4 x 1024 = 3.3M tokens, `--compile`, 47 min.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from completion.prompt import (ENDOFTEXT, FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME)
from completion.training import TimeBudget, log_line

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "out" / "pocket"
DEFAULT_EXPORT = REPO_ROOT / "completion" / "models" / "pocket" / "target"
DATA_VERSION = 1

# Model sizes. `pocket` is the shipped one: 8 layers so the drafter's aux layers (2, 4, 5) are apart.
SIZES = {
    "pocket": dict(hidden_size=256, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=64, intermediate_size=768),
    "small": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, num_key_value_heads=1,
                  head_dim=64, intermediate_size=512),
    "tiny": dict(hidden_size=32, num_hidden_layers=6, num_attention_heads=2, num_key_value_heads=1,
                 head_dim=16, intermediate_size=64),
}

# Token kinds, for per-kind metrics: the label's role in its sample.
KIND_HEADER, KIND_CODE, KIND_CONTEXT, KIND_MIDDLE = 0, 1, 2, 3


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------

def model_config(size: str | dict, vocab_size: int, max_positions: int = 4096):
    from transformers import Qwen3Config

    dims = SIZES[size] if isinstance(size, str) else dict(size)
    if dims["num_hidden_layers"] < 6:
        raise ValueError("the pocket target needs >= 6 layers (the drafter reads layers 2, L//2, L-3)")
    from completion.training.tokenizer import SPECIAL_TOKENS
    eot = SPECIAL_TOKENS.index(ENDOFTEXT)
    return Qwen3Config(vocab_size=vocab_size, max_position_embeddings=max_positions, rms_norm_eps=1e-6,
                       rope_theta=10_000.0, tie_word_embeddings=True, attention_bias=False,
                       use_sliding_window=False, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
                       **dims)


def build_model(config, seed: int = 0):
    from transformers import Qwen3ForCausalLM

    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    return model


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def token_losses(model, x: torch.Tensor, y: torch.Tensor, bf16: bool = False):
    """Per-token cross entropy [B, T] and logits argmax [B, T] (x, y on the model's device)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        h = model.model(input_ids=x).last_hidden_state
        logits = model.lm_head(h)
    logits = logits.float()
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1),
                                             reduction="none").view_as(y)
    return loss, logits.argmax(-1)


def mean_loss(model, x, y, bf16: bool = False):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        h = model.model(input_ids=x).last_hidden_state
        logits = model.lm_head(h)
    return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


# ----------------------------------------------------------------------------------------------------
# Data: corpus -> tokenizer -> uint16 memmaps of chunks
# ----------------------------------------------------------------------------------------------------

def encode_plain(tok, texts: list[str]) -> list[list[int]]:
    """Token ids of each text with special-token parsing off (a file that mentions `<|endoftext|>`
    gets it as text), as `completion.prompt.PromptBuilder.encode_text` does."""
    added = [t.content for t in tok.get_added_tokens_decoder().values()]
    fast = [i for i, t in enumerate(texts) if t and not any(a in t for a in added)]
    out: list[list[int]] = [[] for _ in texts]
    for i, enc in zip(fast, tok.encode_batch([texts[i] for i in fast], add_special_tokens=False)):
        out[i] = enc.ids
    done = set(fast)
    for i, t in enumerate(texts):
        if t and i not in done:
            pieces = tok.pre_tokenizer.pre_tokenize_str(t)
            out[i] = [x.id for piece, _ in pieces for x in tok.model.tokenize(piece)]
    return out


def encode_with_offsets(tok, text: str) -> tuple[list[int], list[int]]:
    """(ids, start char offset of each id) with special-token parsing off."""
    added = [t.content for t in tok.get_added_tokens_decoder().values()]
    if not any(a in text for a in added):
        enc = tok.encode(text, add_special_tokens=False)
        return enc.ids, [s for s, _ in enc.offsets]
    ids, starts = [], []
    for piece, (s, _e) in tok.pre_tokenizer.pre_tokenize_str(text):
        # ByteLevel pieces: offsets within a piece are only needed at piece starts for line cuts.
        toks = tok.model.tokenize(piece)
        for j, x in enumerate(toks):
            ids.append(x.id)
            starts.append(s if j == 0 else s + 1)   # never a line start unless it begins the piece
    return ids, starts


def chunk_cuts(text: str, starts: list[int], max_tokens: int) -> list[int]:
    """Token indices where chunks start: at line starts, each chunk <= max_tokens when it can be."""
    n = len(starts)
    line_start = [i for i, s in enumerate(starts) if s == 0 or text[s - 1] == "\n"]
    cuts, begin, last_ok = [0], 0, 0
    for i in line_start[1:] + [n]:
        if i - begin > max_tokens:
            if last_ok > begin:
                begin = last_ok
            else:   # one line longer than a chunk: cut inside it
                while i - begin > max_tokens:
                    begin += max_tokens
                    cuts.append(begin)
                last_ok = begin
                continue
            cuts.append(begin)
            while i - begin > max_tokens:   # the line after the cut is itself too long
                begin += max_tokens
                cuts.append(begin)
        last_ok = i
    return sorted(set(c for c in cuts if c < n))


@dataclass
class Split:
    tokens: np.ndarray        # uint16 memmap
    chunks: np.ndarray        # [n, 3] int64: start, end, file index


@dataclass
class Data:
    dir: Path
    tokenizer_dir: Path
    files: list               # [repo, path, heldout]
    train: Split
    heldout: Split
    meta: dict

    def tokenizer(self):
        from tokenizers import Tokenizer
        return Tokenizer.from_file(str(self.tokenizer_dir / "tokenizer.json"))


def _fingerprint(files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.key.encode())
        h.update(hashlib.sha256(f.text.encode()).digest())
    return h.hexdigest()[:16]


def load_data(out: Path) -> Data:
    meta = json.loads((out / "data.json").read_text())
    files = json.loads((out / "files.json").read_text())
    splits = {}
    for name in ("train", "heldout"):
        tokens = np.memmap(out / f"{name}.bin", dtype=np.uint16, mode="r")
        splits[name] = Split(tokens, np.load(out / f"{name}.chunks.npy"))
    return Data(out, out / "tokenizer", files, splits["train"], splits["heldout"], meta)


def prepare(out: Path, *, roots=None, vocab_size: int | None = None, chunk_tokens: int = 960,
            max_repo_bytes: int | None = -1, heldout_fraction: float | None = None,
            log: Path | None = None, force: bool = False) -> Data:
    """Corpus, tokenizer and token memmaps in `out` (reused when the corpus is unchanged)."""
    from completion.training import source_corpus as sc
    from completion.training import tokenizer as tk

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stats = sc.CorpusStats()
    kw = {}
    if max_repo_bytes != -1:
        kw["max_repo_bytes"] = max_repo_bytes
    if heldout_fraction is not None:
        kw["heldout_fraction"] = heldout_fraction
    files = sc.collect(roots, stats=stats, **kw)
    vocab_size = vocab_size or tk.VOCAB_SIZE
    fp = f"v{DATA_VERSION}-{_fingerprint(files)}-{vocab_size}-{chunk_tokens}"
    meta_path = out / "data.json"
    if not force and meta_path.exists() and json.loads(meta_path.read_text()).get("fingerprint") == fp:
        log_line(log, f"data: reusing {out} ({fp})")
        return load_data(out)
    log_line(log, f"corpus: {stats.candidates} candidates, skipped {stats.skipped}, {stats.duplicates} "
                  f"duplicates, {stats.capped} over the per-repo cap; kept {stats.files} files, "
                  f"{stats.bytes} bytes, {len(stats.repos)} repos ({time.perf_counter() - t0:.1f}s)")

    train_files = [f for f in files if not f.heldout]
    t1 = time.perf_counter()
    tok = tk.train_tokenizer(tk.iter_texts(train_files), vocab_size)
    tk.save(tok, out / "tokenizer")
    log_line(log, f"tokenizer: {tok.get_vocab_size()} tokens trained in {time.perf_counter() - t1:.1f}s")

    index = [[f.repo, f.path, f.heldout] for f in files]
    result = {}
    for name, heldout in (("train", False), ("heldout", True)):
        sel = [(i, f) for i, f in enumerate(files) if f.heldout == heldout]
        total_bytes = sum(len(f.text.encode()) for _, f in sel)
        path = out / f"{name}.bin"
        tmp = path.with_suffix(".bin.tmp")
        chunks, n_tok, done_bytes, last = [], 0, 0, time.perf_counter()
        with open(tmp, "wb") as fh:
            for k, (i, f) in enumerate(sel):
                ids, starts = encode_with_offsets(tok, f.text)
                cuts = chunk_cuts(f.text, starts, chunk_tokens) + [len(ids)]
                for a, b in zip(cuts, cuts[1:]):
                    chunks.append((n_tok + a, n_tok + b, i))
                np.asarray(ids, dtype=np.uint16).tofile(fh)
                n_tok += len(ids)
                done_bytes += len(f.text.encode())
                if time.perf_counter() - last > 10 or k == len(sel) - 1:
                    last = time.perf_counter()
                    log_line(log, f"tokens[{name}]: {k + 1}/{len(sel)} files, {done_bytes / 1e6:.1f}/"
                                  f"{total_bytes / 1e6:.1f} MB, {n_tok} tokens")
        tmp.rename(path)
        np.save(out / f"{name}.chunks.npy", np.asarray(chunks, dtype=np.int64).reshape(-1, 3))
        result[name] = {"files": len(sel), "bytes": total_bytes, "tokens": n_tok, "chunks": len(chunks),
                        "bytes_per_token": round(total_bytes / max(1, n_tok), 3)}
    (out / "files.json").write_text(json.dumps(index))
    meta = {"fingerprint": fp, "vocab_size": tok.get_vocab_size(), "chunk_tokens": chunk_tokens,
            "corpus": {"candidates": stats.candidates, "skipped": stats.skipped,
                       "duplicates": stats.duplicates, "capped": stats.capped, "repos": stats.repos},
            **result}
    meta_path.write_text(json.dumps(meta, indent=1))
    log_line(log, f"data: {json.dumps(result)} in {time.perf_counter() - t0:.0f}s")
    return load_data(out)


# ----------------------------------------------------------------------------------------------------
# Samples and packing
# ----------------------------------------------------------------------------------------------------

def _line_end(text: str, p: int) -> int:
    q = text.find("\n", p)
    return len(text) if q < 0 else q


def _after_lines(text: str, p: int, k: int) -> int:
    q = p
    for _ in range(k):
        nl = text.find("\n", q)
        if nl < 0:
            return len(text)
        q = nl + 1
    return q


def fim_cursor(text: str, rng: random.Random) -> int:
    """A cursor where editors really ask for completions. Uniform character cuts (the first pocket
    target's data) made nearly every middle start inside a word, so at an indented line start the model
    answered with one letter and stopped; editor cursors sit mostly after indentation or after a word."""
    n = len(text)
    p = rng.randrange(n + 1)
    r = rng.random()
    if r < 0.45:           # an (auto-)indented line start: the commonest place to ask
        p = text.rfind("\n", 0, p) + 1
        while p < n and text[p] in " \t\n":   # blank lines: the next line with code
            p += 1
    elif r < 0.75:         # just after a name the user typed
        while p < n and (text[p].isalnum() or text[p] == "_"):
            p += 1
    return p                # else anywhere, mid-word included


def fim_split(text: str, rng: random.Random) -> tuple[str, str, str]:
    """(prefix, middle, suffix) of `text`, cut like an editor request."""
    n = len(text)
    p = fim_cursor(text, rng)
    r = rng.random()
    if r < 0.4:            # complete the current line
        q = _line_end(text, p)
    elif r < 0.7:          # a few lines
        q = _after_lines(text, p, rng.randint(1, 8))
    else:                  # a long random span (StarCoder-style)
        q = rng.randint(p, n)
    suffix = text[q:]
    if rng.random() < 0.5:   # the context room keeps only a short suffix window
        suffix = suffix[:_after_lines(suffix, 0, rng.randint(0, 24))]
    return text[:p], text[p:q], suffix


class SampleStream:
    """Packed rows of `seq_len + 1` tokens (inputs + shifted labels) and their label kinds, built
    from the chunks of a split in a seeded order. `state()` / `restore()` give the exact position."""

    def __init__(self, data: Data, split: str, seq_len: int, *, seed: int, fim_rate: float = 0.5,
                 shuffle: bool = True):
        from completion.training.tokenizer import SPECIAL_TOKENS
        self.split: Split = getattr(data, split)
        self.files = data.files
        self.tok = data.tokenizer()
        self.seq_len, self.seed, self.fim_rate, self.shuffle = seq_len, seed, fim_rate, shuffle
        self.sid = {t: SPECIAL_TOKENS.index(t) for t in SPECIAL_TOKENS}
        self.epoch, self.cursor = 0, 0
        self.rng = random.Random(seed)
        self.buf_ids: list[int] = []
        self.buf_kind: list[int] = []
        self._order = self._make_order()
        self._header_cache: dict[int, list[int]] = {}

    def _make_order(self) -> np.ndarray:
        n = len(self.split.chunks)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "rng": self.rng.getstate(),
                "buf_ids": list(self.buf_ids), "buf_kind": list(self.buf_kind)}

    def restore(self, st: dict) -> None:
        self.epoch, self.cursor = st["epoch"], st["cursor"]
        self.rng.setstate(_as_rng_state(st["rng"]))
        self.buf_ids, self.buf_kind = list(st["buf_ids"]), list(st["buf_kind"])
        self._order = self._make_order()

    def _header(self, file_idx: int) -> list[int]:
        if file_idx not in self._header_cache:
            repo, path, _ = self.files[file_idx]
            s = self.sid
            self._header_cache[file_idx] = ([s[REPO_NAME]] + encode_plain(self.tok, [f"{repo}\n"])[0]
                                            + [s[FILE_SEP]] + encode_plain(self.tok, [f"{path}\n"])[0])
        return self._header_cache[file_idx]

    def sample(self, chunk_row) -> tuple[list[int], list[int]]:
        """One chunk as a sample: (ids, kinds)."""
        start, end, file_idx = (int(v) for v in chunk_row)
        s = self.sid
        head = self._header(file_idx)
        body = self.split.tokens[start:end].tolist()
        ids, kinds = list(head), [KIND_HEADER] * len(head)
        if self.rng.random() < self.fim_rate:
            text = self.tok.decode(body, skip_special_tokens=False)
            pre, mid, suf = fim_split(text, self.rng)
            p_ids, m_ids, s_ids = encode_plain(self.tok, [pre, mid, suf])
            ids += [s[FIM_PREFIX], *p_ids, s[FIM_SUFFIX], *s_ids, s[FIM_MIDDLE]]
            kinds += [KIND_HEADER] + [KIND_CONTEXT] * len(p_ids) + [KIND_HEADER] \
                + [KIND_CONTEXT] * len(s_ids) + [KIND_HEADER]
            ids += [*m_ids, s[ENDOFTEXT]]
            kinds += [KIND_MIDDLE] * (len(m_ids) + 1)
        else:
            ids += body + [s[ENDOFTEXT]]
            kinds += [KIND_CODE] * (len(body) + 1)
        return ids, kinds

    def _fill(self, need: int) -> None:
        while len(self.buf_ids) < need:
            if self.cursor >= len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._make_order()
            ids, kinds = self.sample(self.split.chunks[self._order[self.cursor]])
            self.cursor += 1
            self.buf_ids += ids
            self.buf_kind += kinds

    def next_batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T], y [B, T], kind of each label [B, T]."""
        n = self.seq_len + 1
        self._fill(batch * n)
        ids = torch.tensor(self.buf_ids[:batch * n], dtype=torch.long).view(batch, n)
        kind = torch.tensor(self.buf_kind[:batch * n], dtype=torch.long).view(batch, n)
        del self.buf_ids[:batch * n], self.buf_kind[:batch * n]
        return ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), kind[:, 1:].contiguous()


def _as_rng_state(st):
    # JSON / torch.save round trips turn the tuple into lists.
    version, internal, gauss = st
    return (version, tuple(internal), gauss)


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, data: Data, seq_len: int, max_tokens: int, *, batch: int = 4, seed: int = 1234,
             fim_rate: float = 0.5, bf16: bool = False) -> dict:
    """Held-out loss / next-token accuracy, overall and per label kind (code, fim middle, context)."""
    # No train/eval switch: Qwen3 has no dropout, and flipping `training` would make a compiled
    # training step recompile.
    stream = SampleStream(data, "heldout", seq_len, seed=seed, fim_rate=fim_rate, shuffle=False)
    total_rows = max(1, max_tokens // seq_len)
    sums = {k: [0.0, 0, 0] for k in ("all", "code", "middle", "context")}
    names = {KIND_CODE: "code", KIND_MIDDLE: "middle", KIND_CONTEXT: "context"}
    done = 0
    while done < total_rows and stream.epoch == 0:
        b = min(batch, total_rows - done)
        x, y, kind = stream.next_batch(b)
        device = model.lm_head.weight.device
        loss, pred = (t.cpu() for t in token_losses(model, x.to(device), y.to(device), bf16))
        hit = (pred == y)
        for key, mask in [("all", torch.ones_like(kind, dtype=torch.bool))] + \
                         [(name, kind == k) for k, name in names.items()]:
            sums[key][0] += float(loss[mask].sum())
            sums[key][1] += int(hit[mask].sum())
            sums[key][2] += int(mask.sum())
        done += b
    out = {"tokens": sums["all"][2]}
    for key, (l, h, n) in sums.items():
        if n:
            out[f"{key}_loss"] = round(l / n, 4)
            out[f"{key}_acc"] = round(h / n, 4)
    return out


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------

def lr_at(step: int, total: int, lr: float, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model, lr: float, weight_decay: float):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


TRAIN_KEYS = ("size", "steps", "batch", "seq_len", "lr", "warmup", "min_lr_ratio", "weight_decay",
              "fim_rate", "seed", "grad_clip", "bf16", "phase_start")
# What `--extend-to` may change: a longer run is a new warm-up + cosine phase from the checkpoint's step.
EXTENDABLE = ("steps", "lr", "phase_start")


class Trainer:
    def __init__(self, data: Data, args):
        self.data, self.args = data, args
        self.out = Path(args.out)
        self.log = self.out / "train.log"
        self.ckpt = self.out / "ckpt.pt"
        self.config = model_config(args.size, data.meta["vocab_size"], max_positions=args.max_positions)
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = build_model(self.config, seed=args.seed)
        if args.init:
            init_weights(self.model, Path(args.init))
        self.model.to(self.device)
        self.opt = make_optimizer(self.model, args.lr, args.weight_decay)
        self.stream = SampleStream(data, "train", args.seq_len, seed=args.seed, fim_rate=args.fim_rate)
        self.step, self.tokens, self.elapsed = 0, 0, 0.0
        self.history: list[dict] = []
        self.loss_fn = mean_loss
        if args.compile:
            self.loss_fn = torch.compile(mean_loss)

    # -- checkpoints --------------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> None:
        path = path or self.ckpt
        tmp = path.with_suffix(".tmp")
        torch.save({"model": self.model.state_dict(), "optim": self.opt.state_dict(), "step": self.step,
                    "tokens": self.tokens, "elapsed": self.elapsed, "torch_rng": torch.get_rng_state(),
                    "data": self.stream.state(), "config": self.config.to_dict(),
                    "train_args": {k: getattr(self.args, k) for k in TRAIN_KEYS},
                    "history": self.history, "data_fingerprint": self.data.meta["fingerprint"]}, tmp)
        os.replace(tmp, path)

    def restore(self, path: Path | None = None) -> None:
        ck = torch.load(path or self.ckpt, weights_only=False, map_location="cpu")
        if ck["data_fingerprint"] != self.data.meta["fingerprint"]:
            raise SystemExit("the checkpoint was trained on different data (corpus or tokenizer changed)")
        saved = {"phase_start": 0, **ck["train_args"]}
        free = EXTENDABLE if getattr(self.args, "extend_to", 0) else ()
        mine = {k: getattr(self.args, k) for k in TRAIN_KEYS if k not in free}
        diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if diff:
            raise SystemExit(f"--resume with different settings than the checkpoint: {diff}")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optim"])
        self.step, self.tokens, self.elapsed = ck["step"], ck["tokens"], ck["elapsed"]
        torch.set_rng_state(ck["torch_rng"])
        self.stream.restore(ck["data"])
        self.history = ck.get("history", [])

    # -- one step -------------------------------------------------------------------------------------
    def train_step(self) -> float:
        a = self.args
        lr = lr_at(self.step - a.phase_start, a.steps - a.phase_start, a.lr, a.warmup, a.min_lr_ratio)
        for g in self.opt.param_groups:
            g["lr"] = lr
        x, y, _ = self.stream.next_batch(a.batch)
        loss = self.loss_fn(self.model, x.to(self.device), y.to(self.device), a.bf16)
        loss.backward()
        if a.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += x.numel()
        return float(loss.detach())

    def run(self) -> None:
        a = self.args
        self.model.train()
        log_line(self.log, f"train: {count_params(self.model) / 1e6:.2f}M params, step {self.step}/{a.steps}, "
                           f"batch {a.batch}x{a.seq_len}, threads {torch.get_num_threads()}, "
                           f"compile {a.compile}, bf16 {a.bf16}")
        t_start, step0, last_ckpt, last_log = time.perf_counter(), self.step, time.perf_counter(), None
        ema, budget = None, TimeBudget(a.minutes)
        while self.step < a.steps:
            t0 = time.perf_counter()
            loss = self.train_step()
            dt = time.perf_counter() - t0
            a.steps = budget.fit(self.step, a.steps, self.log)
            if self.step > step0 + 1 or not a.compile:   # the first compiled step includes compilation
                self.elapsed += dt
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
            now = time.perf_counter()
            if self.step % a.log_every == 0 or self.step == a.steps:
                session = now - t_start
                # the rate over the last interval (the session average would count compilation)
                mark = last_log or (t_start, step0)
                rate = (self.step - mark[1]) / max(1e-9, now - mark[0])
                last_log = (now, self.step)
                eta = (a.steps - self.step) / rate if rate else 0
                tok_s = a.batch * a.seq_len * rate
                lr = self.opt.param_groups[0]["lr"]
                log_line(self.log, f"step {self.step}/{a.steps} tokens {self.tokens} tok/s {tok_s:.0f} "
                                   f"loss {loss:.4f} (ema {ema:.4f}) lr {lr:.2e} elapsed {_hms(session)} "
                                   f"ETA {_hms(eta)}")
                self.history.append({"step": self.step, "loss": round(loss, 4), "tokens": self.tokens})
            if a.eval_every and self.step % a.eval_every == 0 and self.step < a.steps:
                ev = evaluate(self.model, self.data, a.seq_len, a.eval_tokens_quick, bf16=a.bf16)
                log_line(self.log, f"eval step {self.step}: {json.dumps(ev)}")
                self.history.append({"step": self.step, "eval": ev})
            if now - last_ckpt > a.ckpt_every or self.step == a.steps:
                self.save()
                last_ckpt = time.perf_counter()
                log_line(self.log, f"checkpoint step {self.step} -> {self.ckpt}")


def init_weights(model, model_dir: Path) -> None:
    """Start from an exported target (`--init`): same shape and vocabulary, fresh optimizer."""
    from safetensors.torch import load_file

    state = load_file(str(model_dir / "model.safetensors"))
    if "lm_head.weight" not in state and model.config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise SystemExit(f"--init {model_dir}: not this run's model shape ({str(e).splitlines()[0]})")


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ----------------------------------------------------------------------------------------------------
# Export and samples
# ----------------------------------------------------------------------------------------------------

def export(model, data: Data, out_dir: Path, train_info: dict, description: str | None = None) -> Path:
    """bf16 Hugging Face directory: config.json, model.safetensors, tokenizer files, eyas.json."""
    import shutil
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    m = build_model(model.config)
    m.load_state_dict(model.state_dict())
    m = m.to(torch.bfloat16)
    m.config.dtype = "bfloat16"
    m.generation_config.eos_token_id = model.config.eos_token_id
    m.generation_config.pad_token_id = model.config.pad_token_id
    m.save_pretrained(tmp, safe_serialization=True)
    for f in data.tokenizer_dir.iterdir():
        shutil.copy2(f, tmp / f.name)
    cfg = model.config
    desc = description or (
        f"Eyas pocket target: Qwen3 {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
        f"{count_params(model) / 1e6:.1f}M params, byte-level BPE {cfg.vocab_size}, trained from scratch "
        f"on this machine's Python stdlib + site-packages with FIM (PSM) by `eyas train pocket`")
    (tmp / "eyas.json").write_text(json.dumps({"trained": True, "description": desc, "train": train_info},
                                              indent=1))
    for f in tmp.iterdir():
        f.chmod(0o644)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


SAMPLE_PROMPTS = [
    ('def has_close_elements(numbers: list[float], threshold: float) -> bool:\n'
     '    """Check if in given list of numbers, are any two numbers closer to each other than\n'
     '    given threshold."""\n'),
    ('def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n'),
    ('import os\n\n\ndef list_python_files(root):\n'
     '    """Return the paths of all .py files under root, sorted."""\n'),
]


@torch.no_grad()
def sample_completions(model_dir: Path, max_new_tokens: int = 64) -> list[tuple[str, str]]:
    """Greedy FIM completions of HumanEval-style prompts through the real prompt builder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from completion.prompt import PromptBuilder

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    pb = PromptBuilder(tok)
    out = []
    for prefix in SAMPLE_PROMPTS:
        prompt = pb.build(repo="examples", path="solution.py", prefix=prefix, suffix="\n")
        ids = torch.tensor([prompt.ids])
        gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=prompt.stop_ids, pad_token_id=tok.pad_token_id)
        new = gen[0, ids.shape[1]:].tolist()
        stop = next((i for i, t in enumerate(new) if t in prompt.stop_ids), len(new))
        out.append((prefix, tok.decode(new[:stop], skip_special_tokens=False)))
    return out


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eyas train pocket", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="work directory (data, checkpoint, log)")
    p.add_argument("--export-dir", default=str(DEFAULT_EXPORT), help="where the trained HF model goes")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="a prepared corpus (data.json, token memmaps, tokenizer) used as it is, e.g. carried to "
                        "a GPU machine: no corpus scan (default: prepare it in --out)")
    p.add_argument("--init", default=None, metavar="DIR",
                   help="start from this exported target's weights (same size), with a fresh optimizer")
    p.add_argument("--minutes", type=float, default=0,
                   help="fit --steps to this wall-clock budget after 20 timed steps (0: off)")
    p.add_argument("--size", default="pocket", choices=sorted(SIZES))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--max-positions", type=int, default=4096)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--fim-rate", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch / tokenizer threads")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (measured slower on this CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the loss (~20%% faster, +45 s)")
    p.add_argument("--source", action="append", default=None, metavar="DIR",
                   help="corpus root(s) instead of the stdlib + site-packages (each top-level entry is a repo)")
    p.add_argument("--max-repo-bytes", type=int, default=-1, help="per-repo byte cap (-1: the default)")
    p.add_argument("--heldout-fraction", type=float, default=None)
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--chunk-tokens", type=int, default=960,
                   help="longest chunk of a file per sample (a sample + header fits a row)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-tokens-quick", type=int, default=16384)
    p.add_argument("--eval-tokens", type=int, default=262144, help="held-out tokens for the final eval")
    p.add_argument("--ckpt-every", type=float, default=240, help="seconds between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from <out>/ckpt.pt")
    p.add_argument("--extend-to", type=int, default=0, metavar="STEPS",
                   help="continue <out>/ckpt.pt to STEPS steps in all: a new phase (warm-up to --lr, cosine "
                        "decay) from the checkpoint's step; the other settings stay the checkpoint's")
    p.set_defaults(phase_start=0)   # set by --extend-to, kept in the checkpoint
    p.add_argument("--prepare-only", action="store_true", help="build corpus, tokenizer, memmaps; stop")
    p.add_argument("--export-only", action="store_true", help="evaluate + export the latest checkpoint")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--bench", type=int, default=0, metavar="STEPS",
                   help="measure tokens/s (fp32 vs bf16 autocast) over STEPS steps each, then stop")
    return p


def set_threads(n: int) -> None:
    os.environ.setdefault("RAYON_NUM_THREADS", str(n))
    os.environ.setdefault("RAYON_RS_NUM_CPUS", str(n))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false" if n == 1 else "true")
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass


def bench(data: Data, args) -> dict:
    res = {}
    for bf16 in (False, True):
        args.bf16 = bf16
        tr = Trainer(data, args)
        tr.train_step()   # warm-up
        t0 = time.perf_counter()
        for _ in range(args.bench):
            tr.train_step()
        dt = time.perf_counter() - t0
        res["bf16" if bf16 else "fp32"] = round(args.bench * args.batch * args.seq_len / dt)
        log_line(Path(args.out) / "train.log", f"bench bf16={bf16}: {res['bf16' if bf16 else 'fp32']} tok/s "
                 f"(batch {args.batch}x{args.seq_len}, threads {torch.get_num_threads()}, compile {args.compile})")
    args.bf16 = False
    return res


def finish(trainer: Trainer, args) -> dict:
    """Final held-out evaluation, export, sample completions."""
    log = trainer.log
    t0 = time.perf_counter()
    ev = evaluate(trainer.model, trainer.data, args.seq_len, args.eval_tokens, bf16=args.bf16)
    log_line(log, f"final eval ({time.perf_counter() - t0:.0f}s): {json.dumps(ev)}")
    info = {"tokens": trainer.tokens, "steps": trainer.step, "wall_s": round(trainer.elapsed),
            "heldout_loss": ev.get("all_loss"), "heldout_acc": ev.get("all_acc"), "heldout": ev,
            "params": count_params(trainer.model), "batch": args.batch, "seq_len": args.seq_len,
            "lr": args.lr, "fim_rate": args.fim_rate,
            "corpus": {k: trainer.data.meta[k] for k in ("train", "heldout")}}
    (Path(args.out) / "result.json").write_text(json.dumps(info, indent=1))
    if args.no_export:
        return info
    path = export(trainer.model, trainer.data, Path(args.export_dir), info)
    log_line(log, f"exported -> {path} ({sum(f.stat().st_size for f in path.iterdir()) / 1e6:.1f} MB)")
    for prefix, completion in sample_completions(path):
        log_line(log, f"sample (greedy FIM, suffix '\\n'):\n{prefix}⟦{completion}⟧\n" + "-" * 60)
    return info


def adopt_checkpoint_settings(args, ckpt: Path, log: Path | None) -> None:
    """A resumed run keeps the settings it started with (model size, schedule, batch, data order);
    an extended one (`--extend-to`) starts a new schedule phase at the checkpoint's step."""
    ck = torch.load(ckpt, weights_only=False, map_location="cpu")
    saved = {"phase_start": 0, **ck["train_args"]}
    if args.extend_to:
        if args.extend_to <= ck["step"]:
            raise SystemExit(f"--extend-to {args.extend_to}: the checkpoint is already at step {ck['step']}")
        if args.extend_to != saved["steps"]:   # a new phase (re-running the same command resumes it)
            saved.update(steps=args.extend_to, lr=args.lr, phase_start=ck["step"])
            log_line(log, f"extending step {ck['step']} -> {args.extend_to}: warm-up to lr {args.lr}, cosine")
    for k, v in saved.items():
        if getattr(args, k) != v:
            if k != "phase_start":   # not an option: nothing the user passed is ignored
                log_line(log, f"--{k.replace('_', '-')} {getattr(args, k)} ignored: the checkpoint uses {v}")
            setattr(args, k, v)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "train.log"
    log_line(log, f"eyas train pocket {' '.join(argv if argv is not None else sys.argv[1:])}")
    roots = None
    if args.source:
        from completion.training.source_corpus import SourceRoot
        roots = [SourceRoot(None, Path(d)) for d in args.source]
    if args.data:
        data = load_data(Path(args.data))
    else:
        data = prepare(out, roots=roots, vocab_size=args.vocab_size, chunk_tokens=args.chunk_tokens,
                       max_repo_bytes=args.max_repo_bytes, heldout_fraction=args.heldout_fraction, log=log)
    if args.prepare_only:
        return 0
    if args.bench:
        bench(data, args)
        return 0
    ckpt = out / "ckpt.pt"
    if args.extend_to:
        args.resume = True
    if args.resume or args.export_only:
        if not ckpt.exists():
            if args.export_only:
                log_line(log, f"no checkpoint at {ckpt}")
                return 1
            log_line(log, "no checkpoint yet: starting from scratch")
        else:
            adopt_checkpoint_settings(args, ckpt, log)
    elif ckpt.exists():
        log_line(log, f"{ckpt} exists: pass --resume to continue it (or remove it to start over)")
        return 2
    trainer = Trainer(data, args)
    if ckpt.exists() and (args.resume or args.export_only):
        trainer.restore()
        log_line(log, f"resumed from {ckpt} at step {trainer.step} ({trainer.tokens} tokens)")
    if not args.export_only:
        trainer.run()
    finish(trainer, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
