"""`eyas eval infill`: single-line fill-in-the-middle on HumanEval's canonical solutions.

Every non-blank line of every canonical solution is one case: the cursor sits at the start of that
line, prefix = the prompt + the solution's lines before it, suffix = the lines after it, and the
expected completion is the line itself (its indentation included). The prompt is the editor's:
`completion.prompt.PromptBuilder` with the target's tokenizer; generation is greedy and stops at
the first newline (or a stop token). Metrics over all cases: exact match (trailing whitespace
ignored) and edit similarity 1 - Levenshtein(pred, line) / max(len(pred), len(line)).

    eyas eval infill [--model NAME|DIR] [--precisions float32,bf16,int8,int4] [--limit N]
                     [--held-out 15] [--prefix-tokens 256,512,1024] [--suffix-tokens 32,128]
                     [--draft DIR] [--cross-file N]
                     [--out out/eval/infill.json]

Beside HumanEval, `--held-out N` runs the held-out line probe (completion/evaluation/line_probe.py:
N lines per language of real JavaScript, C and Python files, through the editor's pipeline) at each
`--prefix-tokens` budget, with its latency. Each precision gets its own engine over the same cases;
the table puts them side by side (JSON, and a PNG of the budget curve when several are swept).
With --draft the engine decodes with P-EAGLE (the output is the plain greedy output either way).

Cross-file context (`--cross-file N`, 0 to skip): N lines cut from multi-module packages of this
machine's Python that the pocket model never trained on (the system interpreter's site-packages),
each line using a name that a sibling module defines. Each is completed through the editor's own
pipeline (`Completer`: tree-sitter context, definitions and recent chunks, FIM prompt) twice: with
only the file open, and with its package's sibling modules open too. Same metrics, side by side.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from completion.evaluation import line_probe
from completion.evaluation.acceptance import load_humaneval, log


@dataclass
class InfillCase:
    task_id: str
    line_index: int
    prefix: str
    suffix: str
    target: str       # the line, without its newline


def infill_cases(problems: list[dict]) -> list[InfillCase]:
    cases = []
    for p in problems:
        lines = p["canonical_solution"].splitlines(keepends=True)
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            cases.append(InfillCase(p["task_id"], i, p["prompt"] + "".join(lines[:i]), "".join(lines[i + 1:]),
                                    line.rstrip("\r\n")))
    return cases


CROSS_FILE_PACKAGES = ("werkzeug", "flask", "traitlets", "jinja2", "click", "markupsafe", "itsdangerous",
                       "requests", "urllib3", "idna", "cffi", "docutils", "babel")
_TOP_NAME = re.compile(r"^(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.M)


@dataclass
class CrossFileCase:
    path: Path
    siblings: list[Path]    # modules of the same package that define a name the line uses
    prefix: str
    suffix: str
    target: str


def crossfile_cases(limit: int, per_file: int = 4, root: Path | None = None,
                    packages: tuple[str, ...] = CROSS_FILE_PACKAGES) -> list[CrossFileCase]:
    """Lines that use a name defined in a sibling module (and not in their own file)."""
    import sysconfig
    root = root or Path(sysconfig.get_paths()["stdlib"]) / "site-packages"
    cases: list[CrossFileCase] = []
    for package in packages:
        modules = sorted(p for p in (root / package).rglob("*.py") if "tests" not in p.parts)
        texts = {p: p.read_text(encoding="utf-8", errors="replace") for p in modules if p.stat().st_size < 200_000}
        defined = {p: set(_TOP_NAME.findall(t)) for p, t in texts.items()}
        for path, text in texts.items():
            others = {n: q for q in texts if q.parent == path.parent and q != path for n in defined[q]}
            lines, found = text.splitlines(keepends=True), 0
            for i, line in enumerate(lines):
                body = line.strip()
                if not body or body.startswith(("#", "def ", "class ", "@", "import ", "from ", '"', "'")) \
                        or len(body) > 100:
                    continue
                used = [others[w] for w in re.findall(r"[A-Za-z_]\w*", body) if w in others and w not in defined[path]]
                if not used:
                    continue
                indent = line[:len(line) - len(line.lstrip())]
                cases.append(CrossFileCase(path, sorted(set(used)), "".join(lines[:i]) + indent,
                                           "\n" + "".join(lines[i + 1:]), body))
                found += 1
                if found == per_file or len(cases) == limit:
                    break
            if len(cases) == limit:
                return cases
    return cases


async def crossfile_eval(engine, cases: list[CrossFileCase], max_tokens: int) -> dict:
    """EM / ES of the editor pipeline without and with the sibling modules open."""
    from completion.context import DocumentTrees
    from completion.service import Completer, CompletionSettings

    results = {}
    for setting in ("without", "with"):
        records, t0 = [], time.perf_counter()
        for n, c in enumerate(cases):
            trees = DocumentTrees(workspace_roots=[c.path.parent.parent.as_uri()])
            if setting == "with":
                for sibling in c.siblings[:6]:
                    trees.open(sibling.as_uri(), "python", sibling.read_text(encoding="utf-8", errors="replace"))
            uri = c.path.as_uri()
            trees.open(uri, "python", c.prefix + c.suffix)
            completer = Completer(engine, trees, CompletionSettings(max_tokens=max_tokens))
            done = await completer.complete(uri, len(c.prefix), repo=c.path.parent.name, multiline_mode="never")
            pred = first_line(done.text)
            records.append({"path": str(c.path), "target": c.target, "prediction": pred,
                            "exact_match": exact_match(pred, c.target),
                            "edit_similarity": edit_similarity(pred, c.target)})
        s = summarize([{**r, "task_id": r["path"]} for r in records])
        log(f"  cross-file {setting} context: EM {s['exact_match']:.3f} ES {s['edit_similarity']:.3f} "
            f"({time.perf_counter() - t0:.0f}s)")
        results[setting] = {**s, "records": records}
    return results


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(pred: str, target: str) -> float:
    pred, target = pred.rstrip(), target.rstrip()
    longest = max(len(pred), len(target))
    return 1.0 if longest == 0 else 1.0 - levenshtein(pred, target) / longest


def exact_match(pred: str, target: str) -> bool:
    return pred.rstrip() == target.rstrip()


def first_line(text: str) -> str:
    nl = text.find("\n")
    return text if nl < 0 else text[:nl]


async def complete_line(engine, prompt_ids: list[int], stop_ids: list[int], max_tokens: int, tokenizer,
                        mode: str, key: str) -> tuple[str, object]:
    from completion.engine.base import GenerationParams

    params = GenerationParams(max_tokens=max_tokens, stop_ids=stop_ids, mode=mode, cache_key=key)
    ids, stats = [], None
    gen = engine.generate(prompt_ids, params)
    try:
        async for chunk in gen:
            ids += chunk.token_ids
            stats = chunk.stats
            if "\n" in tokenizer.decode(ids, skip_special_tokens=False):
                break
    finally:
        await gen.aclose()
    return first_line(tokenizer.decode(ids, skip_special_tokens=False)), stats


def summarize(records: list[dict]) -> dict:
    n = len(records)
    return {"cases": n,
            "exact_match": sum(r["exact_match"] for r in records) / n if n else 0.0,
            "edit_similarity": sum(r["edit_similarity"] for r in records) / n if n else 0.0,
            "problems": len({r["task_id"] for r in records})}


def main(argv: list[str] | None = None) -> int:
    from completion.models import DEFAULT_MODEL

    ap = argparse.ArgumentParser(prog="eyas eval infill", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name, directory or .gguf file")
    ap.add_argument("--draft", default="", help="P-EAGLE drafter (directory, or 'embedded' with --model pocket; "
                                                "default: plain decoding)")
    ap.add_argument("--precisions", default="auto",
                    help="comma-separated: auto, float32, bf16, int8, int4 (one engine each, same cases)")
    ap.add_argument("--limit", type=int, default=0, help="first N HumanEval problems only (0: all 164; -1: none)")
    ap.add_argument("--held-out", type=int, default=15, metavar="N",
                    help="held-out probe: N cases per language from real JS / C / Python files (0: skip)")
    ap.add_argument("--prefix-tokens", default="1024",
                    help="held-out probe: comma-separated prefix budgets to sweep (e.g. 256,512,1024)")
    ap.add_argument("--suffix-tokens", default="",
                    help="held-out probe: comma-separated suffix budgets to sweep (default: the editor's)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--k", type=int, default=None, help="speculative tokens per step (default: the drafter's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--humaneval", default=None)
    ap.add_argument("--cross-file", type=int, default=0, metavar="N",
                    help="also N cross-file cases, with and without sibling modules open")
    ap.add_argument("--out", default="out/eval/infill.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from completion.engine.torch_engine import TorchEngine

    problems = load_humaneval(args.humaneval, args.limit) if args.limit >= 0 else []
    cases = infill_cases(problems)
    suffixes = [int(b) for b in args.suffix_tokens.split(",")] if args.suffix_tokens else [None]
    budgets = [(int(p), s) for p in args.prefix_tokens.split(",") for s in suffixes]
    probe = line_probe.probe_cases(args.held_out) if args.held_out else []
    log(f"{len(cases)} HumanEval lines from {len(problems)} problems; {len(probe)} held-out lines; "
        f"budgets {budgets}")
    results = []
    for precision in args.precisions.split(","):
        engine = TorchEngine.load(args.model, device="cpu", precision=precision, draft=args.draft or None)
        mode = "peagle" if engine.drafter is not None else "plain"
        row = {"model": args.model, "precision": engine.info.precision, "impl": engine.info.impl, "mode": mode}
        if cases:
            log(f"{engine.info.precision}: HumanEval lines ({mode})")
            records = asyncio.run(humaneval_lines(engine, cases, args.max_tokens, mode))
            row["humaneval"] = {**summarize(records), "records": records}
        row["held_out"] = [asyncio.run(line_probe.measure(engine, probe, p, args.max_tokens, s)) for p, s in budgets] \
            if probe else []
        if args.cross_file:
            xcases = crossfile_cases(args.cross_file)
            log(f"{len(xcases)} cross-file cases from {len({c.path for c in xcases})} files")
            row["cross_file"] = asyncio.run(crossfile_eval(engine, xcases, args.max_tokens))
        results.append(row)
        asyncio.run(engine.close())
        del engine
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "draft": args.draft, "max_tokens": args.max_tokens,
                               "threads": args.threads, "results": results}, indent=1) + "\n")
    if probe and len({p for p, _ in budgets}) > 1 and len(suffixes) == 1:
        write_budget_png(out.with_suffix(".png"), results)
    print(f"wrote {out}")
    return 0


async def humaneval_lines(engine, cases: list[InfillCase], max_tokens: int, mode: str) -> list[dict]:
    from completion.prompt import PromptBuilder

    tokenizer = engine.tokenizer()
    builder = PromptBuilder(tokenizer)
    records, t0 = [], time.perf_counter()
    for n, c in enumerate(cases):
        prompt = builder.build(repo="human-eval", path=c.task_id.replace("/", "_") + ".py", prefix=c.prefix,
                               suffix=c.suffix)
        pred, stats = await complete_line(engine, prompt.ids, prompt.stop_ids, max_tokens, tokenizer, mode,
                                          f"infill-{c.task_id}")
        records.append({"task_id": c.task_id, "line": c.line_index, "target": c.target, "prediction": pred,
                        "exact_match": exact_match(pred, c.target),
                        "edit_similarity": edit_similarity(pred, c.target),
                        "generated": stats.generated_tokens if stats else 0,
                        "acceptance_length": stats.acceptance_length if stats else 0.0})
        if (n + 1) % 100 == 0 or n + 1 == len(cases):
            s = summarize(records)
            log(f"  {n + 1}/{len(cases)} EM {s['exact_match']:.3f} ES {s['edit_similarity']:.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
    return records


def print_table(results: list[dict]) -> None:
    """One row per precision (and held-out budget): exact match and edit similarity side by side."""
    print(f"\n{'model':<22}{'precision':<10}{'HumanEval lines EM / ES':>25}{'budget p/s':>10}"
          f"{'held-out EM / ES':>20}{'p50 ms':>9}{'prompt tok':>11}")
    for row in results:
        he = row.get("humaneval")
        he_text = f"{100 * he['exact_match']:5.1f}% / {100 * he['edit_similarity']:5.1f}%" if he else "-"
        held = row["held_out"] or [None]
        for i, h in enumerate(held):
            left = f"{row['model'][:21]:<22}{row['precision']:<10}{he_text:>25}" if i == 0 else " " * 57
            if h is None:
                print(left)
                continue
            budget = f"{h['prefix_tokens']}/{h['suffix_tokens']}"
            print(f"{left}{budget:>10}{100 * h['exact_match']:>9.1f}% / {100 * h['edit_similarity']:5.1f}%"
                  f"{h['p50_ms']:>9.0f}{h['prompt_tokens_p50']:>11.0f}")
    for row in results:
        if row.get("cross_file"):
            c = row["cross_file"]
            print(f"cross-file ({row['precision']}): without siblings EM {100 * c['without']['exact_match']:.1f}% "
                  f"ES {100 * c['without']['edit_similarity']:.1f}%, with EM {100 * c['with']['exact_match']:.1f}% "
                  f"ES {100 * c['with']['edit_similarity']:.1f}%")


def write_budget_png(path: Path, results: list[dict]) -> None:
    """Held-out exact match and edit similarity against the prefix budget, one pair of lines per
    precision, with the median request latency written at each point."""
    from completion.evaluation.latency_bench import Canvas

    colors = [(40, 110, 200), (200, 60, 40), (40, 160, 60), (200, 40, 160)]
    c = Canvas(760, 420)
    left, right, top, bottom = 70, 700, 40, 370
    budgets = [h["prefix_tokens"] for h in results[0]["held_out"]]
    lo, hi = min(budgets), max(budgets)
    x_of = lambda b: round(left + (b - lo) / max(hi - lo, 1) * (right - left))   # noqa: E731
    y_of = lambda v: round(bottom - v * (bottom - top))                         # noqa: E731
    c.text(left, 10, "HELD-OUT LINES: EM (THIN) AND ES (THICK) VS PREFIX TOKENS; P50 MS AT POINTS")
    for q in (0, 0.25, 0.5, 0.75, 1):
        c.line(left, y_of(q), right, y_of(q), (225, 225, 225))
        c.text(left - 45, y_of(q) - 5, f"{q * 100:.0f}%")
    for b in budgets:
        c.text(x_of(b) - 12, bottom + 12, str(b))
    for color, row in zip(colors, results):
        points = row["held_out"]
        for key, size in (("exact_match", 1), ("edit_similarity", 3)):
            for a, b in zip(points, points[1:]):
                c.line(x_of(a["prefix_tokens"]), y_of(a[key]), x_of(b["prefix_tokens"]), y_of(b[key]), color, size)
        for h in points:
            c.text(x_of(h["prefix_tokens"]) + 4, y_of(h["edit_similarity"]) - 14, f"{h['p50_ms']:.0f}", color)
        c.text(right - 60, y_of(points[-1]["edit_similarity"]) + 4, row["precision"], color)
    c.save(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
