"""Drafter training: data synthesis (shards, resume), COD sampling, the parallel-group mask,
sequence partitioning (exact gradients), the P-EAGLE and EAGLE-3 trainers. Tiny random models."""
from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from completion.prompt import ENDOFTEXT, FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME
from completion.training.drafter_fit import group_mask
from completion.training.peagle_trainer import (Metrics, TrainConfig, build_drafter, cod_sample, eagle3_unroll,
                                                element_supervision, element_weights, make_targets,
                                                partition_elements, peagle_forward, peagle_sequence_step,
                                                supervised_rows)
from completion.training.synthesis import (PromptSource, SynthConfig, SynthDataset, Sample, finished_shards,
                                           generate_batch, synthesize)
from completion.training.synthetic import random_target

V, H, LAYERS = 512, 32, 4
AUX = (1, 2, 3)
SPECIAL = {ENDOFTEXT: 505, FILE_SEP: 506, FIM_MIDDLE: 507, FIM_PREFIX: 508, FIM_SUFFIX: 509, REPO_NAME: 510}


@pytest.fixture(scope="module")
def target():
    return random_target(seed=3, num_layers=LAYERS, hidden_size=H, vocab_size=V)


def char_source(fim_rate: float = 0.5) -> PromptSource:
    """Prompts from this repository's own Python files, one token per character (ids < 500)."""
    root = Path(__file__).resolve().parents[1] / "completion"
    files = sorted(root.glob("prompt/*.py")) + sorted(root.glob("training/corpus.py"))
    enc = lambda text: [min(ord(c), 499) for c in text]                       # noqa: E731
    dec = lambda ids: "".join(chr(int(i)) for i in ids if int(i) < 500)      # noqa: E731
    chunks = []
    for f in files:
        text = f.read_text()
        for i in range(0, len(text) - 400, 400):
            chunks.append(("eyas", f.name, enc(text[i:i + 400])))
    return PromptSource(chunks, enc, dec, SPECIAL, fim_rate)


SMALL = SynthConfig(samples=6, shard_size=4, batch=2, min_context=24, max_context=40, new_tokens=12, seed=5)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory, target):
    out = tmp_path_factory.mktemp("synth")
    torch.manual_seed(0)
    synthesize(target, char_source(), out, SMALL, aux_layer_ids=AUX, stop_ids={SPECIAL[ENDOFTEXT]})
    return out


# ---- synthesis -------------------------------------------------------------------------------------

def test_prompts_have_the_exact_length_and_a_header():
    src = char_source(fim_rate=0.5)
    rng = random.Random(0)
    kinds = set()
    for length in (30, 64, 120):
        for _ in range(10):
            ids, kind = src.prompt(rng, length)
            kinds.add(kind)
            assert len(ids) == length and ids[0] == SPECIAL[REPO_NAME]
            if kind == "fim":
                assert ids[-1] == SPECIAL[FIM_MIDDLE] and SPECIAL[FIM_PREFIX] in ids and SPECIAL[FIM_SUFFIX] in ids
    assert kinds == {"l2r", "fim"}


def test_shard_round_trip(synth_dir, target):
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    assert [s["index"] for s in manifest["shards"]] == [0, 1]
    assert [s["samples"] for s in manifest["shards"]] == [4, 2]
    assert manifest["aux_layer_ids"] == list(AUX)
    ds = SynthDataset(synth_dir)
    assert len(ds) == 6 and ds.aux_layer_ids == AUX
    for i in range(len(ds)):
        s = ds[i]
        T, P = len(s.ids), s.prompt_len
        assert s.aux.shape == (T, 3 * H) and s.final.shape == (T, H) and s.labels.shape == (T,)
        assert s.aux.dtype == torch.bfloat16 and P <= T <= P + SMALL.new_tokens
        # the continuation is the target's greedy choice, recorded as its label
        assert torch.equal(s.labels[P - 1:T - 1], s.ids[P:T])
    # the stored states are the target's (within bf16 rounding) and its final state gives its logits
    s = ds[0]
    with torch.no_grad():
        out = target.model(input_ids=s.ids[None], output_hidden_states=True)
    aux = torch.cat([out.hidden_states[i][0] for i in AUX], dim=-1)
    torch.testing.assert_close(s.aux.float(), aux, atol=0.05, rtol=0.02)
    logits = target.lm_head(s.final.float())
    assert (logits.argmax(-1) == s.labels).float().mean() > 0.9


def test_generation_stops_a_row_at_the_stop_token(target):
    prompts = [[1, 2, 3, 4], [5, 6, 7, 8]]
    free = generate_batch(target, prompts, 6, AUX, set())
    stop = int(free[0]["ids"][5])                 # the second token row 0 generates
    rows = generate_batch(target, prompts, 6, AUX, {stop})
    assert len(rows[0]["ids"]) == 6 and int(rows[0]["ids"][-1]) == stop
    assert torch.equal(rows[0]["ids"], free[0]["ids"][:6])


def test_synthesis_resumes_skipping_finished_shards(synth_dir, target, tmp_path):
    import shutil
    copy = tmp_path / "synth"
    shutil.copytree(synth_dir, copy)
    first = copy / "shard-00000.safetensors"
    second = copy / "shard-00001.safetensors"
    kept_mtime = first.stat().st_mtime_ns
    from safetensors.torch import load_file
    original = load_file(str(second))
    second.unlink()
    assert [s["index"] for s in finished_shards(copy)] == [0]
    manifest = synthesize(target, char_source(), copy, SMALL, aux_layer_ids=AUX, stop_ids={SPECIAL[ENDOFTEXT]})
    assert [s["index"] for s in manifest["shards"]] == [0, 1]
    assert first.stat().st_mtime_ns == kept_mtime          # skipped
    again = load_file(str(second))                          # regenerated identically (seeded per shard)
    assert again.keys() == original.keys() and all(torch.equal(again[k], original[k]) for k in again)
    with pytest.raises(SystemExit):                         # other settings, same directory
        synthesize(target, char_source(), copy, SynthConfig(**{**SMALL.__dict__, "new_tokens": 5}),
                   aux_layer_ids=AUX, stop_ids={SPECIAL[ENDOFTEXT]})


# ---- COD sampling and the mask ---------------------------------------------------------------------

def test_cod_sampling_statistics():
    L, P, K, r, r_min = 1001, 201, 18, 0.7, 0.2
    valid = supervised_rows(L, P)
    n, n_valid = L - 1, int(valid.sum())
    assert n_valid == 800 and not valid[:P - 1].any() and valid[P - 1:].all()
    anchor, depth = cod_sample(valid, K, r, r_min, torch.Generator().manual_seed(0))
    counts = torch.bincount(depth, minlength=K).tolist()
    assert counts[0] == n and depth.max() == K - 1
    for d in range(1, K):
        expect = int((n_valid - d) * max(r ** d, r_min))
        assert expect - 2 <= counts[d] <= expect, (d, counts[d], expect)
        assert abs(counts[d] / n_valid - max(r ** d, r_min)) < 0.01
    assert all(counts[d] >= counts[d + 1] for d in range(K - 1))
    # depth-major order, anchors inside the sequence, deeper positions valid and inside it
    assert torch.equal(depth, depth.sort(stable=True).values)
    ref = anchor + depth
    assert anchor.min() >= 0 and ref.max() < n and valid[ref[depth > 0]].all()
    # contiguous chains: (a, d) exists only with (a, d-1)
    have = set(zip(anchor.tolist(), depth.tolist()))
    assert all((a, d - 1) in have for a, d in have if d > 0)
    sup = element_supervision(anchor, depth, valid)
    assert sup[depth > 0].all() and torch.equal(sup[:n], valid)


def test_shallow_phase_trains_one_mask_depth_first():
    cfg = TrainConfig(depth=18, shallow_steps=100)
    assert [cfg.depth_at(s) for s in (0, 99, 100, 5000)] == [2, 2, 18, 18]
    assert TrainConfig(depth=18).depth_at(0) == 18          # off by default: every depth from the start
    anchor, depth = cod_sample(torch.ones(50, dtype=torch.bool), cfg.depth_at(0), generator=torch.Generator())
    assert int(depth.max()) == 1                             # depth-0 rows and one MASK depth


def test_cod_sampling_is_seeded_and_respects_short_sequences():
    valid = supervised_rows(12, 5)
    a1 = cod_sample(valid, 18, generator=torch.Generator().manual_seed(1))
    a2 = cod_sample(valid, 18, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))
    anchor, depth = a1
    assert (anchor + depth).max() <= 10 and depth.max() < 7        # 7 valid rows: chains end in the sequence


def test_mask_visible_sets():
    valid = supervised_rows(30, 8)
    anchor, depth = cod_sample(valid, 6, generator=torch.Generator().manual_seed(2))
    mask = group_mask(anchor, depth)
    R = anchor.numel()
    for q in range(R):
        want = {k for k in range(R) if (depth[k] == 0 and anchor[k] <= anchor[q])
                or (anchor[k] == anchor[q] and depth[k] <= depth[q])}
        assert set(torch.nonzero(mask[q]).flatten().tolist()) == want
        assert mask[q, q]


def tiny_sample(seed: int = 0, T: int = 60, P: int = 20) -> Sample:
    g = torch.Generator().manual_seed(seed)
    return Sample(ids=torch.randint(0, V, (T,), generator=g), aux=torch.randn(T, 3 * H, generator=g),
                  final=torch.randn(T, H, generator=g), labels=torch.randint(0, V, (T,), generator=g), prompt_len=P)


def tiny_drafter(target, own_embeddings=True, depth=8, draft_vocab=V):
    from completion.speculative import init_drafter
    from completion.training.drafter_fit import drafter_config_for

    cfg = drafter_config_for(target.config, num_layers=2, draft_vocab_size=draft_vocab, depth=depth,
                             mask_token_id=V - 1, aux_layer_ids=AUX)
    vocab = torch.arange(0, V, V // draft_vocab)[:draft_vocab] if draft_vocab < V else None
    d = init_drafter(cfg, seed=4, std=0.1, own_embeddings=own_embeddings, draft_to_target=vocab, target_model=target)
    d.float().train().requires_grad_(True)
    return d


def test_training_rows_match_inference_drafts(target):
    """A COD-sampled chain (anchor a, depths 0..D) gives, in the training pass, the same outputs as
    the inference pass drafting D+1 tokens after ids[:a+2]."""
    from completion.speculative.cache import DraftCache
    from completion.speculative.layout import parallel_draft_inputs

    drafter = tiny_drafter(target)
    drafter.eval().requires_grad_(False)
    drafter.refresh()
    sample = tiny_sample(1)
    valid = supervised_rows(len(sample.ids), sample.prompt_len)
    anchor, depth = cod_sample(valid, 8, generator=torch.Generator().manual_seed(3))
    a = int(anchor[depth == depth.max()][0])
    D = int(depth.max())
    with torch.no_grad():
        train = peagle_forward(drafter, sample, anchor, depth)
        ids = sample.ids.tolist()
        inputs = parallel_draft_inputs(ids[:a + 1], ids[a + 1], 0, D + 1, drafter.config.mask_token_id)
        hidden = torch.cat([drafter.combine(sample.aux[:a + 1]), drafter.mask_state.expand(D, -1)])
        infer, _ = drafter(inputs.input_ids, hidden, inputs.positions, cache=DraftCache(drafter))
    for d in range(D + 1):
        row = int(torch.nonzero((anchor == a) & (depth == d))[0])
        torch.testing.assert_close(train[row], infer[a + d], atol=1e-5, rtol=1e-5)


# ---- sequence partitioning -------------------------------------------------------------------------

def test_partition_covers_each_element_once_with_its_context():
    valid = supervised_rows(80, 10)
    anchor, depth = cod_sample(valid, 8, generator=torch.Generator().manual_seed(4))
    parts = partition_elements(anchor, depth, 79, 4)
    owned = torch.cat([idx[own] for idx, own in parts]).sort().values
    assert torch.equal(owned, torch.arange(anchor.numel()))
    for idx, own in parts:
        # every element a segment owns finds all it may attend to inside the segment
        mine = set(idx.tolist())
        full = group_mask(anchor, depth)
        for q in idx[own].tolist():
            assert set(torch.nonzero(full[q]).flatten().tolist()) <= mine
        assert (depth[idx[~own]] == 0).all()                # context rows are depth-0 only


@pytest.mark.parametrize("segments,depth_decay", [(2, 0.0), (3, 0.0), (5, 0.0), (3, 0.8)])
def test_partitioned_gradients_equal_single_pass(target, segments, depth_decay):
    cfg = TrainConfig(depth=8, depth_decay=depth_decay)
    sample = tiny_sample(2, T=70, P=15)

    def grads(num_segments):
        drafter = tiny_drafter(target, draft_vocab=128)
        targets = make_targets(target, drafter)
        loss = peagle_sequence_step(drafter, targets, sample, cfg, torch.Generator().manual_seed(7),
                                    segments=num_segments)
        return loss, {n: p.grad.clone() for n, p in drafter.named_parameters() if p.grad is not None}

    loss1, g1 = grads(1)
    lossS, gS = grads(segments)
    assert abs(loss1 - lossS) / abs(loss1) < 1e-6
    assert g1.keys() == gS.keys() and "mask_hidden" in g1 and "embed_tokens.weight" in g1
    num = sum(float((g1[n] - gS[n]).pow(2).sum()) for n in g1) ** 0.5
    den = sum(float(g1[n].pow(2).sum()) for n in g1) ** 0.5
    assert num / den < 1e-5
    for n in g1:
        scale = float(g1[n].norm())
        if scale > 0:
            assert float((g1[n] - gS[n]).norm()) / scale < 1e-5, n


def test_element_weights_count_normalised_or_per_depth():
    depth = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    counted = torch.tensor([True, True, True, False, True, True, True])
    assert torch.allclose(element_weights(depth, counted, 0.0), torch.full((7,), 1 / 6))
    w = element_weights(depth, counted, 0.5)
    # each depth sums to decay^d over its counted elements: the mean KL of depth d, weighted
    assert torch.allclose(torch.stack([w[counted & (depth == d)].sum() for d in range(3)]),
                          torch.tensor([1.0, 0.5, 0.25]))


# ---- EAGLE-3 training-time test --------------------------------------------------------------------

def test_eagle3_unroll_matches_a_recomputed_pass(target):
    """Step 1 of the unrolled pass (reusing step 0's keys/values) equals one pass over both steps'
    rows with the group mask: the training-time test sees what chained drafting sees."""
    drafter = tiny_drafter(target, own_embeddings=False)
    sample = tiny_sample(3, T=30, P=10)
    with torch.no_grad():
        steps = list(eagle3_unroll(drafter, sample, 2))
        _, rows0, _ = steps[0]
        _, sel, normed1 = steps[1]
        # recompute: step-0 rows + step-1 rows, hidden of step 1 = step 0's output state
        from completion.training.peagle_trainer import forward_rows
        n = len(sample.ids) - 1
        h0 = drafter.combine(sample.aux[:n])
        mask0 = rows0[None, :] <= rows0[:, None]
        _, state0 = forward_rows(drafter, sample.ids[1:n + 1], h0, rows0, mask0)
        anchor = torch.cat([rows0, sel])
        depth = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(sel.numel(), dtype=torch.long)])
        tokens = torch.cat([sample.ids[1:n + 1], sample.ids[(sel + 2).clamp_max(n)]])
        hidden = torch.cat([h0, state0[sel]])
        normed, _ = forward_rows(drafter, tokens, hidden, anchor + depth, group_mask(anchor, depth))
    torch.testing.assert_close(normed1, normed[n:], atol=1e-5, rtol=1e-5)


# ---- the trainers ----------------------------------------------------------------------------------

def eval_loss(drafter, targets, dataset, cfg):
    from completion.training.peagle_trainer import eagle3_sequence_step

    total = 0.0
    for i in range(len(dataset)):
        if cfg.method == "peagle":
            total += peagle_sequence_step(drafter, targets, dataset[i], cfg, torch.Generator().manual_seed(i))
        else:
            total += eagle3_sequence_step(drafter, targets, dataset[i], cfg)
    drafter.zero_grad(set_to_none=True)
    return total / len(dataset)


@pytest.mark.parametrize("method", ["peagle", "eagle3"])
def test_trainer_reduces_loss_and_saves_a_loadable_drafter(synth_dir, target, tmp_path, method):
    from completion.speculative import load_drafter
    from completion.training.peagle_trainer import DrafterTrainer, export_drafter

    cfg = TrainConfig(method=method, steps=30, lr=3e-3, warmup=3, depth=6, ttt_steps=3, draft_vocab=256,
                      log_every=10, ckpt_every=1e9)
    ds = SynthDataset(synth_dir)
    drafter = build_drafter(target, ds, cfg, mask_token_id=V - 1)
    assert hasattr(drafter, "embed_tokens") == (method == "peagle")
    trainer = DrafterTrainer(drafter, target, ds, cfg, work=tmp_path / "work", log=tmp_path / "train.log")
    before = eval_loss(drafter, trainer.targets, ds, cfg)
    summary = trainer.run()
    drafter.train().requires_grad_(True)
    after = eval_loss(drafter, trainer.targets, ds, cfg)
    assert after < 0.8 * before, (before, after)
    assert summary["steps"] == 30 and (tmp_path / "work" / "ckpt.pt").exists()
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert any("acc/depth" in line for line in lines)
    assert len(trainer.history[-1]["acc"]) == (6 if method == "peagle" else 3)

    out = export_drafter(drafter.eval(), tmp_path / "drafter")
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["torch_dtype"] == "bfloat16" and cfg_json["eyas_trained_depth"] == (6 if method == "peagle" else 3)
    loaded = load_drafter(str(out), target)
    assert loaded.config.draft_vocab_size == 256 and loaded.config.aux_layer_ids == AUX
    torch.testing.assert_close(loaded.fc.weight, drafter.fc.weight.to(torch.bfloat16).float())

    # `--init`: a new run starts from the saved weights, vocabulary included, and trains on
    from completion.training.peagle_trainer import continue_from
    fresh = build_drafter(target, ds, replace(cfg, seed=1), mask_token_id=V - 2)
    continue_from(fresh, out, target, ds)
    assert fresh.config.mask_token_id == V - 1
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor.to(fresh.state_dict()[name].dtype), msg=name)
    DrafterTrainer(fresh, target, ds, replace(cfg, steps=2), log=None).run()
    with pytest.raises(SystemExit, match="num_hidden_layers"):
        continue_from(build_drafter(target, ds, replace(cfg, num_layers=3), mask_token_id=V - 1), out, target, ds)
    # a drafter with q/k/v biases (the shipped one, warm-started from a Qwen2 layer) continues as one
    biased = export_drafter(build_drafter(target, ds, cfg, mask_token_id=V - 1, attention_bias=True).eval(),
                            tmp_path / "biased")
    continue_from(build_drafter(target, ds, cfg, mask_token_id=V - 1, attention_bias=True), biased, target, ds)
    with pytest.raises(SystemExit, match="attention_bias"):
        continue_from(build_drafter(target, ds, cfg, mask_token_id=V - 1), biased, target, ds)


def test_bf16_autocast_trains_with_float32_master_weights(synth_dir, target):
    from completion.training.peagle_trainer import DrafterTrainer

    cfg = TrainConfig(steps=30, lr=3e-3, warmup=3, depth=6, draft_vocab=256, log_every=10, ckpt_every=1e9,
                      autocast="bf16")
    ds = SynthDataset(synth_dir)
    drafter = build_drafter(target, ds, cfg, mask_token_id=V - 1)
    trainer = DrafterTrainer(drafter, target, ds, cfg, log=None)
    before = eval_loss(drafter, trainer.targets, ds, cfg)
    trainer.run()
    drafter.train().requires_grad_(True)
    after = eval_loss(drafter, trainer.targets, ds, cfg)
    assert after < 0.8 * before, (before, after)
    assert all(p.dtype == torch.float32 for p in trainer.params)
    with pytest.raises(ValueError, match="autocast"):
        TrainConfig(autocast="fp16")


def test_trainer_resumes_from_its_checkpoint(synth_dir, target, tmp_path):
    from completion.training.peagle_trainer import DrafterTrainer

    ds = SynthDataset(synth_dir)
    cfg = TrainConfig(steps=6, warmup=2, depth=4, draft_vocab=128, log_every=3, ckpt_every=1e9)

    def make():
        torch.manual_seed(0)
        d = build_drafter(target, ds, cfg, mask_token_id=V - 1)
        return d, DrafterTrainer(d, target, ds, cfg, work=tmp_path / "w", log=None)

    straight, t1 = make()
    t1.run()
    _, t2 = make()
    t2.run(until=3)                # interrupted at step 3, after its checkpoint
    resumed2, t3 = make()
    t3.restore(tmp_path / "w" / "ckpt.pt")
    assert t3.step == 3
    t3.run()
    for (n, a), (_, b) in zip(straight.state_dict().items(), resumed2.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=n)
    # --resume with another --steps re-plans the cosine's end (not before where the run is)
    _, t4 = make()
    t4.cfg = replace(cfg, steps=9)
    t4.restore(tmp_path / "w" / "ckpt.pt")
    assert t4.cfg.steps == 9 and t4.run()["steps"] == 9
    _, t5 = make()
    t5.cfg = replace(cfg, steps=5)
    with pytest.raises(SystemExit, match="already at step"):
        t5.restore(tmp_path / "w" / "ckpt.pt")


def test_metrics_accuracy_per_depth():
    m = Metrics(3)
    m.add_depth(0, torch.tensor([True, True, False, True]))
    m.add_depth(2, torch.tensor([False]))
    acc = m.acc()
    assert acc[0] == 0.75 and acc[2] == 0.0 and acc[1] != acc[1]      # NaN where nothing was seen


# ---- real-target options: warm start, shared embeddings, held-out acceptance -------------------------

def qwen2_synth(tmp_path_factory):
    """A tiny Qwen2 target (q/k/v biases) whose top aux layer is the input of its last layer."""
    from completion.models.tiny import tiny_model

    model = tiny_model(arch="qwen2", num_layers=4, hidden_size=32, vocab_size=V)
    out = tmp_path_factory.mktemp("synth-qwen2")
    synthesize(model, char_source(), out, SMALL, aux_layer_ids=AUX, stop_ids={SPECIAL[ENDOFTEXT]})
    return model, SynthDataset(out)


def test_last_layer_warm_start_reproduces_the_targets_last_layer(tmp_path_factory):
    """With fc passing the last layer's input through and that layer copied (biases included), the
    drafter's depth-0 rows compute the target's final state: the warm start is the target's own head."""
    model, ds = qwen2_synth(tmp_path_factory)
    cfg = TrainConfig(num_layers=1, draft_vocab=256, warm="last-layer", embeddings="shared", intermediate=48)
    drafter = build_drafter(model, ds, cfg, mask_token_id=V - 1)
    assert not hasattr(drafter, "embed_tokens") and drafter.config.attention_bias
    assert drafter.config.intermediate_size == 48
    full = build_drafter(model, ds, replace(cfg, intermediate=0), mask_token_id=V - 1)
    sample = ds[0]
    n = len(sample.ids) - 1
    zeros = torch.zeros(n, dtype=torch.long)
    normed = peagle_forward(full, sample, torch.arange(n), zeros)
    torch.testing.assert_close(normed, sample.final[:n].float(), atol=0.05, rtol=0.02)
    deeper = build_drafter(model, ds, replace(cfg, intermediate=0, num_layers=2), mask_token_id=V - 1)
    torch.testing.assert_close(peagle_forward(deeper, sample, torch.arange(n), zeros), normed)  # layer 2 adds 0
    pruned = peagle_forward(drafter, sample, torch.arange(n), zeros)   # a narrower MLP: close, not equal
    assert (pruned - sample.final[:n].float()).abs().mean() < (normed - pruned).abs().mean() * 10


def test_heldout_acceptance_is_bounded_and_counts_accepted_runs(synth_dir, target):
    from completion.training.heldout import heldout_acceptance, peagle_runs

    ds = SynthDataset(synth_dir)
    for method in ("peagle", "eagle3"):
        drafter = build_drafter(target, ds, TrainConfig(method=method, depth=6, ttt_steps=6, draft_vocab=256),
                                mask_token_id=V - 1)
        al = heldout_acceptance(drafter, ds, method, ks=(1, 2, 4), limit=4)
        assert 1.0 <= al[1] <= al[2] <= al[4] <= 5.0, al
        # labels the drafter never proposes: nothing is accepted
        never = [replace(ds[i], labels=torch.full_like(ds[i].labels, V - 3)) for i in range(4)]
        assert heldout_acceptance(drafter, never, method, ks=(1, 4)) == {1: 1.0, 4: 1.0}
    # labels equal to the depth-0 guesses: every first draft is accepted (AL at K=1 is 2)
    drafter = build_drafter(target, ds, TrainConfig(depth=6, draft_vocab=256), mask_token_id=V - 1)
    sample = ds[0]
    n = len(sample.ids) - 1
    normed = peagle_forward(drafter, sample, torch.arange(n), torch.zeros(n, dtype=torch.long))
    guesses = drafter.to_target_ids(drafter.logits(normed).argmax(-1))
    agreeing = replace(sample, labels=torch.cat([sample.labels[:1], guesses]))
    assert peagle_runs(drafter, agreeing, 1).float().mean() == 1.0


def test_heldout_acceptance_with_lookup_takes_copied_runs_where_the_context_repeats(synth_dir, target):
    """A sample that repeats a 7-token motif: past the first motif every anchor's context has a
    match whose copied drafts all run (to max(K, LOOKUP_K)), so AL with lookup is exactly that
    plus one, whatever the drafter proposes."""
    from completion.speculative.lookup import LOOKUP_K
    from completion.training.heldout import heldout_acceptance, lookup_runs

    ds = SynthDataset(synth_dir)
    drafter = build_drafter(target, ds, TrainConfig(depth=4, draft_vocab=256), mask_token_id=V - 1)
    sample = ds[0]
    L = len(sample.ids)
    assert L >= 24
    motif = torch.tensor([5, 9, 13, 17, 21, 25, 29]).repeat(L // 7 + 2)
    looping = replace(sample, ids=motif[:L], labels=motif[1:L + 1], prompt_len=12)
    runs = lookup_runs(looping, 4, LOOKUP_K)
    assert runs.numel() == L - 1 - 4 - (12 - 1) + 1 and (runs == LOOKUP_K).all()
    assert heldout_acceptance(drafter, [looping], "peagle", ks=(4,), lookup=True) == {4: 1.0 + LOOKUP_K}
    assert heldout_acceptance(drafter, [looping], "peagle", ks=(4,))[4] < 1.0 + LOOKUP_K
