"""The pocket tokenizer: a byte-level BPE trained on the code corpus, with Qwen3-Coder's control tokens.

Same pipeline shape as Qwen's tokenizer, minus the NFC normalizer (it would break exact round trips
of non-NFC text): Qwen's pre-tokenizer split regex (runs of spaces and newlines stay together, digits
are single tokens, a word keeps its leading space), then ByteLevel, so every byte sequence encodes
and `decode(encode(x)) == x` for any text. The control tokens are single added tokens with Qwen's
special flags: `<|endoftext|>` and `<|im_end|>` are special; the FIM / repo tokens are not (as in
Qwen2.5/Qwen3-Coder), so a decode that skips special tokens still shows them.
Saved as a plain `PreTrainedTokenizerFast` (`tokenizer.json` + `tokenizer_config.json`), which
`AutoTokenizer.from_pretrained(dir)` loads as is.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from completion.prompt import (ENDOFTEXT, FILE_SEP, FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX, IM_END,
                               REPO_NAME)

# Qwen2/Qwen3's split regex, verbatim.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Ids 0..7 in this order; `<|endoftext|>` is id 0 (eos, pad, and the document separator).
SPECIAL_TOKENS = (ENDOFTEXT, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP, IM_END)
SPECIAL_FLAG = {ENDOFTEXT: True, IM_END: True}   # the rest are `special: false`, like Qwen's
VOCAB_SIZE = 16_000                              # specials + 256 bytes + merges; 16000 = 250 * 64


def build_empty():
    """An untrained tokenizer with the pocket pipeline (for training or for tests)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(byte_fallback=False, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE, *, min_frequency: int = 2,
                    max_token_length: int | None = 32, show_progress: bool = False):
    """A `tokenizers.Tokenizer` trained on `texts` (an iterator of documents)."""
    from tokenizers import AddedToken, pre_tokenizers, trainers

    tok = build_empty()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress,
        special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=max_token_length)
    tok.train_from_iterator(texts, trainer=trainer)
    # Re-register the control tokens with Qwen's flags; they keep ids 0..7.
    tok.add_tokens([AddedToken(t, special=SPECIAL_FLAG.get(t, False), normalized=False)
                    for t in SPECIAL_TOKENS if not SPECIAL_FLAG.get(t, False)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in SPECIAL_TOKENS if SPECIAL_FLAG.get(t, False)])
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


def wrap(tok, model_max_length: int = 32768):
    """The Hugging Face tokenizer object around a trained `tokenizers.Tokenizer`."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT, bos_token=None, unk_token=None,
        clean_up_tokenization_spaces=False, model_max_length=model_max_length, add_prefix_space=False,
        padding_side="left")


def save(tok, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = wrap(tok)
    hf.save_pretrained(out)
    return out


def load(path: str | os.PathLike):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def iter_texts(files) -> Iterator[str]:
    for f in files:
        yield f.text


def bytes_per_token(tok, texts: Iterable[str]) -> tuple[int, int]:
    """(bytes, tokens) of `texts` under a `tokenizers.Tokenizer` (special-token parsing is harmless
    here: corpus files do not contain the control tokens)."""
    texts = list(texts)
    enc = tok.encode_batch(texts, add_special_tokens=False)
    return sum(len(t.encode("utf-8")) for t in texts), sum(len(e.ids) for e in enc)
