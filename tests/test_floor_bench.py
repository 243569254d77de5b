"""`eyas bench floor`: the active-bytes arithmetic against real models' parameters, and a run."""
import json

import torch

from completion.evaluation.floor_bench import active_bytes, build_target, main


def test_active_bytes_count_every_weight_a_step_reads():
    for shape in ("pocket", "tiny-moe"):
        model = build_target(shape, "cpu", torch.float32)
        cfg = model.config
        total = sum(p.numel() for p in model.parameters())
        unread = cfg.vocab_size * cfg.hidden_size - cfg.hidden_size      # the embedding table but one row
        if getattr(cfg, "num_experts", 0):                               # experts not routed to, per layer
            unread += cfg.num_hidden_layers * (cfg.num_experts - cfg.num_experts_per_tok) * 3 \
                * cfg.moe_intermediate_size * cfg.hidden_size
        assert active_bytes(cfg, 4) == (total - unread) * 4
        assert active_bytes(cfg, 2) * 2 == active_bytes(cfg, 4)


def test_floor_bench_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "floor.json"
    threads = torch.get_num_threads()
    try:
        assert main(["--shape", "tiny-moe", "--device", "cpu", "--prompt", "48", "--tokens", "12",
                     "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    row = json.loads(out.read_text())
    assert row["floor_ms"] > 0 and row["bandwidth_gbs"] > 0 and row["active_weight_bytes"] > row["kv_bytes"] > 0
    eager = row["eager"]
    assert eager["plain_ms_per_token"] > 0 and eager["x_floor"] > 0 and eager["peagle_acceptance_length"] >= 1
    assert eager["step_cost_in_plain_steps"] > 0
    printed = capsys.readouterr().out
    assert "floor" in printed and "bar (plain within 2x of the floor)" in printed
