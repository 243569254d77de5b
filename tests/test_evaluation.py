"""`eyas eval acceptance` and `eyas eval infill` on a tiny random pair, and their metrics on toy cases."""
from __future__ import annotations

import json

import pytest
import torch

from completion.evaluation.acceptance import cut_tokens, function_end, load_humaneval, parses, served
from completion.evaluation.infill import edit_similarity, exact_match, first_line, infill_cases, levenshtein


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A random Qwen3 target (real Qwen3 tokenizer) and two random drafters saved in the vLLM layout:
    a P-EAGLE one (trained depth 18, own embeddings) and an EAGLE-3 one (depth 7)."""
    from transformers import AutoModelForCausalLM

    from completion.speculative import init_drafter, save_drafter
    from completion.training.drafter_fit import drafter_config_for
    from completion.training.synthetic import write_random_target

    root = tmp_path_factory.mktemp("pair")
    target_dir = write_random_target(root / "target", num_layers=4, hidden_size=32)
    target = AutoModelForCausalLM.from_pretrained(target_dir)
    dirs = {}
    for name, depth, own in (("peagle", 18, True), ("eagle3", 7, False)):
        cfg = drafter_config_for(target.config, num_layers=1, draft_vocab_size=512, depth=depth)
        vocab = torch.arange(0, 151936, 151936 // 512)[:512]
        drafter = init_drafter(cfg, seed=1, std=0.2, own_embeddings=own, draft_to_target=vocab, target_model=target)
        dirs[name] = save_drafter(drafter, root / name)
    return target_dir, dirs["peagle"], dirs["eagle3"]


def test_served_is_what_an_editor_shows_after_the_prompt():
    problem = {"prompt": 'def f(x):\n    """Double x."""\n'}
    loop = "    y = x * 2\n" + "    if y:\n        return y\n" * 4 + "    if y"
    shown = served(problem, loop)
    assert shown == "    y = x * 2\n    if y:\n        return y"
    assert parses(problem["prompt"] + shown) and not parses(problem["prompt"] + loop)
    assert served(problem, "    return f(" + "1, " * 20) == ""   # a loop and nothing else: not shown


def test_acceptance_eval_writes_json_and_spec_equals_plain(tiny_pair, tmp_path, capsys):
    from completion.evaluation.acceptance import main

    target_dir, peagle_dir, eagle3_dir = tiny_pair
    out = tmp_path / "acc.json"
    threads = torch.get_num_threads()
    try:
        assert main(["--model", str(target_dir), "--draft", str(peagle_dir), "--eagle3", str(eagle3_dir),
                     "--limit", "2", "--max-tokens", "12", "--peagle-k", "4,10,18", "--eagle3-k", "3,7",
                     "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    modes = [(r["mode"], r["k"]) for r in report["rows"]]
    assert modes == [("plain", None), ("peagle", 4), ("peagle", 10), ("peagle", 18), ("eagle3", 3), ("eagle3", 7)]
    assert report["mismatches"] == 0 and all(r["mismatches"] == 0 for r in report["rows"])
    assert report["prompts"] == 2 and len(report["completions"]) == 2
    rows = {(r["mode"], r["k"]): r for r in report["rows"]}
    assert rows[("peagle", 10)]["seed_acceptance_length"] == 6.66
    assert len(rows[("peagle", 18)]["acceptance_per_pos"]) == 18
    assert all(r["acceptance_length"] >= 1.0 for r in report["rows"])
    assert 0 <= report["parse"]["fraction"] <= 1 and "bars" in report
    assert 0 <= report["parse"]["served_parsed"] + report["parse"]["served_discarded"] <= 2
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "seed AL" in printed and "7.51" in printed and "ast.parse" in printed


def test_infill_eval_writes_json(tiny_pair, tmp_path, capsys):
    """HumanEval lines and the held-out probe at two budgets, for two precisions side by side."""
    from completion.evaluation.infill import main

    target_dir, peagle_dir, _ = tiny_pair
    out = tmp_path / "infill.json"
    threads = torch.get_num_threads()
    try:
        assert main(["--model", str(target_dir), "--draft", str(peagle_dir), "--limit", "1", "--max-tokens", "6",
                     "--held-out", "1", "--prefix-tokens", "128,256", "--precisions", "float32,bf16",
                     "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert [r["precision"] for r in report["results"]] == ["float32", "bf16"]
    for row in report["results"]:
        he = row["humaneval"]
        assert he["cases"] == len(he["records"]) > 0 and he["problems"] == 1 and row["mode"] == "peagle"
        assert 0.0 <= he["exact_match"] <= 1.0 and 0.0 <= he["edit_similarity"] <= 1.0
        assert all("\n" not in r["prediction"] for r in he["records"])
        assert [h["prefix_tokens"] for h in row["held_out"]] == [128, 256]
        assert all(h["cases"] >= 1 and h["p50_ms"] > 0 for h in row["held_out"])
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "held-out EM / ES" in capsys.readouterr().out


def test_line_probe_cuts_real_lines():
    from completion.evaluation.line_probe import probe_cases
    cases = probe_cases(2, seed=1)
    assert cases == probe_cases(2, seed=1)   # the same set every run
    assert len(cases) >= 2 and {c.language for c in cases} <= {"javascript", "c", "python"}
    for c in cases:
        original = c.path.read_text(encoding="utf-8", errors="replace")
        assert c.text[:c.cursor] + c.target + c.text[c.cursor:] == original
        assert len(c.target) >= 4 and "\n" not in c.target


def test_cross_file_cases_and_eval(tiny_pair, tmp_path):
    """Lines that use a sibling module's name, completed through the editor pipeline with and
    without the sibling open."""
    import asyncio

    from completion.engine.torch_engine import TorchEngine
    from completion.evaluation.infill import crossfile_cases, crossfile_eval

    pkg = tmp_path / "toypkg"
    pkg.mkdir()
    (pkg / "shapes.py").write_text("def area(w, h):\n    return w * h\n\n\nclass Box:\n    pass\n")
    (pkg / "main.py").write_text("from .shapes import area, Box\n\n\ndef total(items):\n"
                                 "    box = Box()\n    return sum(area(w, h) for w, h in items)\n")
    cases = crossfile_cases(10, root=tmp_path, packages=("toypkg",))
    assert [(c.path.name, [s.name for s in c.siblings], c.target) for c in cases] == [
        ("main.py", ["shapes.py"], "box = Box()"),
        ("main.py", ["shapes.py"], "return sum(area(w, h) for w, h in items)")]
    assert cases[0].prefix.endswith("def total(items):\n    ") and cases[0].suffix.startswith("\n    return")
    engine = TorchEngine.load(str(tiny_pair[0]), device="cpu")
    result = asyncio.run(crossfile_eval(engine, cases, 6))
    for setting in ("without", "with"):
        assert result[setting]["cases"] == 2 and 0 <= result[setting]["edit_similarity"] <= 1
        assert all("\n" not in r["prediction"] for r in result[setting]["records"])


def test_infill_cases_cut_canonical_solutions():
    problem = {"task_id": "Toy/0", "prompt": "def f(x):\n    \"\"\"Double.\"\"\"\n",
               "canonical_solution": "    y = x * 2\n\n    return y\n"}
    cases = infill_cases([problem])
    assert [c.line_index for c in cases] == [0, 2]                       # blank lines are not cases
    first, second = cases
    assert first.prefix == problem["prompt"] and first.suffix == "\n    return y\n" and first.target == "    y = x * 2"
    assert second.prefix == problem["prompt"] + "    y = x * 2\n\n" and second.suffix == "" \
        and second.target == "    return y"


def test_infill_metrics_on_toy_cases():
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("abc", "abc") == 0
    assert edit_similarity("    return y", "    return y") == 1.0
    assert edit_similarity("    return x", "    return y") == pytest.approx(1 - 1 / 12)
    assert edit_similarity("", "") == 1.0 and edit_similarity("", "abcd") == 0.0
    assert exact_match("    return y  ", "    return y") and not exact_match("return y", "    return y")
    assert first_line("a = 1\nb = 2") == "a = 1" and first_line("abc") == "abc"


def test_function_end_and_parse():
    assert function_end("    return 1\n") is None                     # the body may go on
    assert function_end("    return 1\n\ndef g():\n") == 14           # a column-0 line ends it
    assert function_end("    x = 1\n    return x\nprint(1)") == 23
    assert parses("def f():\n    return 1\n") and not parses("def f():\n    return (\n")


def test_cut_tokens_stops_at_stop_ids_and_function_end(qwen_tokenizer):
    tok = qwen_tokenizer
    ids = tok.encode("    return x\nprint(1)\n", add_special_tokens=False)
    cut, text = cut_tokens(tok, ids, set())
    assert text == "    return x\n" and tok.decode(cut).startswith("    return x\np")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    body = tok.encode("    return x", add_special_tokens=False)
    cut, text = cut_tokens(tok, body + [eot] + body, {eot})
    assert cut == body and text == "    return x"


def test_humaneval_loads_164_problems():
    problems = load_humaneval()
    assert len(problems) == 164 and {"task_id", "prompt", "canonical_solution"} <= set(problems[0])
