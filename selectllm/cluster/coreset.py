"""Coreset k-center for very large k or very many shards (composable coresets).

Each shard runs farthest-first on its own rows, after the global first centers, for
``tau = c·k`` local centers (no communication); then farthest-first runs over the union of the
local centers (and the seeds), distributed over the shards that hold them.  The local centers cover their shard within the
local radius, which is at most twice the optimal k-center radius of the whole pool, so the
result is a constant-factor approximation (4 with tau = k; Malkomes et al., NeurIPS 2015;
Ceccarello, Pietracaprina & Pucci, VLDB 2019, who show that larger tau brings it close to the
sequential 2-approximation).  It trades exactness for one round instead of ~k/batch rounds;
``benchmarks/bench_kcenter.py`` compares its radius with the exact one.
"""

from __future__ import annotations

import numpy as np

from selectllm.cluster.kcenter import Entry


def coreset_centers(group, k: int, seeds: list[Entry], tau: int, batch: int, margin: float,
                    stats: dict | None = None, exact: bool = True, log=None) -> list[Entry]:
    """k centers: the seeds, then farthest-first over the union of every shard's tau local centers.

    The union never leaves the shards: each shard shrinks to its local centers (and its own
    seeds), the same distributed rounds as the exact mode run over these subsets (ties to the
    lowest id, as farthest-first over the id-ordered union would), and the chosen rows are mapped
    back to the shards' full rows.  The driver holds only the k chosen vectors.
    """
    from selectllm.cluster.kcenter import greedy
    from selectllm.cluster.sharded import GroupStep

    each = []
    for s in range(len(group)):
        each.append((tau, [(np.asarray(e.vec, dtype=np.float32), e.local if e.shard == s else -1) for e in seeds],
                     batch, margin))
    positions = group.call("coreset_subset", each=each)
    sizes = [i["n"] for i in group.call("info")]
    sub_seeds = [Entry(e.shard, positions[e.shard][e.local], e.key, e.vec) for e in seeds]
    step = GroupStep(group, k, log, what="centers (coreset)")
    chosen: list[Entry] = []
    try:
        chosen = greedy(step, k, sub_seeds, batch=batch, m=GroupStep.m(batch, sizes), margin=margin,
                        exact=exact, final_update=False, stats=stats)
    finally:  # the shards get all their rows back, whatever happened
        full = group.call("leave_subset", each=[([e.local for e in chosen if e.shard == s],)
                                                for s in range(len(group))])
    nxt = [iter(f) for f in full]
    out = [Entry(e.shard, next(nxt[e.shard]), e.key, e.vec) for e in chosen]
    if stats is not None:
        stats.update(coreset_size=sum(sizes), coreset_tau=tau)
    return out
