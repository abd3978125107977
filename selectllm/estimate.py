"""``selectllm estimate``: the most the select stage can spend, computed before any LLM call.

It builds the exact prompts the stage would send (same plan, same wording, same cache keys) and
counts their tokens; the upper bound assumes every request uses its full ``llm.max_tokens``.
Requests whose answers are already cached cost nothing and are reported separately.
"""

from __future__ import annotations

import numpy as np

from selectllm.config import Config
from selectllm.rundir import RunDir


def estimate_cost(cfg: Config, run: RunDir) -> dict:
    from selectllm.llm.budget import max_request_cost
    from selectllm.llm.cache import AnswerCache
    from selectllm.llm.tokens import count_message_tokens
    from selectllm.select.decide import build_requests
    from selectllm.select.plan import plan_groups
    from selectllm.select.stage import lookup_rows
    from selectllm.tables import read_table

    out = {"strategy": cfg.select.strategy, "budget": cfg.select.budget, "prompts": 0, "input_tokens": 0,
           "max_output_tokens": 0, "max_usd": 0.0, "cached_prompts": 0, "llm_max_usd_cap": cfg.llm.max_usd,
           "model": cfg.llm.model}
    if cfg.select.strategy not in ("selectllm",):
        return out
    a = read_table(run, "cluster/assignments.parquet").sort_by("id")
    ids = np.asarray(a.column("id").to_pylist(), dtype=object)
    labels = a.column("cluster_id").to_numpy()
    k = int(labels.max()) + 1 if len(labels) else 0
    groups = [g for g in plan_groups(ids, labels, a.column("distance").to_numpy(), k, cfg.select.budget,
                                     cfg.select.picks_per_prompt, cfg.select.candidates_per_prompt) if g.needs_llm]
    texts = lookup_rows(run, sorted({c for g in groups for c in g.candidates}), ["instruction", "input"])
    requests = build_requests(cfg, groups, texts)
    cache = AnswerCache(run.path("cache", "llm"))
    for r in requests:
        if cache.get(r.key) is not None:
            out["cached_prompts"] += 1
            continue
        tokens = count_message_tokens(r.messages, cfg.llm.model)
        out["prompts"] += 1
        out["input_tokens"] += tokens
        out["max_output_tokens"] += r.max_tokens
        out["max_usd"] += max_request_cost(tokens, r.max_tokens, cfg.llm.price)
    out["max_usd"] = round(out["max_usd"], 6)
    return out
