"""A held-out line-infill probe: real files nobody here wrote or tuned to, the rest of a line deleted.

Sources (present on any Debian machine with Python, gcc and npm): JavaScript from npm's own
packages, C headers from /usr/include, Python from the interpreter's standard library. Cases are
drawn with a fixed seed, the same number per language: a line with at least 12 characters of code
(no comment-only lines), the cursor at a random column inside it (after its indentation and at
least 2 characters in, at least 4 before its end). The file is opened in the editor's own pipeline
(`Completer`: tree-sitter context within a ContextBudget, FIM prompt, engine, post-processing) with
single-line completions, and the suggestion's first line is compared with the deleted rest:
exact match (trailing whitespace ignored) and edit similarity, as `eyas eval infill` does.

`measure(engine, cases, prefix_tokens, suffix_tokens=...)` runs one budget; `eyas eval infill
--held-out N --prefix-tokens 256,512,1024 --suffix-tokens 32,128` sweeps budgets and reports quality
beside latency.
"""
from __future__ import annotations

import random
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

SOURCES = {   # language id -> (root, glob)
    "javascript": (Path("/usr/lib/node_modules/npm"), "**/*.js"),
    "c": (Path("/usr/include"), "*.h"),
    "python": (Path(sysconfig.get_paths()["stdlib"]), "*.py"),
}
COMMENT_STARTS = ("#", "//", "/*", "*", "*/")
MAX_FILE_BYTES = 200_000


@dataclass
class ProbeCase:
    path: Path
    language: str
    text: str         # the file with the rest of the line deleted
    cursor: int       # character offset of the cursor in `text`
    target: str       # the deleted rest of the line


def source_files(language: str) -> list[Path]:
    root, pattern = SOURCES[language]
    if not root.exists():
        return []
    return sorted(p for p in root.glob(pattern)
                  if p.is_file() and 200 < p.stat().st_size < MAX_FILE_BYTES and "test" not in p.name.lower())


def probe_cases(per_language: int, seed: int = 0) -> list[ProbeCase]:
    rng = random.Random(seed)
    cases = []
    for language in SOURCES:
        files = source_files(language)
        rng.shuffle(files)
        taken = 0
        for path in files:
            if taken == per_language:
                break
            case = cut_line(path, language, rng)
            if case is not None:
                cases.append(case)
                taken += 1
    return cases


def cut_line(path: Path, language: str, rng: random.Random) -> ProbeCase | None:
    """One case from a random eligible line of `path`, or None when it has none."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    eligible = [i for i, line in enumerate(lines)
                if len(line.strip()) >= 12 and not line.strip().startswith(COMMENT_STARTS) and len(line) < 160]
    if not eligible:
        return None
    i = rng.choice(eligible)
    line = lines[i].rstrip("\r\n")
    indent = len(line) - len(line.lstrip())
    if len(line) - 4 <= indent + 2:
        return None
    col = rng.randint(indent + 2, len(line) - 4)
    start = sum(len(l) for l in lines[:i])
    eol = start + len(lines[i].rstrip("\r\n"))
    return ProbeCase(path, language, text[:start + col] + text[eol:], start + col, line[col:])


async def measure(engine, cases: list[ProbeCase], prefix_tokens: int, max_tokens: int = 48,
                  suffix_tokens: int | None = None) -> dict:
    """EM / ES overall and per language, and latency (p50 / p90 ms of a whole request, prefill ms
    and prompt tokens), for one prefix (and suffix) budget. Each case is a fresh document: no KV reuse."""
    from completion.context import ContextBudget, DocumentTrees
    from completion.evaluation.infill import edit_similarity, exact_match, first_line
    from completion.service import Completer, CompletionSettings

    default = CompletionSettings().budget
    if suffix_tokens is None:
        suffix_tokens = default.suffix_tokens
    settings = CompletionSettings(max_tokens=max_tokens, budget=ContextBudget(
        prefix_tokens=prefix_tokens, suffix_tokens=suffix_tokens, snippet_tokens=default.snippet_tokens))
    records, t0 = [], time.perf_counter()
    for n, c in enumerate(cases):
        trees = DocumentTrees()
        uri = c.path.as_uri() + f"#probe{n}"   # a fresh document (and KV cache key) per case
        trees.open(uri, c.language, c.text)
        done = await Completer(engine, trees, settings).complete(uri, c.cursor, repo=c.path.parent.name,
                                                                 multiline_mode="never")
        pred = first_line(done.text)
        records.append({"path": str(c.path), "language": c.language, "target": c.target, "prediction": pred,
                        "exact_match": exact_match(pred, c.target), "edit_similarity": edit_similarity(pred, c.target),
                        "total_ms": done.timings_ms["total"], "prefill_ms": done.timings_ms["prefill"],
                        "prompt_tokens": done.stats.prompt_tokens})
        if (n + 1) % 15 == 0:
            print(f"  prefix {prefix_tokens}: {n + 1}/{len(cases)} ({time.perf_counter() - t0:.0f}s)",
                  file=sys.stderr, flush=True)
    return summary(records, prefix_tokens, suffix_tokens)


def summary(records: list[dict], prefix_tokens: int, suffix_tokens: int) -> dict:
    def rates(rs):
        n = len(rs)
        return {"cases": n, "exact_match": sum(r["exact_match"] for r in rs) / max(n, 1),
                "edit_similarity": sum(r["edit_similarity"] for r in rs) / max(n, 1)}
    totals = sorted(r["total_ms"] for r in records)
    return {"prefix_tokens": prefix_tokens, "suffix_tokens": suffix_tokens, **rates(records),
            "by_language": {lang: rates([r for r in records if r["language"] == lang])
                            for lang in sorted({r["language"] for r in records})},
            "p50_ms": statistics.median(totals) if totals else 0.0,
            "p90_ms": totals[int(0.9 * (len(totals) - 1))] if totals else 0.0,
            "prefill_p50_ms": statistics.median(r["prefill_ms"] for r in records) if records else 0.0,
            "prompt_tokens_p50": statistics.median(r["prompt_tokens"] for r in records) if records else 0,
            "records": records}
