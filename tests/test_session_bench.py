"""`eyas bench session`: the typists' own rules, one typist against a scripted server, and one
short real run."""
import asyncio
import concurrent.futures
import json
import math
import random

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


@pytest.mark.parametrize("suggestion, rest, take", [
    ("x = 1", "x = 1\ny = 2\n", "x = 1"),
    ("x = 1\ny = 3\n", "x = 1\ny = 2\n", "x = 1\n"),   # the first line holds, the rest does not
    ("x = 2", "x = 1\n", ""),
    ("\nz", "\ny\n", ""),                               # an empty first line is no line to take
    ("", "x", ""),
])
def test_acceptable(suggestion, rest, take):
    assert sb.acceptable(suggestion, rest) == take


def test_sessions_are_whole_lines_that_start_after_indentation(tmp_path):
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(30))
    f = SourceFile(tmp_path / "m.py", "python", text)
    (s,) = sb.pick_sessions([f], 1, 40, random.Random(0))
    assert s["typed"].endswith("\n") and not s["typed"][0].isspace()
    assert text[s["start"]:s["start"] + len(s["typed"])] == s["typed"]
    assert text[:s["start"]].endswith(("\n", " "))
    assert sb.position_of("ab\ncd", 4) == sb.t.Position(1, 1)


def test_km_quantile():
    xs = [float(x) for x in range(1, 11)]
    for q in (0.1, 0.5, 0.9):   # no censoring: the ordinary (inverse-CDF) quantile
        assert sb.km_quantile([(x, True) for x in reversed(xs)], q) == xs[math.ceil(q * len(xs)) - 1]
    censored = [(x, x > 3) for x in xs]   # three answers cut off early: they were slower than that
    assert sb.km_quantile(censored, 0.5) > sb.km_quantile([(x, True) for x in xs], 0.5)
    assert sb.km_quantile([(x, False) for x in xs], 0.5) is None
    assert sb.km_quantile([(1.0, True), (2.0, False), (3.0, False)], 0.9) is None   # the curve stops at 2/3
    assert sb.km_quantile([], 0.5) is None


def test_rhythm():
    text = ("x" * 39 + "\n") * 400
    pauses = sb.rhythm(text, random.Random(7))
    assert pauses == sb.rhythm(text, random.Random(7)) != sb.rhythm(text, random.Random(8))
    assert len(pauses) == len(text)
    for ch, (kind, ms) in zip(text, pauses):
        assert (kind == "key") == (ch != "\n")
        low, high = {"key": (0.6 * sb.KEY_MS, 1.4 * sb.KEY_MS), "line": (0.6 * sb.LINE_END_MS, 1.4 * sb.LINE_END_MS),
                     "think": (1500, 3000)}[kind]
        assert low <= ms <= high
    thinks = sum(kind == "think" for kind, _ in pauses)
    assert 0.2 < thinks / text.count("\n") < 0.3


class ScriptedServer:
    """Stands in for BenchClient and its pygls client: answers by cursor column, after a delay."""

    def __init__(self, answers: dict[int, tuple[float, str, str]]):
        self.answers = answers   # column -> (seconds, text, source); else a slow answer nobody wants
        self.lsp = self.protocol = self
        self.futures, self.sent, self.cancelled, self.notes, self.commands = {}, [], [], [], []

    def send_request(self, method, params, msg_id):
        delay, text, source = self.answers.get(params.position.character, (1.0, "zzz", "engine"))
        command = sb.t.Command("", "eyas.accepted", arguments=["u", len(text), source])
        item = sb.t.InlineCompletionItem(text, command=command)
        future = self.futures[msg_id] = concurrent.futures.Future()
        asyncio.get_running_loop().call_later(
            delay, lambda: future.done() or future.set_result(sb.t.InlineCompletionList([item])))
        self.sent.append(params.position.character)
        return future

    def cancel_request(self, params):
        self.cancelled.append(params.id)
        self.futures[params.id].set_exception(RuntimeError("cancelled"))   # as the server answers it

    def notify(self, method, params):
        self.notes.append(method)

    def workspace_execute_command(self, params):
        self.commands.append(params.arguments)

    def edit(self, *args):
        pass

    open = close = edit


def scripted_run(live: bool, tmp_path):
    f = SourceFile(tmp_path / "m.py", "python", "abcdef\n")
    server = ScriptedServer({1: (0.01, "bc", "cache"), 4: (0.01, "ef", "joined")})
    typist = sb.Typist(server, {"file": f, "start": 0, "typed": "abcdef"}, random.Random(0), live, timeout=5)
    asyncio.run(typist.run())
    return typist, server


def test_live_typist_cancels_at_the_next_key_and_accepts_what_it_sees(tmp_path):
    typist, server = scripted_run(True, tmp_path)
    # "a" -> "bc" accepted; the request after it is slow: cancelled at "d"; "d" -> "ef" accepted;
    # the request after that is cancelled when its key interval ends
    assert server.sent == [1, 3, 4, 6] and typist.keys == 2 and typist.accepted_chars == 4
    accepted, after_accept, d, last = typist.requests
    assert [r.source for r in typist.requests] == ["cache", None, "joined", None]
    assert server.cancelled == [after_accept.id, last.id] and after_accept.answered is None
    assert after_accept.cancelled - after_accept.sent == pytest.approx(after_accept.gap, abs=50)
    assert accepted.shown and accepted.in_time and accepted.accepted == "bc" and d.pause == "key"
    assert server.commands == [[typist.uri, 2], [typist.uri, 2]] and server.notes.count("eyas/shown") == 2
    fig = sb.figures([typist], {"generations": 0, "cache": {"hits": 0}}, {"generations": 1, "cache": {"hits": 1}, "model": "m"})
    assert fig["answered_in_time_share"] == 0.5 and fig["cancelled"] == 2 and fig["accepted_share"] == 0.6667
    assert fig["sources"] == {"cache": 1, "engine": 0, "joined": 1, "empty": 0}
    # one fresh answer seen, two cancelled: the survival curve stops at 2/3, so no p50, only "longer than"
    assert fig["fresh_p50_ms"] is None and sb.km_text(fig, "fresh_p50_ms") == f"> {fig['fresh_longest_ms']:.0f} ms"
    assert fig["fresh_observed_ms"] == [pytest.approx(d.answered - d.sent, abs=0.1)]


def test_waiting_typist_awaits_every_answer(tmp_path):
    typist, server = scripted_run(False, tmp_path)
    assert server.cancelled == [] and typist.accepted_chars == 4
    slow = [r for r in typist.requests if r.text == "zzz"]
    assert slow and all(r.answered - r.sent >= 990 and r.shown and not r.in_time for r in slow)


@pytest.mark.timeout(900)
def test_short_live_and_reference_run(tmp_path, capsys):
    """The real server, two tiny sessions per typist: the figures exist and add up."""
    out = tmp_path / "session.json"
    assert sb.main(["--model", "pocket", "--sessions", "2", "--chars", "24", "--max-tokens", "16",
                    "--first-files", "1", "--languages", "python", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for r in (result["live"], result["reference"]):
        assert r["sessions"] == 2 and r["keys"] + r["accepted_chars"] == r["typed_chars"] > 0
        assert r["requests"] == len(r["records"]) >= r["keys"]
        assert r["answered"] + r["cancelled"] == r["requests"]
        assert sum(r["sources"].values()) == r["answered"]
        for name in ("accepted_share", "answered_in_time_share", "line_end_shown_share"):
            assert 0 <= r[name] <= 1
        assert r["line_end_pauses"] >= 2 and r["errors"] == 0
        assert r["model"] == "pocket"
    live = result["live"]
    assert 0 < live["telemetry"]["all"]["all"]["requests"] <= live["requests"]
    assert all((x["answered"] is None) != (x["cancelled"] is None) for x in live["records"])
    assert out.with_suffix(".png").stat().st_size > 1000
    (first,) = live["first_suggestion"]
    assert first["keys"] >= 1 and (first["seconds"] is None or first["seconds"] > 0)
    assert len(open(first["file"]).read().splitlines()) >= sb.BIG_FILE_LINES
    assert result["reference"]["first_suggestion"] == []
    printed = capsys.readouterr().out
    assert "model: pocket" in printed and "waiting typist (reference)" in printed
    assert sum(line.startswith(("[PASS]", "[FAIL]")) for line in printed.splitlines()) == 5


def test_files_come_from_the_held_out_split_and_a_never_counts_as_slow():
    from completion.training.code_sources import language_files
    from completion.training.source_corpus import is_heldout

    files = sb.heldout_files(3, random.Random(0), ["python"])
    pool = [f for f in language_files("python", set())]
    held = {f.file for f in pool if is_heldout(f.key)}
    assert len(files) == 3 and all(f.path in held for f in files) and len(held) < len(pool) / 10
    sessions = sb.spread_sessions(4, 40, random.Random(0), ["python", "c"])
    assert [s["file"].language for s in sessions] == ["python", "c", "python", "c"]
    assert sb.first_p50([{"seconds": 1.0}, {"seconds": None}, {"seconds": 2.0}]) == 2.0
    assert sb.first_p50([{"seconds": None}, {"seconds": None}, {"seconds": 2.0}]) is None
