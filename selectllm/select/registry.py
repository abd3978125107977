"""The selection strategies, listed once: config name -> the function that implements it.

A strategy is ``fn(ctx, ids, labels, dist) -> StrategyResult``: ``ids`` sorted, ``labels`` /
``dist`` each row's cluster and distance to its center; ``ctx`` is the select (or compare) stage's
context, whose declared inputs it reads through :mod:`selectllm.select.tables`.  Implementations
are imported only when asked for.
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


def target(ctx, ids) -> int:
    return min(ctx.cfg.select.budget, len(ids))
