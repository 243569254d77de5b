"""The drafter's input layout, its KV cache, and the training/inference agreement that makes one
forward pass produce K drafts."""
from __future__ import annotations

import pytest
import torch

from completion.engine.lean import native
from conftest import need_native_kernels
from completion.speculative import DrafterConfig, init_drafter
from completion.speculative.cache import DraftCache
from completion.speculative.layout import parallel_draft_inputs
from completion.speculative.proposer import AutoregressiveProposer, DraftSampling, ParallelProposer
from completion.training.drafter_fit import group_mask, group_rows
from completion.training.synthetic import random_target

H, V = 64, 2048


@pytest.fixture(scope="module")
def target():
    return random_target(seed=2, num_layers=4, hidden_size=H, vocab_size=V)


def drafter_for(target, **overrides):
    cfg = dict(hidden_size=H, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               intermediate_size=128, vocab_size=V, draft_vocab_size=V, target_hidden_size=H, mask_token_id=V - 1,
               aux_layer_ids=(1, 2, 3), trained_depth=8)
    cfg.update(overrides)
    return init_drafter(DrafterConfig(**cfg), seed=9, std=0.1, target_model=target)


def aux_states(target, ids):
    from completion.engine.torch_engine import new_runner
    return new_runner(target).forward(ids, hidden_layers=(1, 2, 3))[1]


def test_layout_worked_example():
    # the target holds 5 tokens, the drafter has committed rows for positions 0 and 1
    inputs = parallel_draft_inputs([10, 11, 12, 13, 14], bonus=99, start=2, num_drafts=4, mask_token_id=7)
    assert inputs.input_ids.tolist() == [13, 14, 99, 7, 7, 7]      # shifted accepted, bonus, MASK x 3
    assert inputs.positions.tolist() == [2, 3, 4, 5, 6, 7]         # consecutive
    assert inputs.is_mask.tolist() == [False, False, False, True, True, True]
    assert inputs.num_committed == 3
    assert inputs.sample_rows == slice(2, 6)                       # bonus slot + 3 MASK slots -> 4 drafts
    single = parallel_draft_inputs([10, 11], bonus=5, start=1, num_drafts=1, mask_token_id=7)
    assert single.input_ids.tolist() == [5] and single.sample_rows == slice(0, 1)


def test_mask_slots_are_never_committed(target):
    """Drafting with MASK slots leaves the cache exactly as a pass without them would."""
    drafter = drafter_for(target)
    ids = list(range(300, 320))
    aux = aux_states(target, ids + [400, 401, 402])
    greedy = DraftSampling()
    with_masks, without = DraftCache(drafter), DraftCache(drafter)
    ParallelProposer(drafter, 6).propose(with_masks, ids, 400, aux[:20], greedy)
    ParallelProposer(drafter, 1).propose(without, ids, 400, aux[:20], greedy)
    assert with_masks.length == without.length == 20 and with_masks.ids == ids + [400]
    # the next step starts where the committed rows end and overwrites the dead MASK entries
    a = ParallelProposer(drafter, 5).propose(with_masks, ids + [400, 401], 402, aux[20:22], greedy)
    b = ParallelProposer(drafter, 5).propose(without, ids + [400, 401], 402, aux[20:22], greedy)
    assert a.token_ids == b.token_ids
    for layer in range(drafter.config.num_hidden_layers):
        torch.testing.assert_close(with_masks.keys[layer][:, :22], without.keys[layer][:, :22])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_mask_sees_what_inference_sees(target, dtype, monkeypatch):
    """The parallel-group mask used in training gives the MASK slots the same outputs as the
    cached causal pass at inference: the property that lets one pass train all K drafts. In bf16
    (head_dim 32) the inference pass attends on Eyas's decode kernel where it runs, training on
    torch's SDPA: the two agree to bf16 rounding."""
    kernel_rows = []
    if dtype == torch.bfloat16:
        need_native_kernels()
        decode_attention = native.decode_attention
        monkeypatch.setattr(native, "decode_attention",
                            lambda q, *a: kernel_rows.append(q.shape[0]) or decode_attention(q, *a))
    drafter = drafter_for(target, head_dim=16 if dtype == torch.float32 else 32).to(dtype)
    drafter.refresh()
    ids = list(range(500, 516))
    n, k = 15, 5                                   # 15 committed rows, the 15th carries the bonus ids[15]
    aux = aux_states(target, ids)[:n].to(dtype)
    cache = DraftCache(drafter)
    inputs = parallel_draft_inputs(ids[:n], ids[n], 0, k, drafter.config.mask_token_id)
    hidden = torch.cat([drafter.combine(aux), drafter.mask_state.expand(k - 1, -1)])
    with torch.no_grad():
        inference, _ = drafter(inputs.input_ids, hidden, inputs.positions, cache=cache)
        # the same rows as training lays them out: depth-0 rows for every anchor, then the
        # rollout of anchor n-1 at depths 1..k-1
        anchor = torch.cat([torch.arange(n), torch.full((k - 1,), n - 1)])
        depth = torch.cat([torch.zeros(n, dtype=torch.long), torch.arange(1, k)])
        training, _ = drafter(inputs.input_ids, hidden, anchor + depth, attn_mask=group_mask(anchor, depth))
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(training[n - 1:].float(), inference[n - 1:].float(), atol=tol, rtol=tol)
    assert kernel_rows == ([n + k - 1] * drafter.config.num_hidden_layers if dtype == torch.bfloat16 else [])


def test_group_rows_and_mask_small_example():
    anchor, depth = group_rows(4, 3)     # 4 tokens: depth 0 anchors 0..2, depth 1 anchors 0..1, depth 2 anchor 0
    assert anchor.tolist() == [0, 1, 2, 0, 1, 0] and depth.tolist() == [0, 0, 0, 1, 1, 2]
    mask = group_mask(anchor, depth).int().tolist()
    assert mask[4] == [1, 1, 0, 0, 1, 0]  # (anchor 1, depth 1): context up to 1, itself
    assert mask[5] == [1, 0, 0, 1, 0, 1]  # (anchor 0, depth 2): context 0, its depth 1, itself


def test_both_proposers_agree_on_the_first_draft(target):
    drafter = drafter_for(target)
    ids = list(range(700, 712))
    aux = aux_states(target, ids)
    parallel = ParallelProposer(drafter, 6).propose(DraftCache(drafter), ids, 50, aux, DraftSampling())
    chained = AutoregressiveProposer(drafter, 6).propose(DraftCache(drafter), ids, 50, aux, DraftSampling())
    assert len(parallel.token_ids) == len(chained.token_ids) == 6
    assert parallel.token_ids[0] == chained.token_ids[0]


@pytest.mark.parametrize("options", [
    {"norm_before_residual": True},
    {"norm_before_fc": True, "fc_norm": True, "norm_output": True},
    {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64}},
    {"layer_style": "qwen3", "attention_bias": True, "draft_vocab_size": 512},
])
def test_config_variants_draft_and_round_trip(tmp_path, target, options):
    from completion.speculative import load_drafter, save_drafter

    drafter = drafter_for(target, **options)
    ids = list(range(900, 910))
    aux = aux_states(target, ids)
    before = ParallelProposer(drafter, 4).propose(DraftCache(drafter), ids, 3, aux, DraftSampling())
    save_drafter(drafter, tmp_path)
    loaded = load_drafter(str(tmp_path), target)
    after = ParallelProposer(loaded, 4).propose(DraftCache(loaded), ids, 3, aux, DraftSampling())
    assert before.token_ids == after.token_ids
    assert all(0 <= t < V for t in after.token_ids)


def test_compiled_draft_passes_equal_eager(target):
    """The compiled inference pass (one graph for one row, one for several, dynamic lengths)
    drafts what the eager pass drafts, P-EAGLE and EAGLE-3 alike, through a cache growth."""
    from completion.speculative.compiled import compile_drafter

    eager, fast = drafter_for(target), drafter_for(target)
    assert compile_drafter(fast) and fast.compiled.warmed == {False, True}
    ids = torch.randint(0, V - 1, (300,), generator=torch.Generator().manual_seed(4)).tolist()
    aux = aux_states(target, ids)
    caches = {d: DraftCache(d) for d in (eager, fast)}
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    end, steps = 40, 0
    while end < 290:
        proposer, k = ((ParallelProposer, 6), (AutoregressiveProposer, 4))[steps % 2]
        start = caches[eager].length
        drafts = [proposer(d, k).propose(caches[d], ids[:end - 1], ids[end - 1], aux[start:end - 1], DraftSampling())
                  for d in (eager, fast)]
        assert drafts[0].token_ids == drafts[1].token_ids
        end, steps = end + 1 + end % 5, steps + 1   # 1-5 rows pending at the next pass
    assert caches[fast].capacity == 512 and not fast.compiled.failed
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs, "recompiled after the warm-up"
    for layer in range(eager.config.num_hidden_layers):
        torch.testing.assert_close(caches[fast].keys[layer][:, :end - 1], caches[eager].keys[layer][:, :end - 1])
