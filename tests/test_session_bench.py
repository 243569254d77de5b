"""`eyas bench session`: the replay's own rules, and one short real replay per mode."""
import json
import sys
from pathlib import Path

import pytest

from completion.evaluation import session_bench as sb
from completion.evaluation.latency_bench import SourceFile


@pytest.mark.parametrize("suggestion, after, repeats", [
    ("bar(x)", ")\n", False),                         # opens and closes its own: the suffix's ')' stays needed
    ("y)", ")\n", True),                              # the ')' after the cursor already closes it
    ("foo(a))", ")\n", True),
    ("return total\n", "\n    return total\n", True),  # re-types the next line
    ("total += x", "\n    return total\n", False),
    ("name: str", ": str\n", True),
    ("", "\n", False),
])
def test_repeats_suffix(suggestion, after, repeats):
    assert sb.repeats_suffix(suggestion, after) is repeats


def test_sessions_are_whole_lines_that_start_after_indentation(tmp_path):
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(30))
    f = SourceFile(tmp_path / "m.py", "python", text)
    import random
    (s,) = sb.pick_sessions([f], 1, 40, random.Random(0))
    assert s["typed"].endswith("\n") and not s["typed"][0].isspace()
    assert text[s["start"]:s["start"] + len(s["typed"])] == s["typed"]
    assert text[:s["start"]].endswith(("\n", " "))
    assert sb.position_of("ab\ncd", 4) == sb.t.Position(1, 1)


@pytest.mark.timeout(900)
def test_short_replay_before_and_after(tmp_path, capsys):
    """The real server, two tiny sessions per mode: the figures exist and add up."""
    out = tmp_path / "session.json"
    assert sb.main(["--sessions", "2", "--chars", "24", "--max-tokens", "16", "--model", "pocket",
                    "--first-files", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for mode in ("before", "after"):
        r = result[mode]
        assert r["sessions"] == 2 and r["keystrokes"] >= r["typed_chars"] > 0
        assert r["requests"] == len(r["latencies_ms"]) >= r["keystrokes"]
        assert 0 <= r["accepted_share"] <= 1 and 0 < r["telemetry"]["all"]["all"]["requests"] <= r["requests"]
    assert result["before"]["cache_hit_rate"] == 0 and result["before"]["prefetched"] == 0
    assert result["before"]["engine_calls"] == result["before"]["requests"]
    assert out.with_suffix(".png").stat().st_size > 1000
    (first,) = result["after"]["first_suggestion"]
    assert first["keys"] >= 1 and (first["seconds"] is None or first["seconds"] > 0)
    assert len(open(first["file"]).read().splitlines()) >= sb.BIG_FILE_LINES
    assert result["before"]["first_suggestion"] == [] and result["after"]["model"] == "pocket"
    printed = capsys.readouterr().out
    assert "before/after" in printed and "model: pocket" in printed
    assert sum(line.startswith(("[PASS]", "[FAIL]")) for line in printed.splitlines()) == 4


def test_files_come_from_the_held_out_split_and_a_never_counts_as_slow():
    import random

    from completion.training.code_sources import language_files
    from completion.training.source_corpus import is_heldout

    files = sb.heldout_files(3, random.Random(0), ["python"])
    pool = [f for f in language_files("python", set())]
    held = {f.file for f in pool if is_heldout(f.key)}
    assert len(files) == 3 and all(f.path in held for f in files) and len(held) < len(pool) / 10
    assert sb.first_p50([{"seconds": 1.0}, {"seconds": None}, {"seconds": 2.0}]) == 2.0
    assert sb.first_p50([{"seconds": None}, {"seconds": None}, {"seconds": 2.0}]) is None
