"""The lean forward against the Hugging Face forward (the reference), fp32 on the CPU: logits and
aux hidden states within 1e-4 over prefill, decode, multi-token verify, crop + re-extend, prefix
reuse and cache growth, for dense and MoE Qwen3 models with tied and untied embeddings."""
from __future__ import annotations

import pytest
import torch

from completion.engine.lean import LeanTargetRunner, lean_model_for
from completion.engine.lean.cache import MIN_CAPACITY
from completion.engine.target import TargetRunner

TOLERANCE = 1e-4
VOCAB = 4096


def model(kind: str):
    from transformers import Qwen3ForCausalLM, Qwen3MoeForCausalLM

    from completion.training.synthetic import random_target_config

    # a wide init so activations are far from zero and a wrong detail shows in the logits
    cfg = random_target_config(moe=kind.startswith("moe"), num_layers=4, hidden_size=64, vocab_size=VOCAB,
                               init_std=0.2)
    if kind == "dense-tied":
        cfg.tie_word_embeddings = True
    if kind == "moe-mixed":   # dense and sparse layers in one model, renormalised top-k weights
        cfg.mlp_only_layers, cfg.norm_topk_prob, cfg.num_experts_per_tok = [1], True, 3
    torch.manual_seed(4)
    return (Qwen3MoeForCausalLM if kind.startswith("moe") else Qwen3ForCausalLM)(cfg).eval()


@pytest.fixture(scope="module", params=["dense", "dense-tied", "moe", "moe-mixed"])
def runners(request):
    """A reference runner on one copy of the weights and a lean runner on another: the lean
    model re-points the Hugging Face projections at its fused tensors, so the reference copy is
    kept untouched to prove that fusing changed nothing."""
    reference, hf = model(request.param), model(request.param)
    return lambda: (TargetRunner(reference), LeanTargetRunner(lean_model_for(hf)))


def same(ref_out, lean_out):
    (ref_logits, ref_hidden), (logits, hidden) = ref_out, lean_out
    assert logits.dtype == torch.float32 and logits.shape == ref_logits.shape
    assert logits.numel() == 0 or (logits - ref_logits).abs().max() < TOLERANCE
    assert (hidden is None) == (ref_hidden is None)
    if hidden is not None:
        assert hidden.shape == ref_hidden.shape and (hidden - ref_hidden).abs().max() < TOLERANCE


def tokens(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def both(pair, method, *args, **kw):
    ref, lean = pair
    out = getattr(ref, method)(*args, **kw), getattr(lean, method)(*args, **kw)
    assert ref.ids == lean.ids
    return out


def test_prefill_decode_verify_crop_and_growth(runners):
    pair = runners()
    seq = tokens(MIN_CAPACITY + 80)
    same(*both(pair, "forward", seq[:37], (0, 1, 3)))                     # prefill with aux layers
    same(*both(pair, "forward", seq[37:38], (1, 2)))                      # one decode step
    same(*both(pair, "forward", seq[38:44], (3, 1, 2)))                   # verify, layers in any order
    both(pair, "crop", 40)                                                # reject some drafts
    same(*both(pair, "forward", seq[40:45], (1, 2, 3)))                   # re-extend over dropped rows
    same(*both(pair, "forward", seq[45:50], (0,), logits_to_keep=None))    # a prefill chunk: no logits
    same(*both(pair, "forward", seq[50:MIN_CAPACITY - 2], logits_to_keep=1))
    for i in range(MIN_CAPACITY - 2, MIN_CAPACITY + 3):                   # decode across a cache growth
        same(*both(pair, "forward", [seq[i]]))
    same(*both(pair, "forward", seq[MIN_CAPACITY + 3:], (2,), logits_to_keep=500))
    both(pair, "crop", 0)
    assert pair[1].cache.length == 0
    same(*both(pair, "forward", seq[:5], (0,)))


def test_reuse_prefix_matches_the_reference(runners):
    pair = runners()
    prompt = tokens(60, seed=1)
    same(*both(pair, "forward", prompt, logits_to_keep=1))
    edited = prompt[:50] + tokens(4, seed=2)
    assert both(pair, "reuse_prefix", edited) == (50, 50)
    same(*both(pair, "forward", edited[50:], (1, 2, 3), logits_to_keep=1))
    # the same prompt again: everything is cached, yet one token is left to compute
    assert both(pair, "reuse_prefix", edited) == (53, 53)
    same(*both(pair, "forward", edited[53:], logits_to_keep=1))


def test_bad_calls_are_refused():
    lean = LeanTargetRunner(lean_model_for(model("dense")))
    with pytest.raises(ValueError, match="at least one token"):
        lean.forward([])
    with pytest.raises(ValueError, match="hidden layers"):
        lean.forward([1, 2], hidden_layers=(4,))
    assert lean.ids == [] and lean.cache.length == 0


@pytest.mark.parametrize("kind,precision", [("dense", "bf16"), ("moe", "bf16"), ("dense", "int8")])
def test_verification_rows_equal_decode_steps_bit_for_bit_below_float32(kind, precision):
    """Lossless speculative decoding below float32 rests on this: each row of a K+1-token
    verification forward gets exactly the logits and aux states that plain decoding computes
    one token at a time. (Batched SDPA rounds differently from one query in bf16.)"""
    from completion.engine.lean.weights import quantize

    lean = lean_model_for(model(kind).to(torch.bfloat16))
    if precision == "int8":
        quantize(lean.w, "int8")
    assert_rows_equal_steps(lean, tokens(37), tokens(11, seed=1), hidden_layers=(1, 2))


def assert_rows_equal_steps(lean, prompt: list[int], drafts: list[int], hidden_layers: tuple[int, ...]) -> None:
    """After `prompt`, one forward over `drafts` (a verification) gives bit for bit the logits and
    aux states of feeding them one token at a time (decode steps)."""
    one_by_one, together = LeanTargetRunner(lean), LeanTargetRunner(lean)
    for runner in (one_by_one, together):
        runner.forward(prompt, logits_to_keep=1)
    steps = [one_by_one.forward([t], hidden_layers=hidden_layers) for t in drafts]
    logits, aux = together.forward(drafts, hidden_layers=hidden_layers)
    assert torch.equal(logits, torch.cat([s[0] for s in steps]))
    assert torch.equal(aux, torch.cat([s[1] for s in steps]))
