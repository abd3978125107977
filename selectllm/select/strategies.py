"""Selection strategies.  Each takes the cluster assignments and returns the chosen rows.

A strategy is ``fn(ctx, ids, labels, dist) -> StrategyResult`` registered under its config name;
``ids`` are sorted, ``labels``/``dist`` are each row's cluster and distance to its center.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from selectllm.errors import UserError

_REGISTRY: dict[str, Callable] = {}


@dataclass
class StrategyResult:
    selected: list[tuple[str, int]]  # (id, cluster_id)
    decisions: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def register(name: str):
    def wrap(fn):
        _REGISTRY[name] = fn
        return fn

    return wrap


def get(name: str) -> Callable:
    if name not in _REGISTRY:
        raise UserError(f"select.strategy '{name}' is not available (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def _target(ctx, ids) -> int:
    return min(ctx.cfg.select.budget, len(ids))


def pool_embeddings(ctx, ids: np.ndarray) -> np.ndarray:
    """The embeddings of ``ids`` (sorted), row for row.  ``selectllm compare`` loads them once and
    hands them over as ``ctx.embeddings = (ids, X)``; the select stage reads ``embed/``."""
    cached = getattr(ctx, "embeddings", None)
    if cached is None:
        from selectllm.tables import load_embeddings

        cached = load_embeddings(ctx.run)
        try:
            ctx.embeddings = cached
        except (AttributeError, TypeError):
            pass
    all_ids, x = cached
    if len(all_ids) != len(ids) or not np.array_equal(np.asarray(all_ids, dtype=object), np.asarray(ids, dtype=object)):
        raise RuntimeError("select: the embedded rows and the cluster assignments differ; rerun `selectllm cluster`")
    return x


@register("random")
def random_strategy(ctx, ids, labels, dist) -> StrategyResult:
    """Uniform sample without replacement, seeded by ``select.seed``."""
    rng = np.random.default_rng(ctx.cfg.select.seed)
    idx = np.sort(rng.choice(len(ids), size=_target(ctx, ids), replace=False))
    return StrategyResult([(str(ids[i]), int(labels[i])) for i in idx])


@register("kcenter")
def kcenter_strategy(ctx, ids, labels, dist) -> StrategyResult:
    """The first ``budget`` farthest-first centers (the coreset baseline)."""
    from selectllm.tables import read_table

    target = _target(ctx, ids)
    centers = read_table(ctx.run, "cluster/centers.parquet").sort_by("cluster_id")
    if len(centers) >= target:
        chosen = centers.column("id").to_pylist()[:target]
        return StrategyResult([(c, i) for i, c in enumerate(chosen)])
    # fewer clusters than the budget: continue the traversal (it is prefix-consistent)
    from selectllm.cluster.kcenter import farthest_first
    from selectllm.tables import load_embeddings

    all_ids, x = load_embeddings(ctx.run)
    pos = {v: i for i, v in enumerate(all_ids)}
    seeds = [pos[c] for c in centers.column("id").to_pylist()]
    rows, _ = farthest_first(x, target, initial=seeds)
    label_of = dict(zip(ids, labels))
    return StrategyResult([(str(all_ids[r]), int(label_of[all_ids[r]])) for r in rows])


@register("selectllm")
def selectllm_strategy(ctx, ids, labels, dist) -> StrategyResult:
    """One prompt per cluster: the LLM picks the most beneficial of a spread of its members."""
    from selectllm.select.decide import decide_groups
    from selectllm.select.plan import plan_groups

    cfg = ctx.cfg.select
    k = int(labels.max()) + 1 if len(labels) else 0
    groups = plan_groups(ids, labels, dist, k, cfg.budget, cfg.picks_per_prompt, cfg.candidates_per_prompt)
    decisions = decide_groups(ctx, groups)
    selected = [(cid, d["cluster_id"]) for d in decisions for cid in d["chosen_ids"]]
    return StrategyResult(selected, decisions)


# the other strategies register themselves on import
from selectllm.select import baselines as _baselines  # noqa: E402,F401
from selectllm.select import paper as _paper  # noqa: E402,F401
