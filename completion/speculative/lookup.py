"""Prompt lookup: drafts copied from the context, as llama.cpp's lookup and vLLM's n-gram proposer
make them. Code repeats itself (identifiers, call patterns, the lines above the cursor), so where the
last few tokens occurred before, the tokens that followed them are often what comes next, and they
cost no model forward. The speculative decoder in mode "peagle+lookup" tries this first and runs
the drafter only where nothing matches.
"""
from __future__ import annotations

import numpy as np

NGRAMS = (3, 2)      # the suffix lengths tried, longest first; one token alone matches too loosely
LOOKUP_K = 4         # copied drafts per step at least, whatever the drafter's K: a copy tends to run on
                     # (4 beat 2 on library source, docs/speculative.md), the drafter's MASK depths do not


def lookup_drafts(ids: list[int], k: int, ngrams: tuple[int, ...] = NGRAMS) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the last n tokens of `ids`,
    for the longest n in `ngrams` that occurs before; [] when none does."""
    seq = np.asarray(ids, dtype=np.int64)
    for n in ngrams:
        starts = len(seq) - n           # windows seq[i:i+n] for i < starts end before the suffix does
        if starts <= 0:
            continue
        match = np.ones(starts, dtype=bool)
        for j in range(n):
            match &= seq[j:starts + j] == seq[starts + j]
        found = np.flatnonzero(match)
        if found.size:
            follow = int(found[-1]) + n
            return seq[follow:follow + k].tolist()
    return []
