"""`eyas bench latency` end to end: a handful of requests through the real server over stdio,
then the JSON and PNG it writes. No timing assertions: this machine's speed is not under test."""
import json

from completion.evaluation import latency_bench
from completion.evaluation.latency_bench import STAGES


def test_bench_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "latency.json"
    rc = latency_bench.main(["--requests", "3", "--files-per-language", "1", "--languages", "python,c",
                             "--max-tokens", "4", "--warmup", "1", "--target-requests", "2", "--trials", "2",
                             "--model", "pocket", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert {"machine", "engine", "config", "files", "summary", "targets", "requests", "png"} <= report.keys()
    assert report["engine"]["device"] == "cpu"
    assert len(report["requests"]) == 3
    assert {f["language"] for f in report["files"]} == {"python", "c"}
    for key in (*STAGES, "context+prompt", "server total", "end-to-end"):
        assert {"p50", "p90", "p99"} <= report["summary"][key].keys()
    assert report["summary"]["end-to-end"]["n"] == 3
    ctx, reuse = report["targets"]["context_prompt"], report["targets"]["prefix_reuse"]
    assert ctx["lines"] > 4000 and isinstance(ctx["met"], bool)
    assert reuse["trials"] == 2 and isinstance(reuse["met"], bool)
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "end-to-end" in printed and "second-keystroke prefill" in printed
