"""Acceptance length on held-out drafter data, as training goes (no engine, no target forward).

In the generated region of a held-out sample every token is the target's greedy choice, so at an
anchor row a (the last accepted position, its bonus token x[a+1] in hand) greedy verification
accepts the drafts for positions a+2, a+3, ... for as long as each equals the stored label there.
Drafting at every anchor at once, teacher-forced, therefore gives each anchor's accepted run
exactly: P-EAGLE's K drafts are the elements (a, 0..K-1) of one parallel-group forward;
EAGLE-3's are its unrolled steps, fed the true tokens, which are its own drafts while the run
lasts. AL(K) = 1 + mean over anchors of min(run, K), over anchors with K positions after them.
"""
from __future__ import annotations

import torch

from completion.speculative.drafter import Drafter

from .peagle_trainer import eagle3_unroll, peagle_forward, supervised_rows


def _runs(hits: torch.Tensor) -> torch.Tensor:
    """[anchors, K] bool -> accepted run per anchor (leading hits)."""
    return hits.long().cumprod(dim=1).sum(dim=1)


def peagle_runs(drafter: Drafter, sample, depth: int) -> torch.Tensor:
    n = len(sample.ids) - 1
    anchors = torch.nonzero(supervised_rows(n + 1, sample.prompt_len)).flatten()
    anchors = anchors[anchors <= n - depth]
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


@torch.no_grad()
def heldout_acceptance(drafter: Drafter, dataset, method: str, ks=(4, 10), limit: int = 32) -> dict[int, float]:
    """{K: AL(K)} over the first `limit` samples of `dataset` (see the module doc)."""
    depth = max(ks)
    runs = torch.cat([(peagle_runs if method == "peagle" else eagle3_runs)(drafter, dataset[i], depth)
                      for i in range(min(limit, len(dataset)))] or [torch.zeros(0, dtype=torch.long)])
    return {k: round(1 + float(runs.clamp(max=k).float().mean()), 3) if runs.numel() else float("nan")
            for k in ks}
