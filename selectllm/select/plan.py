"""From clusters to LLM groups: how many rows each cluster gives and which candidates it shows.

* Quotas: every cluster gets ``picks_per_prompt`` (clusters in center order, so when
  ``k * picks > budget`` the last-chosen, least distinctive clusters give fewer), then any
  shortfall (small clusters) goes round-robin to clusters that still have rows.  The quotas add
  up to exactly ``min(budget, pool)``.
* Candidates: members sorted by distance to their center, then ``candidates_per_prompt`` of them
  at evenly spaced ranks, so the prompt shows the cluster from its core to its edge.  The center
  is always candidate 1.
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


def allocate_quotas(sizes: np.ndarray, budget: int, picks: int) -> np.ndarray:
    """Rows to take from each cluster (clusters in center order), summing to min(budget, sum(sizes))."""
    sizes = np.asarray(sizes, dtype=np.int64)
    target = int(min(budget, sizes.sum()))
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


def spread_ranks(m: int, c: int) -> np.ndarray:
    """c distinct ranks in [0, m) evenly spaced, always including 0 (the center)."""
    if m <= c:
        return np.arange(m)
    ranks = np.unique(np.round(np.linspace(0, m - 1, c)).astype(np.int64))
    if len(ranks) < c:  # rounding collisions: fill with the lowest unused ranks
        extra = np.setdiff1d(np.arange(m), ranks)[: c - len(ranks)]
        ranks = np.sort(np.concatenate([ranks, extra]))
    return ranks


def plan_groups(ids: np.ndarray, labels: np.ndarray, dist: np.ndarray, k: int, budget: int,
                picks: int, candidates_per_prompt: int) -> list[Group]:
    """One group per cluster with a non-zero quota.  Inputs are the cluster assignments."""
    order = np.lexsort((ids, dist, labels))  # by cluster, then distance, then id
    sorted_labels = labels[order]
    bounds = np.searchsorted(sorted_labels, np.arange(k + 1))
    sizes = np.diff(bounds)
    quotas = allocate_quotas(sizes, budget, picks)
    groups = []
    for c in range(k):
        if quotas[c] == 0:
            continue
        members = ids[order[bounds[c]:bounds[c + 1]]]
        shown = max(candidates_per_prompt, int(quotas[c]) + 1)
        cand = members[spread_ranks(len(members), shown)]
        groups.append(Group(group_id=len(groups), cluster_id=c, candidates=[str(x) for x in cand],
                            quota=int(quotas[c])))
    return groups


def cluster_candidates(ids: np.ndarray, labels: np.ndarray, dist: np.ndarray, quotas: np.ndarray,
                       candidates_per_prompt: int) -> list[tuple[int, list[str]]]:
    """(cluster, candidates) of every cluster present with a non-zero quota, given ALL members of
    those clusters (some clusters of the pool, e.g. one planning bucket) and the global quotas:
    the candidates :func:`plan_groups` shows for them.  ``ids``: strings, or their UTF-8 bytes
    (a fixed-width numpy array sorts the same)."""
    order = np.lexsort((ids, dist, labels))  # by cluster, then distance, then id
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]) if len(order) else order
    out = []
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        c = int(sorted_labels[a])
        if quotas[c] == 0:
            continue
        members = ids[order[a:b]]
        shown = max(candidates_per_prompt, int(quotas[c]) + 1)
        out.append((c, [x.decode() if isinstance(x, bytes) else str(x) for x in members[spread_ranks(len(members), shown)]]))
    return out
