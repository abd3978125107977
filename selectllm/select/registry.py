"""The selection strategies, listed once: config name -> the function that implements it.

A strategy is ``fn(ctx, pool) -> StrategyResult``: ``pool`` is the :class:`~selectllm.select.tables.Pool`
(its size, its assignment parts; the whole arrays only on demand); ``ctx`` is the select (or
compare) stage's context, whose declared inputs it reads through :mod:`selectllm.select.tables`.
Implementations are imported only when asked for.

Some strategies hold the whole pool in one process (:data:`IN_ONE_PROCESS`): each has a row
limit in the config, checked by :func:`check_scale` before any work or LLM request.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from selectllm.errors import UserError

STRATEGIES: dict[str, str] = {
    "selectllm": "selectllm.select.decide:selectllm_strategy",
    "selectllm-paper": "selectllm.select.paper:paper_strategy",
    "random": "selectllm.select.baselines:random_strategy",
    "kcenter": "selectllm.select.baselines:kcenter_strategy",
    "kmeans-closest": "selectllm.select.baselines:kmeans_closest_strategy",
    "length": "selectllm.select.baselines:length_strategy",
    "alpagasus": "selectllm.select.baselines:alpagasus_strategy",
}
NAMES = tuple(STRATEGIES)
LLM_STRATEGIES = ("selectllm", "selectllm-paper", "alpagasus")  # the ones that send requests
ONE_PER_CLUSTER = ("kcenter", "kmeans-closest")  # cluster.k auto = budget for these

# strategy -> (its row limit under select., what it holds in one process, the alternative)
IN_ONE_PROCESS = {
    "selectllm-paper": ("paper_max_rows", "holds all N vectors in one process (equal-size k-means, N²/K work)",
                        "use selectllm (k-center, distributed) or sample the input"),
    "alpagasus": ("alpagasus_max_rows", "sends one LLM request per row and holds every request in one process",
                  "use selectllm (one request per cluster) or sample the input"),
    # only when the cluster stage made fewer centers than the budget (cluster.k: auto never does)
    "kcenter": ("vectors_max_rows", "continues farthest-first past the cluster stage's centers with all N "
                "vectors in one process", "set cluster.k to at least select.budget (cluster.k: auto does)"),
}


@dataclass
class StrategyResult:
    selected: list[tuple[str, int]]  # (id, cluster_id)
    decisions: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def get(name: str) -> Callable:
    if name not in STRATEGIES:
        raise UserError(f"select.strategy '{name}' is not available (available: {', '.join(sorted(STRATEGIES))})")
    module, func = STRATEGIES[name].split(":")
    return getattr(importlib.import_module(module), func)


def check_scale(cfg, name: str, n: int, k: int) -> None:
    """A one-line UserError when strategy ``name`` would hold more than its limit of the ``n``
    pool rows in one process (``k``: the cluster stage's centers)."""
    if name not in IN_ONE_PROCESS or (name == "kcenter" and k >= min(cfg.select.budget, n)):
        return
    key, what, instead = IN_ONE_PROCESS[name]
    limit = getattr(cfg.select, key)
    if n > limit:
        raise UserError(f"select.strategy {name} {what}: N={n:,} exceeds select.{key}={limit:,}; {instead}")


def target(ctx, pool) -> int:
    return min(ctx.cfg.select.budget, pool.n)
