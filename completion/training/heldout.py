"""Acceptance length on held-out drafter data, as training goes (no engine, no target forward).

In the generated region of a held-out sample every token is the target's greedy choice, so at an
anchor row a (the last accepted position, its bonus token x[a+1] in hand) greedy verification
accepts the drafts for positions a+2, a+3, ... for as long as each equals the stored label there.
Drafting at every anchor at once, teacher-forced, therefore gives each anchor's accepted run
exactly: P-EAGLE's K drafts are the elements (a, 0..K-1) of one parallel-group forward;
EAGLE-3's are its unrolled steps, fed the true tokens, which are its own drafts while the run
lasts. AL(K) = 1 + mean over anchors of min(run, K), over anchors with K positions after them.

With `lookup`, as the default decoding (mode "peagle+lookup") drafts: where the context up to the
bonus token repeats its last tokens (speculative/lookup.py), the copied drafts' run, up to
max(K, LOOKUP_K); elsewhere the drafter's.
"""
from __future__ import annotations

import torch

from completion.speculative.drafter import Drafter
from completion.speculative.lookup import LOOKUP_K, lookup_drafts

from .peagle_trainer import eagle3_unroll, peagle_forward, supervised_rows


def _runs(hits: torch.Tensor) -> torch.Tensor:
    """[anchors, K] bool -> accepted run per anchor (leading hits)."""
    return hits.long().cumprod(dim=1).sum(dim=1)


def anchors_of(sample, depth: int) -> torch.Tensor:
    """The rows whose drafts are scored: generated positions with `depth` labels after them."""
    n = len(sample.ids) - 1
    anchors = torch.nonzero(supervised_rows(n + 1, sample.prompt_len)).flatten()
    return anchors[anchors <= n - depth]


def peagle_runs(drafter: Drafter, sample, depth: int) -> torch.Tensor:
    n = len(sample.ids) - 1
    anchors = anchors_of(sample, depth)
    if anchors.numel() == 0:
        return anchors
    anchor = torch.cat([torch.arange(n)] + [anchors] * (depth - 1))
    depths = torch.cat([torch.zeros(n, dtype=torch.long)] +
                       [torch.full((anchors.numel(),), d, dtype=torch.long) for d in range(1, depth)])
    normed = peagle_forward(drafter, sample, anchor, depths)
    guess = drafter.to_target_ids(drafter.logits(normed).argmax(-1)).cpu()
    hit = guess == sample.labels[anchor + depths + 1]
    grid = torch.stack([hit[:n][anchors]] + [hit[n + (d - 1) * anchors.numel():n + d * anchors.numel()]
                                             for d in range(1, depth)], dim=1)
    return _runs(grid)


def eagle3_runs(drafter: Drafter, sample, depth: int) -> torch.Tensor:
    L = len(sample.ids)
    sel = torch.nonzero(supervised_rows(L, sample.prompt_len)).flatten()
    columns = []
    for k, q, normed in eagle3_unroll(drafter, sample, depth):
        guess = drafter.to_target_ids(drafter.logits(normed).argmax(-1)).cpu()
        rows = q.cpu()
        hit = guess == sample.labels[(rows + 1 + k).clamp_max(L - 1)]
        columns.append(hit[sel] if k == 0 else hit)
    if len(columns) < depth:
        return torch.zeros(0, dtype=torch.long)
    keep = sel <= L - 1 - depth
    return _runs(torch.stack(columns, dim=1)[keep])


def lookup_runs(sample, depth: int, k: int) -> torch.Tensor:
    """Per anchor (those of peagle_runs), the run of drafts copied from the context up to the
    bonus token (k at most), or -1 where the context has no match."""
    ids, labels = sample.ids.tolist(), sample.labels.tolist()
    runs = []
    for a in anchors_of(sample, depth).tolist():
        drafts = lookup_drafts(ids[:a + 2], k)
        run = 0
        while run < len(drafts) and a + 1 + run < len(labels) and drafts[run] == labels[a + 1 + run]:
            run += 1
        runs.append(run if drafts else -1)
    return torch.tensor(runs, dtype=torch.long)


@torch.no_grad()
def heldout_acceptance(drafter: Drafter, dataset, method: str, ks=(4, 10), limit: int = 32,
                       lookup: bool = False) -> dict[int, float]:
    """{K: AL(K)} over the first `limit` samples of `dataset` (see the module doc)."""
    depth = max(ks)
    runs, copied = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
    for i in range(min(limit, len(dataset))):
        sample = dataset[i]
        runs.append((peagle_runs if method == "peagle" else eagle3_runs)(drafter, sample, depth))
        if lookup and runs[-1].numel():
            copied.append(lookup_runs(sample, depth, max(depth, LOOKUP_K)))
    runs = torch.cat(runs)
    copied = torch.cat(copied) if lookup else None
    al = {}
    for k in ks:
        accepted = runs.clamp(max=k)
        if copied is not None:
            accepted = torch.where(copied >= 0, copied.clamp(max=max(k, LOOKUP_K)), accepted)
        al[k] = round(1 + float(accepted.float().mean()), 3) if runs.numel() else float("nan")
    return al


# -- the curve: held-out AL against training tokens, one line per run ---------------------------------
COLORS = [(230, 120, 40), (40, 110, 200), (60, 160, 80), (170, 60, 160), (120, 120, 120), (200, 50, 50)]


def curve_points(history: list[dict], k: int) -> list[tuple[int, float]]:
    return [(h["tokens"], h["heldout_al"][k]) for h in history if "heldout_al" in h and k in h["heldout_al"]]


def write_curve_png(path, runs: dict[str, list[dict]], k: int = 4) -> None:
    """AL(k) against tokens trained on, one line per run (its history from the trainer's
    checkpoint or summary)."""
    from completion.evaluation.engine_bench import draw_text
    from completion.evaluation.latency_bench import Canvas

    series = {name: curve_points(h, k) for name, h in runs.items()}
    series = {n: p for n, p in series.items() if p}
    c = Canvas(760, 440)
    left, right, top, bottom = 70, 740, 60, 390
    x_max = max((t for p in series.values() for t, _ in p), default=1) or 1
    y_max = max(2.0, max((a for p in series.values() for _, a in p), default=1.0))
    x_of = lambda t: round(left + t / x_max * (right - left))          # noqa: E731
    y_of = lambda a: round(bottom - (a - 1) / (y_max - 1) * (bottom - top))   # noqa: E731
    draw_text(c, left, 12, f"HELD-OUT AL AT K={k}  AGAINST TRAINING TOKENS")
    c.line(left, bottom, right, bottom, (0, 0, 0))
    c.line(left, top, left, bottom, (0, 0, 0))
    for i in range(5):
        a = 1 + (y_max - 1) * i / 4
        draw_text(c, 10, y_of(a) - 4, f"{a:.2f}")
        t = x_max * i / 4
        draw_text(c, x_of(t) - 20, bottom + 10, f"{t / 1e6:.2f}M")
    for n, (name, points) in enumerate(series.items()):
        rgb = COLORS[n % len(COLORS)]
        draw_text(c, left + 10 + 170 * (n % 4), 34 + 12 * (n // 4), name, rgb)
        for (t0, a0), (t1, a1) in zip(points, points[1:]):
            c.line(x_of(t0), y_of(a0), x_of(t1), y_of(a1), rgb, 2)
        for t, a in points:
            c.dot(x_of(t) - 2, y_of(a) - 2, rgb, 5)
    c.save(path)


def main(argv: list[str] | None = None) -> int:
    """python -m completion.training.heldout NAME=WORK_DIR ... --out curve.png [--k 4]: the curve of
    several training runs (each WORK_DIR holds the trainer's ckpt.pt)."""
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m completion.training.heldout", description=main.__doc__)
    ap.add_argument("runs", nargs="+", metavar="NAME=WORK_DIR")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args(argv)
    runs = {}
    for spec in args.runs:
        name, _, work = spec.partition("=")
        ck = torch.load(Path(work) / "ckpt.pt", weights_only=False, map_location="cpu")
        runs[name] = [{**h, "heldout_al": {int(k): v for k, v in h["heldout_al"].items()}}
                      for h in ck["history"] if "heldout_al" in h]
    write_curve_png(args.out, runs, args.k)
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
