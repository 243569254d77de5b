"""Prompts from real code on this machine for a real target's drafter data: the languages found,
the held-out probe's files and the held-out split kept out, FIM / left-to-right prompts of the
exact length in the real Qwen tokenizer, and chunked greedy labels equal to the full argmax."""
from __future__ import annotations

import random

import torch

from completion.models.tiny import qwen_tokenizer_dir
from completion.prompt import FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME
from completion.training.code_sources import code_source, draw_files, probe_files
from completion.training.source_corpus import is_heldout
from completion.training.synthesis import greedy_labels


def test_drawn_files_span_languages_and_keep_out_probe_and_heldout_files():
    train, heldout = draw_files(400), draw_files(400, heldout=True)
    languages = {f.language for f in train}
    assert {"python", "c"} <= languages               # the standard library and /usr/include are always there
    assert all(not is_heldout(f.key) for f in train) and all(is_heldout(f.key) for f in heldout)
    assert not {f.file for f in train} & {f.file for f in heldout}
    probe = probe_files()
    assert probe and not {f.file.resolve() for f in train + heldout} & probe
    python = [f for f in train if f.language == "python"]
    assert abs(len(python) - 0.45 * 400) <= 1        # each language its share
    assert draw_files(400) == train                   # deterministic


def test_prompts_have_the_exact_length_and_the_repo_level_header():
    source = code_source(qwen_tokenizer_dir() / "tokenizer.json", fim_rate=0.5, files=60)
    rng, kinds = random.Random(0), set()
    for length in (96, 200, 333):
        for _ in range(4):
            ids, kind = source.prompt(rng, length)
            kinds.add(kind)
            assert len(ids) == length and ids[0] == source.special[REPO_NAME]
            assert source.special[FILE_SEP] in ids
            if kind == "fim":
                assert ids[-1] == source.special[FIM_MIDDLE]
                assert source.special[FIM_PREFIX] in ids and source.special[FIM_SUFFIX] in ids
    assert kinds == {"fim", "l2r"}


def test_greedy_labels_in_vocabulary_blocks_equal_the_full_argmax():
    head = torch.randn(300, 16, dtype=torch.bfloat16)
    head[250] = head[7]          # a tie across blocks goes to the lower id, as argmax's does
    states = torch.randn(3, 7, 16, dtype=torch.bfloat16)
    assert torch.equal(greedy_labels(head, states, block=64), (states @ head.T).float().argmax(-1))
