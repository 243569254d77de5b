"""`eyas eval infill`: single-line fill-in-the-middle on HumanEval's canonical solutions.

Every non-blank line of every canonical solution is one case: the cursor sits at the start of that
line, prefix = the prompt + the solution's lines before it, suffix = the lines after it, and the
expected completion is the line itself (its indentation included). The prompt is the editor's:
`completion.prompt.PromptBuilder` with the target's tokenizer; generation is greedy and stops at
the first newline (or a stop token). Metrics over all cases: exact match (trailing whitespace
ignored) and edit similarity 1 - Levenshtein(pred, line) / max(len(pred), len(line)).

    eyas eval infill [--model DIR] [--draft DIR] [--limit N] [--max-tokens 48] [--cross-file 200]
                     [--out out/eval/infill.json]

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

from completion.evaluation.acceptance import DEFAULT_DRAFT, DEFAULT_TARGET, load_humaneval, log


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
    ap = argparse.ArgumentParser(prog="eyas eval infill", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_TARGET), help="target model directory")
    ap.add_argument("--draft", default=str(DEFAULT_DRAFT), help="P-EAGLE drafter ('' for plain decoding)")
    ap.add_argument("--limit", type=int, default=0, help="first N problems only (0: all 164)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--k", type=int, default=None, help="speculative tokens per step (default: the drafter's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--humaneval", default=None)
    ap.add_argument("--cross-file", type=int, default=200, metavar="N",
                    help="also N cross-file cases, with and without sibling modules open (0: skip)")
    ap.add_argument("--out", default="out/eval/infill.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from completion.engine.torch_engine import TorchEngine
    from completion.prompt import PromptBuilder

    problems = load_humaneval(args.humaneval, args.limit)
    draft = args.draft if args.draft and Path(args.draft).exists() else None
    if args.draft and draft is None:
        log(f"note: no drafter at {args.draft}: plain decoding")
    engine = TorchEngine.load(args.model, device="cpu", precision="float32", draft=draft)
    tokenizer = engine.tokenizer()
    builder = PromptBuilder(tokenizer)
    cases = infill_cases(problems)
    mode = "peagle" if draft else "plain"
    log(f"{len(cases)} line cases from {len(problems)} problems ({mode})")

    async def run_all() -> list[dict]:
        records, t0 = [], time.perf_counter()
        for n, c in enumerate(cases):
            prompt = builder.build(repo="human-eval", path=c.task_id.replace("/", "_") + ".py", prefix=c.prefix,
                                   suffix=c.suffix)
            pred, stats = await complete_line(engine, prompt.ids, prompt.stop_ids, args.max_tokens, tokenizer, mode,
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

    records = asyncio.run(run_all())
    summary = summarize(records)
    cross = {}
    if args.cross_file:
        xcases = crossfile_cases(args.cross_file)
        log(f"{len(xcases)} cross-file cases from {len({c.path for c in xcases})} files")
        cross = asyncio.run(crossfile_eval(engine, xcases, args.max_tokens))
    print(f"\ninfill on HumanEval canonical solutions: {summary['cases']} lines from {summary['problems']} problems")
    print(f"exact match {100 * summary['exact_match']:.1f}%   edit similarity {100 * summary['edit_similarity']:.1f}%")
    if cross:
        print(f"\ncross-file lines ({cross['with']['cases']} from {cross['with']['problems']} files), editor pipeline:")
        print(f"{'':24}{'exact match':>14}{'edit similarity':>18}")
        for setting in ("without", "with"):
            r = cross[setting]
            print(f"{setting + ' sibling modules':24}{100 * r['exact_match']:>13.1f}%{100 * r['edit_similarity']:>17.1f}%")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target": args.model, "draft": draft, "max_tokens": args.max_tokens, **summary,
                               "records": records, "cross_file": cross}, indent=1) + "\n")
    print(f"wrote {out}")
    asyncio.run(engine.close())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
