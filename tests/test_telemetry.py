"""Local telemetry: events in SQLite, retention limits, the `eyas stats` summary."""
import json
import sqlite3
import time

from completion import telemetry as tm


def test_events_summarized_per_language_and_engine(tmp_path, capsys):
    db = tmp_path / "t.sqlite"
    t = tm.Telemetry(db)
    for ms, cached in ((100.0, False), (2.0, True), (3.0, True), (120.0, False)):
        t.log("request", language="python", engine="torch", latency_ms=ms, cached=cached)
    t.log("request", language="go", engine="vllm", latency_ms=50.0, cached=False)
    t.log("shown", language="python", engine="torch", length=10)
    t.log("shown", language="python", engine="torch", length=20)
    t.log("accepted", language="python", engine="torch", length=10)
    t.log("partial", language="python", engine="torch", length=4)
    t.log("dismissed", language="go", engine="vllm")
    t.close()
    s = tm.summarize(db)
    py = s["language"]["python"]
    assert py["requests"] == 4 and py["cache_hit_rate"] == 0.5 and py["shown"] == 2
    assert py["acceptance_rate"] == 0.5 and py["accepted_chars"] == 14 and py["partials"] == 1
    assert py["latency_p50_ms"] == 100.0 and py["latency_p90_ms"] == 120.0
    assert s["engine"]["vllm"]["dismissed"] == 1 and s["all"]["all"]["requests"] == 5
    assert tm.main(["--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "python" in out and "vllm" in out and "accept rate" in out
    assert tm.main(["--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["language"]["go"]["requests"] == 1


def test_retention_keeps_the_newest_rows_and_drops_old_ones(tmp_path, monkeypatch):
    db = tmp_path / "t.sqlite"
    monkeypatch.setattr(tm, "PRUNE_EVERY", 10)
    t = tm.Telemetry(db, max_rows=25)
    for i in range(100):
        t.log("shown", length=i)
    t.close()
    lengths = [r[0] for r in sqlite3.connect(db).execute("SELECT length FROM events ORDER BY rowid")]
    assert len(lengths) <= 25 + 10 and lengths[-1] == 99
    con = sqlite3.connect(db)
    con.execute("UPDATE events SET ts = ?", (time.time() - 100 * 86400,))
    con.commit()
    con.close()
    tm.Telemetry(db).close()                       # opening prunes what is older than 90 days
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_off_and_broken_paths_never_fail(tmp_path, monkeypatch):
    monkeypatch.setenv("EYAS_TELEMETRY", "off")
    assert tm.default_path() is None
    t = tm.Telemetry(None)
    t.log("shown", length=1)                       # a no-op
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    broken = tm.Telemetry(blocker / "t.sqlite")
    broken.log("shown", length=1)
    assert broken.error is not None
    monkeypatch.delenv("EYAS_TELEMETRY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert tm.default_path() == tmp_path / "eyas" / "telemetry.sqlite"
    assert tm.main(["--db", str(tmp_path / "missing.sqlite")]) == 1


def test_eyas_stats_command(tmp_path, capsys):
    from completion.cli import main
    db = tmp_path / "t.sqlite"
    t = tm.Telemetry(db)
    t.log("request", language="rust", engine="torch", latency_ms=5.0, cached=False)
    t.close()
    assert main(["stats", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["language"]["rust"]["requests"] == 1
