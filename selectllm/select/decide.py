"""Ask the LLM about each group and turn its answers into decisions (shared by LLM strategies).

A group whose answer is unusable (no valid identifier, an error, the budget reached) gets the
documented LLM-free pick (plan.Group.fallback) and a status saying why; a usable answer with
too few identifiers is topped up from the same order.  Nothing is silent: every reason is kept.
"""

from __future__ import annotations

from selectllm.llm.types import LLMRequest, request_key
from selectllm.select.parse import parse_selection
from selectllm.select.distributed import plan_groups_distributed
from selectllm.select.plan import Group
from selectllm.select.prompts import DEFAULT_PROMPT, REASON_TOKENS, PromptSpec
from selectllm.select.registry import StrategyResult
from selectllm.select.send import send
from selectllm.select.tables import lookup


def answer_tokens(cfg, picks: int) -> int:
    """Answer tokens of one request: ``llm.max_tokens``, plus REASON_TOKENS per pick with
    ``select.reasons`` (a reason is one line)."""
    return cfg.llm.max_tokens + (REASON_TOKENS * picks if cfg.select.reasons else 0)


def build_requests(cfg, groups: list[Group], texts: dict[str, dict],
                   prompt: PromptSpec | None = None) -> list[LLMRequest]:
    """One request per group; ``prompt`` picks the wording (default: prompts.selection_messages).
    A structured request carries its text form too (sent if the endpoint cannot do structured
    outputs); ``select.reasons`` asks for a one-line reason per pick in the same request."""
    prompt = prompt or DEFAULT_PROMPT
    reasons = bool(cfg.select.reasons)
    structured = cfg.llm.structured_output != "off" and prompt.structured is not False
    schema = prompt.reasons_schema if reasons else prompt.schema
    out = []
    for g in groups:
        cands = [(texts[c]["instruction"], texts[c]["input"] or "") for c in g.candidates]
        messages = prompt.build(cands, g.quota, structured, reasons)
        max_tokens = answer_tokens(cfg, g.quota)
        params = {"max_tokens": max_tokens, "temperature": cfg.llm.temperature,
                  "response_format": "json_schema" if structured else "text"}
        out.append(LLMRequest(key=request_key(cfg.llm.model, messages, params, prompt.version),
                              group_id=g.group_id, messages=messages, max_tokens=max_tokens,
                              response_format=schema if structured else None,
                              text_messages=prompt.build(cands, g.quota, False, reasons) if structured else None))
    return out


def decision(g: Group, chosen: list[str], chosen_by: list[str], status: str, reason: str, result=None,
             chosen_reasons: list[str] | None = None) -> dict:
    """One decisions.parquet row; ``chosen_by`` says who picked each chosen id (llm|fallback|no_llm)."""
    return {"group_id": g.group_id, "cluster_id": g.cluster_id, "candidate_ids": list(g.candidates),
            "chosen_ids": chosen, "chosen_by": chosen_by, "chosen_reasons": chosen_reasons or [""] * len(chosen),
            "status": status, "reason": reason,
            "input_tokens": int(getattr(result, "input_tokens", 0) or 0),
            "output_tokens": int(getattr(result, "output_tokens", 0) or 0),
            "usd": float(getattr(result, "usd", 0.0) or 0.0)}


def decide_one(g: Group, result, reasons: bool = False) -> dict:
    fallback = ["fallback"] * g.quota
    if result.status == "budget_stopped":
        return decision(g, g.fallback(), fallback, "budget_stopped", "llm.max_usd reached before this group", result)
    if result.status != "ok":
        return decision(g, g.fallback(), fallback, "error", (result.error or "request failed")[:500], result)
    parsed = parse_selection(result.text, len(g.candidates), g.quota, reasons)
    if not parsed.positions:
        return decision(g, g.fallback(), fallback, "fallback", "; ".join(parsed.problems)[:500], result)
    chosen = [g.candidates[p] for p in parsed.positions]
    said = list(parsed.reasons)
    chosen_by = ["llm"] * len(chosen)
    reason = "; ".join(parsed.problems)
    if len(chosen) < g.quota:  # top up with the most central candidates not yet chosen
        missing = g.quota - len(chosen)
        chosen += [c for c in g.candidates if c not in chosen][:missing]
        chosen_by += ["fallback"] * missing
        said += [""] * missing
        reason = (reason + "; " if reason else "") + f"{missing} pick(s) topped up from the fallback order"
    return decision(g, chosen, chosen_by, "ok", reason[:500], result, said)


def decide_groups(ctx, groups: list[Group], prompt: PromptSpec | None = None) -> list[dict]:
    asking = [g for g in groups if g.needs_llm]
    texts = lookup(ctx, sorted({c for g in asking for c in g.candidates}), ["instruction", "input"])
    results = {r.group_id: r for r in send(ctx, build_requests(ctx.cfg, asking, texts, prompt))}
    decisions = []
    for g in groups:
        if g.needs_llm:
            decisions.append(decide_one(g, results[g.group_id], bool(ctx.cfg.select.reasons)))
        else:
            decisions.append(decision(g, list(g.candidates), ["no_llm"] * len(g.candidates), "ok",
                                      "cluster has no more rows than its quota; no LLM call"))
    return decisions


def selectllm_groups(cfg, pool) -> list[Group]:
    """The groups the ``selectllm`` strategy asks about (also used by ``selectllm estimate``):
    :func:`selectllm.select.plan.plan_groups`, planned by tasks over the assignment parts."""
    s = cfg.select
    return plan_groups_distributed(pool.fs, pool.files, pool.k, s.budget, s.picks_per_prompt,
                                   s.candidates_per_prompt, pool.remote)


def selectllm_strategy(ctx, pool) -> StrategyResult:
    """One prompt per cluster: the LLM picks the most beneficial of a spread of its members."""
    groups = selectllm_groups(ctx.cfg, pool)
    ctx.log.print(f"select: {len(groups):,} groups planned over {pool.n:,} rows in {len(pool.files):,} parts"
                  f" ({'Ray tasks' if pool.remote else 'this process'}); "
                  f"{sum(g.needs_llm for g in groups):,} LLM requests to send")
    decisions = decide_groups(ctx, groups)
    selected = [(cid, d["cluster_id"]) for d in decisions for cid in d["chosen_ids"]]
    return StrategyResult(selected, decisions)
