"""``selectllm estimate``: the most the select stage can spend, computed before any LLM call.

It builds the exact prompts the stage would send (same plan, same wording, same cache keys) and
counts their tokens; the upper bound assumes every request uses its full answer tokens
(``llm.max_tokens``, plus 48 per pick with ``select.reasons``, plus ``llm.reasoning_tokens``
for a reasoning model, see :class:`selectllm.llm.policy.RequestShape`); ``select.permutations: 2``
sends two requests per group, both counted.  ``max_usd_with_repairs``: the bound if every answer
were unusable and re-asked once with its repair message (the conversation so far, plus the answer).
Requests whose answers are already cached cost nothing and are reported separately.
"""

from __future__ import annotations

from selectllm.config import Config
from selectllm.rundir import RunDir


def planned_requests(cfg: Config, run: RunDir) -> list:
    """The exact requests the select stage would send for ``cfg.select.strategy`` (none for LLM-free ones)."""
    from selectllm.pipeline import stage_context
    from selectllm.select.decide import build_requests, selectllm_groups
    from selectllm.select.registry import LLM_STRATEGIES, check_scale
    from selectllm.select.tables import Pool, lookup_rows

    strategy = cfg.select.strategy
    if strategy not in LLM_STRATEGIES:
        return []
    ctx = stage_context(cfg, run, "select", out="", work="")  # reads the select stage's inputs; writes nothing
    pool = Pool(ctx)  # Ray tasks when this process is connected to Ray, else one part at a time here
    check_scale(cfg, strategy, pool.n, pool.k)
    rows = ctx.input("rows")
    if strategy == "alpagasus":  # one rating per pool row
        from selectllm.select.baselines import rating_requests

        ids = pool.arrays()[0]
        return rating_requests(cfg, ids, lookup_rows(rows, [str(i) for i in ids], ["instruction", "input"], pool.tasks))
    if strategy == "selectllm-paper":
        from selectllm.select.paper import paper_groups
        from selectllm.select.prompts import paper_prompt

        groups, _ = paper_groups(cfg, pool.arrays()[0], pool.embeddings())
        prompt = paper_prompt(cfg.select.paper_prompt)
    else:
        groups = selectllm_groups(cfg, pool)
        prompt = None
    groups = [g for g in groups if g.needs_llm]
    texts = lookup_rows(rows, sorted({c for g in groups for c in g.candidates}), ["instruction", "input"], pool.tasks)
    return build_requests(cfg, groups, texts, prompt)


REPAIR_TOKENS = 64  # the repair message (select.decide.REPAIR) and its chat framing, rounded up


def estimate_cost(cfg: Config, run: RunDir) -> dict:
    from selectllm.llm.budget import max_request_cost
    from selectllm.llm.cache import AnswerCache
    from selectllm.llm.policy import RequestShape
    from selectllm.llm.tokens import count_message_tokens

    out = {"strategy": cfg.select.strategy, "budget": cfg.select.budget, "prompts": 0, "input_tokens": 0,
           "max_output_tokens": 0, "max_usd": 0.0, "max_usd_with_repairs": 0.0, "cached_prompts": 0, "llm_max_usd_cap": cfg.llm.max_usd,
           "model": cfg.llm.model}
    requests = planned_requests(cfg, run)
    shape = RequestShape.of(cfg.llm)  # a reasoning model (llm.reasoning) gets llm.reasoning_tokens more per request
    out["reasoning_tokens_per_request"] = shape.answer_tokens(0)
    if cfg.history.path:  # the programme's cache (select/send.py): what earlier runs bought
        from selectllm.history import History

        cache_url = History(cfg.history.path).uri("cache", "llm")
    else:
        cache_url = run.uri("cache", "llm")
    cached = AnswerCache(cache_url).load(r.key for r in requests)
    for r in requests:
        if r.key in cached:
            out["cached_prompts"] += 1
            continue
        tokens = count_message_tokens(r.messages, cfg.llm.model)
        out["prompts"] += 1
        out["input_tokens"] += tokens
        answer = shape.answer_tokens(r.max_tokens)
        out["max_output_tokens"] += answer
        out["max_usd"] += max_request_cost(tokens, answer, cfg.llm.price)
        out["max_usd_with_repairs"] += max_request_cost(tokens + r.max_tokens + REPAIR_TOKENS, answer,
                                                        cfg.llm.price)
    out["max_usd_with_repairs"] = round(out["max_usd"] + out["max_usd_with_repairs"], 6)
    out["max_usd"] = round(out["max_usd"], 6)
    return out
