"""``selectllm-paper``: SelectLLM as published (Parkar et al. 2024, minnesotanlp/select-llm), fixed.

1. Equal-size k-means partitions the pool into ``K`` diverse subsets, each holding one member of
   every one of the ``N // K`` clusters (:mod:`selectllm.cluster.kmeans_groups`).
2. One prompt per subset, in the paper's wording (:func:`selectllm.select.prompts.paper_messages`),
   asks for ``budget / K`` of its candidates.
3. The answer's ``[i]`` identifiers pick the rows (:func:`selectllm.select.parse.parse_selection`).

``K`` is ``select.paper_subsets`` (1,000 as in the paper), capped at the selection size and at
the pool: with a budget under ``K`` the reference asked the LLM to "select 0"; here ``K`` becomes
the budget, so every pool row is still shown to the LLM exactly once.  Picks per subset: the
budget is split as evenly as possible (``budget // K`` each, the first ``budget % K`` subsets one
more; a subset smaller than its share gives the rest round-robin to subsets with room), so the
selection has exactly ``min(budget, pool)`` rows for any budget, not only multiples of 1,000.

LLM-free pick (unusable answer, error, ``llm.max_usd`` reached): the first ``quota`` candidates
of the subset, i.e. the members of the first ``quota`` k-means clusters -- what the reference
meant to do (its fallback picked candidates 2..quota+1 by an off-by-one).  Identifiers outside
``1..n`` and repeats are dropped and reported instead of crashing the run after the paid calls.

Decisions: one row per subset; ``cluster_id`` there is the subset index.  ``selected.jsonl``
keeps the cluster stage's cluster of each row, like every other strategy.
"""

from __future__ import annotations

import time

import numpy as np

from selectllm.select.plan import Group
from selectllm.select.registry import StrategyResult


def paper_quotas(sizes: np.ndarray, target: int) -> np.ndarray:
    """Picks per subset: ``target`` split as evenly as possible, capped by each subset's size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    k = len(sizes)
    target = int(min(target, sizes.sum()))
    if k == 0:
        return sizes.copy()
    quota = np.full(k, target // k, dtype=np.int64)
    quota[: target % k] += 1
    quota = np.minimum(quota, sizes)
    while int(quota.sum()) < target:  # round-robin over subsets that still have rows
        room = np.flatnonzero(quota < sizes)
        quota[room[: target - int(quota.sum())]] += 1
    return quota


def effective_subsets(cfg, n: int) -> int:
    target = min(cfg.select.budget, n)
    return max(1, min(cfg.select.paper_subsets, target, n)) if n else 0


def paper_groups(cfg, ids: np.ndarray, x: np.ndarray) -> tuple[list[Group], dict]:
    """The groups the strategy asks about (also used by ``selectllm estimate``)."""
    from selectllm.cluster.kmeans_groups import diverse_subsets

    n = len(ids)
    k = effective_subsets(cfg, n)
    t0 = time.perf_counter()
    subsets, eq = diverse_subsets(x, k, seed=cfg.select.seed)
    seconds = time.perf_counter() - t0
    quotas = paper_quotas(np.asarray([len(s) for s in subsets], dtype=np.int64), min(cfg.select.budget, n))
    groups = [Group(group_id=p, cluster_id=p, candidates=[str(ids[r]) for r in rows], quota=int(q))
              for p, (rows, q) in enumerate(zip(subsets, quotas)) if q > 0]
    info = {"paper_subsets": int(k), "paper_clusters": len(eq.members), "paper_leftover": int(len(eq.leftover)),
            "paper_partition_seconds": round(seconds, 3)}
    return groups, info


def paper_strategy(ctx, pool) -> StrategyResult:
    """Equal-size k-means -> K diverse subsets -> one paper-worded prompt per subset (the whole
    pool in this process: ``select.paper_max_rows``)."""
    from selectllm.select.decide import decide_groups
    from selectllm.select.prompts import paper_prompt

    ids, labels, _ = pool.arrays()
    groups, info = paper_groups(ctx.cfg, ids, pool.embeddings())
    decisions = decide_groups(ctx, groups, paper_prompt(ctx.cfg.select.paper_prompt))
    pos = {v: i for i, v in enumerate(ids)}
    selected = [(cid, int(labels[pos[cid]])) for d in decisions for cid in d["chosen_ids"]]
    return StrategyResult(selected, decisions, info)
