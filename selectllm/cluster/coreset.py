"""Coreset k-center for very large k or very many shards (composable coresets).

Each shard runs farthest-first on its own rows, after the global first centers, for
``tau = c·k`` local centers (no communication); the coordinator then runs farthest-first over
the union of the local centers (and the seeds).  The local centers cover their shard within the
local radius, which is at most twice the optimal k-center radius of the whole pool, so the
result is a constant-factor approximation (4 with tau = k; Malkomes et al., NeurIPS 2015;
Ceccarello, Pietracaprina & Pucci, VLDB 2019, who show that larger tau brings it close to the
sequential 2-approximation).  It trades exactness for one round instead of ~k/batch rounds;
``benchmarks/bench_kcenter.py`` compares its radius with the exact one.
"""

from __future__ import annotations

import numpy as np

from selectllm.cluster.kcenter import Entry, farthest_first


def coreset_centers(group, k: int, seeds: list[Entry], tau: int, batch: int, margin: float,
                    stats: dict | None = None) -> list[Entry]:
    """k centers: the seeds, then farthest-first over the union of every shard's tau local centers."""
    each = []
    for s in range(len(group)):
        each.append((tau, [(np.asarray(e.vec, dtype=np.float32), e.local if e.shard == s else -1) for e in seeds],
                     batch, margin))
    local = group.call("local_greedy", each=each)
    pool: dict[bytes, Entry] = {bytes(e.key): e for e in seeds}
    for s, (keys, locs, vecs) in enumerate(local):
        for key, loc, vec in zip(keys, locs, vecs):
            pool.setdefault(bytes(key), Entry(s, int(loc), key, vec))
    # Row order of the union = id order, so the kernel's "lowest index wins ties" is "lowest id".
    order = sorted(pool)
    pos = {key: i for i, key in enumerate(order)}
    x = np.stack([np.asarray(pool[key].vec, dtype=np.float32) for key in order])
    rows, _ = farthest_first(x, k, initial=[pos[bytes(e.key)] for e in seeds], batch=batch)
    if stats is not None:
        stats.update(coreset_size=len(order), coreset_tau=tau)
    return [pool[order[i]] for i in rows]
