"""`eyas bench spec --quick` and the drafter-fit CLI run end to end on tiny models."""
from __future__ import annotations

import json

import torch


def test_spec_bench_quick_writes_json_and_png(tmp_path, capsys):
    from completion.evaluation.spec_bench import main

    threads = torch.get_num_threads()
    try:
        rc = main(["--quick", "--prompts", "1", "--max-tokens", "12", "--out", str(tmp_path / "spec.json"),
                   "--work", str(tmp_path / "pair")])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    report = json.loads((tmp_path / "spec.json").read_text())
    rows = {(r["mode"], r["k"]): r for r in report["rows"]}
    assert {("plain", None), ("eagle3", 3), ("eagle3", 5), ("eagle3", 7), ("peagle", 4), ("peagle", 10)} <= set(rows)
    assert report["skipped"] == ["peagle K=18"]             # the quick drafter is trained to depth 10
    assert all(r["same_output_as_plain"] for r in report["rows"])
    assert rows[("plain", None)]["ratio_to_plain"] == 1.0
    assert rows[("peagle", 4)]["overhead_share_of_plain_step"] > 0
    assert (tmp_path / "spec.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "P-EAGLE K=4 step overhead" in out and "x plain" in out


def test_drafter_fit_cli_writes_a_loadable_drafter(tmp_path):
    from transformers import AutoModelForCausalLM

    from completion.speculative import load_drafter
    from completion.training.drafter_fit import main
    from completion.training.synthetic import write_random_target

    target_dir = write_random_target(tmp_path / "target", num_layers=4, hidden_size=64, vocab_size=151936)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["--target", str(target_dir), "--out", str(tmp_path / "draft"), "--steps", "5", "--prompts", "2",
                     "--new-tokens", "8", "--prompt-tokens", "16", "--depth", "4", "--draft-vocab", "64"]) == 0
    finally:
        torch.set_num_threads(threads)
    drafter = load_drafter(str(tmp_path / "draft"), AutoModelForCausalLM.from_pretrained(target_dir))
    assert drafter.config.trained_depth == 4 and drafter.config.draft_vocab_size == 64
    assert drafter.config.aux_layer_ids == (1, 2, 3)          # (2, L//2, L-3) would repeat layer 2
