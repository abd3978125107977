"""From clusters to LLM groups: how many rows each cluster gives and which candidates it shows.

* Quotas (``select.allocation``):

  - ``equal``: every cluster gets ``picks_per_prompt`` (clusters in center order, so when
    ``k * picks > budget`` the last-chosen, least distinctive clusters give fewer), then any
    shortfall (small clusters) goes round-robin to clusters that still have rows.
  - ``sqrt`` / ``proportional``: quota ∝ size^α (α = 0.5 / 1), by largest remainder (ties to the
    lower cluster id), capped by the cluster's size (what a capped cluster cannot take is shared
    by the others in the same proportion).

  The quotas add up to exactly ``min(budget, pool)``.
* Candidates of a cluster whose quota fits one prompt (``quota <= picks_per_prompt``): members
  sorted by distance to their center, then ``candidates_per_prompt`` of them at evenly spaced
  ranks, so the prompt shows the cluster from its core to its edge (in a seeded random order:
  the select stage shuffles what it shows).
* A cluster whose quota is above ``picks_per_prompt`` becomes ``ceil(quota / picks)`` prompts:
  ``prompts x candidates_per_prompt`` members (or all of them) drawn at random across the cluster
  (seeded by ``select.seed`` and the cluster id, so every planner draws the same), dealt
  round-robin in rank order; the quota is spread over the prompts the same way (each prompt asks
  for at most ``picks_per_prompt`` and shows more candidates than it asks for unless the cluster
  is nearly used up).  One prompt of quota + 1 candidates would let the LLM leave out one row.
* LLM-free pick (fallback, budget stop): ``quota`` of the candidates drawn at random, seeded by
  the candidate ids (:meth:`Group.fallback`): not the center nor whatever the prompt showed
  first, so a run that could not hear the LLM does not silently become the ``kcenter`` baseline
  and a model that always answers position 1 cannot coincide with it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class Group:
    group_id: int
    cluster_id: int
    candidates: list[str]  # ids, most central first
    quota: int

    @property
    def needs_llm(self) -> bool:
        return self.quota < len(self.candidates)

    def fallback(self) -> list[str]:
        """``quota`` candidates drawn at random (seeded by the candidate ids), in candidate order."""
        return [self.candidates[i] for i in sorted(stable_permutation(self.candidates, "fallback")[: self.quota])]


def stable_permutation(ids: list[str], *salt: object) -> list[int]:
    """A permutation of ``range(len(ids))`` that depends only on the ids and ``salt``."""
    digest = hashlib.sha256("\x1f".join([*map(str, salt), *ids]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(len(ids)).tolist()


ALLOCATIONS = {"equal": None, "sqrt": 0.5, "proportional": 1.0}  # select.allocation -> α (None: equal)


def allocate_quotas(sizes: np.ndarray, budget: int, picks: int, allocation: str = "equal",
                    covered: np.ndarray | None = None) -> np.ndarray:
    """Rows to take from each cluster (clusters in center order), summing to min(budget, sum(sizes)).

    ``covered`` (a programme's history): rows per cluster already covered by earlier selections.
    The budget is shared by the clusters' *uncovered* rows (``sizes - covered``); what they cannot
    take (fewer uncovered rows than the budget) is shared again by the rows left, covered or not."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"select.allocation must be one of {', '.join(ALLOCATIONS)}, not {allocation!r}")
    sizes = np.asarray(sizes, dtype=np.int64)
    if covered is not None:
        fresh = np.maximum(sizes - np.asarray(covered, dtype=np.int64), 0)
        quota = allocate_quotas(fresh, budget, picks, allocation)
        rest = int(min(budget, sizes.sum())) - int(quota.sum())
        if rest > 0:
            quota += allocate_quotas(sizes - quota, rest, picks, allocation)
        return quota
    target = int(min(budget, sizes.sum()))
    if ALLOCATIONS[allocation] is not None:
        return power_quotas(sizes, target, ALLOCATIONS[allocation])
    quota = np.minimum(sizes, picks)
    total = int(quota.sum())
    if total > target:  # trim from the last clusters
        excess = total - target
        for c in range(len(quota) - 1, -1, -1):
            take = min(excess, int(quota[c]))
            quota[c] -= take
            excess -= take
            if excess == 0:
                break
    while int(quota.sum()) < target:  # round-robin over clusters that still have rows
        room = np.flatnonzero(quota < sizes)
        need = target - int(quota.sum())
        quota[room[:need]] += 1
    return quota


def power_quotas(sizes: np.ndarray, target: int, alpha: float) -> np.ndarray:
    """``target`` rows shared in proportion to size^alpha: clusters whose share reaches their size
    take all their rows (the rest is shared again among the others), then largest remainder."""
    sizes = np.asarray(sizes, dtype=np.int64)
    quota = np.zeros(len(sizes), dtype=np.int64)
    weight = np.where(sizes > 0, sizes.astype(np.float64) ** alpha, 0.0)
    free = sizes > 0
    left = int(target)
    while left > 0 and free.any():
        share = left * weight[free] / weight[free].sum()
        full = np.flatnonzero(free)[share >= sizes[free]]
        if not len(full):
            break
        quota[full] = sizes[full]
        left -= int(sizes[full].sum())
        free[full] = False
    if left > 0 and free.any():
        exact = np.zeros(len(sizes))
        exact[free] = left * weight[free] / weight[free].sum()
        base = np.floor(exact).astype(np.int64)
        quota[free] = base[free]
        rest = left - int(base[free].sum())
        frac = np.where(free, exact - base, -1.0)
        quota[np.lexsort((np.arange(len(sizes)), -frac))[:rest]] += 1  # largest remainder, lower id on ties
    return quota


def spread_ranks(m: int, c: int) -> np.ndarray:
    """c distinct ranks in [0, m) evenly spaced, always including 0 (the center)."""
    if m <= c:
        return np.arange(m)
    ranks = np.unique(np.round(np.linspace(0, m - 1, c)).astype(np.int64))
    if len(ranks) < c:  # rounding collisions: fill with the lowest unused ranks
        extra = np.setdiff1d(np.arange(m), ranks)[: c - len(ranks)]
        ranks = np.sort(np.concatenate([ranks, extra]))
    return ranks


def cluster_groups(members: np.ndarray, cluster: int, quota: int, picks: int, candidates_per_prompt: int,
                   seed: int = 0) -> list[tuple[list[str], int]]:
    """(candidates, quota) of each prompt of one cluster; ``members``: all its ids sorted by
    (distance, id) (strings, or their UTF-8 bytes)."""
    def ids(a) -> list[str]:
        return [x.decode() if isinstance(x, bytes) else str(x) for x in a]

    if quota <= picks:
        return [(ids(members[spread_ranks(len(members), max(candidates_per_prompt, quota + 1))]), int(quota))]
    prompts = -(-quota // picks)
    drawn = min(len(members), prompts * candidates_per_prompt)
    rng = np.random.default_rng([int(seed), int(cluster)])
    ranks = np.sort(rng.choice(len(members), size=drawn, replace=False))
    quotas = [quota // prompts + (j < quota % prompts) for j in range(prompts)]
    return [(ids(members[ranks[j::prompts]]), int(quotas[j])) for j in range(prompts)]


def plan_groups(ids: np.ndarray, labels: np.ndarray, dist: np.ndarray, k: int, budget: int,
                picks: int, candidates_per_prompt: int, allocation: str = "equal", seed: int = 0) -> list[Group]:
    """The groups of every cluster with a non-zero quota, in cluster order.  Inputs are the
    cluster assignments."""
    order = np.lexsort((ids, dist, labels))  # by cluster, then distance, then id
    sorted_labels = labels[order]
    bounds = np.searchsorted(sorted_labels, np.arange(k + 1))
    sizes = np.diff(bounds)
    quotas = allocate_quotas(sizes, budget, picks, allocation)
    groups = []
    for c in range(k):
        if quotas[c] == 0:
            continue
        members = ids[order[bounds[c]:bounds[c + 1]]]
        for cand, quota in cluster_groups(members, c, int(quotas[c]), picks, candidates_per_prompt, seed):
            groups.append(Group(group_id=len(groups), cluster_id=c, candidates=cand, quota=quota))
    return groups


def cluster_candidates(ids: np.ndarray, labels: np.ndarray, dist: np.ndarray, quotas: np.ndarray, picks: int,
                       candidates_per_prompt: int, seed: int = 0) -> list[tuple[int, list[tuple[list[str], int]]]]:
    """(cluster, its prompts) of every cluster present with a non-zero quota, given ALL members of
    those clusters (some clusters of the pool, e.g. one planning bucket) and the global quotas:
    the prompts :func:`plan_groups` makes for them.  ``ids``: strings, or their UTF-8 bytes
    (a fixed-width numpy array sorts the same)."""
    order = np.lexsort((ids, dist, labels))  # by cluster, then distance, then id
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]) if len(order) else order
    out = []
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        c = int(sorted_labels[a])
        if quotas[c] == 0:
            continue
        out.append((c, cluster_groups(ids[order[a:b]], c, int(quotas[c]), picks, candidates_per_prompt, seed)))
    return out
