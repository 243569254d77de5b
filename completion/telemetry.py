"""Local-only telemetry: what was requested, shown and accepted, in one SQLite file on this machine.

Nothing leaves the machine. The file lives at `$EYAS_TELEMETRY` (a path, or `off` to keep nothing),
else `$XDG_STATE_HOME/eyas/telemetry.sqlite` (`~/.local/state/...`). Retention: rows older than
`MAX_AGE_DAYS` and all but the newest `MAX_ROWS` are deleted. `eyas stats` reads it.

Kinds: `request` (one answered completion request: latency, whether the cache answered), `shown`,
`accepted`, `partial` (length = characters taken) and `dismissed`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import statistics
import time
from pathlib import Path

MAX_ROWS = 200_000
MAX_AGE_DAYS = 90
PRUNE_EVERY = 1000
KINDS = ("request", "shown", "accepted", "partial", "dismissed")
SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    ts REAL NOT NULL, kind TEXT NOT NULL, language TEXT, engine TEXT,
    length INTEGER, latency_ms REAL, cached INTEGER)"""


def default_path() -> Path | None:
    value = os.environ.get("EYAS_TELEMETRY")
    if value:
        return None if value.lower() == "off" else Path(value)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "eyas" / "telemetry.sqlite"


class Telemetry:
    """Appends events; every failure is logged once and turns telemetry off, never the server."""

    def __init__(self, path: Path | None, max_rows: int = MAX_ROWS, max_age_days: float = MAX_AGE_DAYS):
        self.path, self.max_rows, self.max_age_s = path, max_rows, max_age_days * 86400
        self.error: str | None = None
        self._db: sqlite3.Connection | None = None
        self._since_prune = 0
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(SCHEMA)
                self.prune()
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc)

    def log(self, kind: str, *, language: str | None = None, engine: str | None = None,
            length: int | None = None, latency_ms: float | None = None, cached: bool | None = None) -> None:
        if self._db is None:
            return
        try:
            self._db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (time.time(), kind, language, engine, length, latency_ms,
                              None if cached is None else int(cached)))
            self._since_prune += 1
            if self._since_prune >= PRUNE_EVERY:
                self.prune()
        except sqlite3.Error as exc:
            self._fail(exc)

    def prune(self) -> None:
        self._since_prune = 0
        self._db.execute("DELETE FROM events WHERE ts < ?", (time.time() - self.max_age_s,))
        self._db.execute("DELETE FROM events WHERE rowid <= (SELECT rowid FROM events ORDER BY rowid DESC "
                         "LIMIT 1 OFFSET ?)", (self.max_rows,))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _fail(self, exc: Exception) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        logging.getLogger("eyas").warning("telemetry off (%s): %s", self.path, self.error)
        self.close()


# -- eyas stats --------------------------------------------------------------------------------
def summarize(path: Path) -> dict:
    """Acceptance and latency per language and per engine (and overall)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = db.execute("SELECT kind, language, engine, length, latency_ms, cached FROM events").fetchall()
    db.close()
    groups: dict[str, dict[str, list]] = {"all": {}, "language": {}, "engine": {}}
    for row in rows:
        for by, key in (("all", "all"), ("language", row[1] or "?"), ("engine", row[2] or "?")):
            groups[by].setdefault(key, []).append(row)
    return {by: {key: _figures(rs) for key, rs in sorted(found.items())} for by, found in groups.items()}


def _figures(rows: list[tuple]) -> dict:
    count = {k: 0 for k in KINDS}
    chars = {"shown": 0, "accepted": 0, "partial": 0}
    latencies, cached = [], 0
    for kind, _lang, _engine, length, latency, was_cached in rows:
        count[kind] = count.get(kind, 0) + 1
        if kind in chars and length:
            chars[kind] += length
        if kind == "request" and latency is not None:
            latencies.append(latency)
            cached += bool(was_cached)
    latencies.sort()
    pct = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None  # noqa: E731
    return {"requests": count["request"], "shown": count["shown"], "accepted": count["accepted"],
            "partials": count["partial"], "dismissed": count["dismissed"],
            "acceptance_rate": round(count["accepted"] / count["shown"], 3) if count["shown"] else None,
            "accepted_chars": chars["accepted"] + chars["partial"], "shown_chars": chars["shown"],
            "cache_hit_rate": round(cached / count["request"], 3) if count["request"] else None,
            "latency_p50_ms": pct(0.5), "latency_p90_ms": pct(0.9),
            "latency_mean_ms": round(statistics.fmean(latencies), 1) if latencies else None}


def format_summary(summary: dict) -> str:
    cols = ("requests", "cache_hit_rate", "shown", "accepted", "partials", "acceptance_rate",
            "accepted_chars", "latency_p50_ms", "latency_p90_ms")
    heads = ("requests", "cache hits", "shown", "accepted", "partial", "accept rate", "accepted chars",
             "p50 ms", "p90 ms")
    lines = []
    for by in ("all", "language", "engine"):
        lines.append(f"{'by ' + by if by != 'all' else 'overall':<14}" + "".join(f"{h:>15}" for h in heads))
        for key, fig in summary[by].items():
            cells = [fig.get(c) for c in cols]
            lines.append(f"{key:<14}" + "".join(f"{'-' if v is None else v:>15}" for v in cells))
        lines.append("")
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eyas stats", description="acceptance and latency from the local telemetry")
    p.add_argument("--db", type=Path, default=None, help="telemetry file (default: $EYAS_TELEMETRY or the XDG state dir)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    path = args.db or default_path()
    if path is None or not path.exists():
        print(f"no telemetry yet at {path}" if path else "telemetry is off (EYAS_TELEMETRY=off)")
        return 1
    summary = summarize(path)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0
