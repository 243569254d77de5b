"""Qwen3-Coder repo-level fill-in-the-middle prompts, as token ids (DESIGN §3.4).

    <|repo_name|>{repo}\n
    <|file_sep|>{other path}\n{snippet}\n            (one per cross-file snippet)
    <|file_sep|>{current path}\n
    <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>

Stable parts come first so the engine's prefix reuse keeps their KV across keystrokes. Document text
is tokenized with special-token parsing OFF: a file that contains "<|fim_middle|>" is text, never a
control token (Qwen marks its FIM tokens `special: false`, so the usual switches do not help).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD = "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"
REPO_NAME, FILE_SEP = "<|repo_name|>", "<|file_sep|>"
ENDOFTEXT, IM_END = "<|endoftext|>", "<|im_end|>"
CONTROL_TOKENS = (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP)
STOP_TOKENS = (ENDOFTEXT, IM_END) + CONTROL_TOKENS


@dataclass
class FileSnippet:
    path: str
    text: str


@dataclass
class Prompt:
    ids: list[int]
    num_snippet_tokens: int = 0
    num_prefix_tokens: int = 0
    num_suffix_tokens: int = 0
    stop_ids: list[int] = field(default_factory=list)
    # ids before the cursor line's: what typing on that line leaves unchanged
    num_stable_tokens: int = 0


class PromptBuilder:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._backend = tokenizer.backend_tokenizer
        vocab = tokenizer.get_vocab()
        missing = [t for t in CONTROL_TOKENS + (ENDOFTEXT,) if t not in vocab]
        if missing:
            raise ValueError(f"the model's tokenizer lacks the Qwen FIM tokens {missing}; "
                             "Eyas needs a Qwen2.5/Qwen3-Coder-style tokenizer")
        self.token_id = {t: vocab[t] for t in STOP_TOKENS if t in vocab}
        # Any added token can be injected by text, not only the FIM ones (e.g. <|im_start|>).
        self._added = tuple(tokenizer.get_added_vocab())
        self.stop_ids = sorted(self.token_id[t] for t in STOP_TOKENS if t in self.token_id)
        self._encode_cached = lru_cache(maxsize=64)(self._encode_uncached)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of document text with special-token parsing off."""
        if not text:
            return []
        if not any(tok in text for tok in self._added):
            # Nothing to misparse: the fast path gives the same ids.
            return self._backend.encode(text, add_special_tokens=False).ids
        # Run normalizer, pre-tokenizer and BPE ourselves, skipping the added-token matcher.
        normalizer, pre = self._backend.normalizer, self._backend.pre_tokenizer
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        pieces = pre.pre_tokenize_str(text) if pre is not None else [(text, None)]
        return [tok.id for piece, _ in pieces for tok in self._backend.model.tokenize(piece)]

    def count_tokens(self, text: str) -> int:
        # memoized: the context room counts the very prefix that `build` then encodes
        return len(self._encode_cached(text))

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self.encode_text(text))

    def build(self, *, repo: str, path: str, prefix: str, suffix: str,
              snippets: Sequence[FileSnippet] = ()) -> Prompt:
        t = self.token_id
        ids = [t[REPO_NAME], *self._encode_cached(f"{repo}\n")]
        for s in snippets:   # snippets repeat across keystrokes: cache their ids
            ids += [t[FILE_SEP], *self._encode_cached(f"{s.path}\n{s.text.rstrip()}\n")]
        num_snippet_tokens = len(ids)
        ids += [t[FILE_SEP], *self._encode_cached(f"{path}\n")]
        prefix_ids, suffix_ids = self._encode_cached(prefix), self._encode_cached(suffix)
        above = prefix[:prefix.rfind("\n") + 1]   # the lines above the cursor line
        stable = len(ids) + 1 + len(os.path.commonprefix([prefix_ids, self._encode_cached(above)]))
        ids += [t[FIM_PREFIX], *prefix_ids, t[FIM_SUFFIX], *suffix_ids, t[FIM_MIDDLE]]
        return Prompt(ids, num_snippet_tokens, len(prefix_ids), len(suffix_ids), list(self.stop_ids), stable)
