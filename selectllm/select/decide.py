"""Ask the LLM about each group and turn its answers into decisions (shared by LLM strategies).

* **Shown order**: each ask shows the group's candidates in a seeded random order
  (:func:`shown_order`: a function of the candidate ids, ``select.seed`` and the try, so the same
  prompt and cache key come back on a rerun); the order is recorded (``shown_order``), and the
  positions the LLM picked (``picked_positions``) feed the run's health.
* **Repair**: an answer that cannot be used (parse classes in ``UNUSABLE_CLASSES``) is asked
  once more in the same conversation with a short repair message: billed, under
  ``llm.max_usd``, cached under its own key.
* **Never final**: an answer still unusable after its repair is not a decision.  The group falls
  back for this run, and the next run of the stage (``--force``, a resume) asks it afresh: try
  ``t + 1``, a new order and a new key.  The spend of the earlier tries counts against the cap.
* **Two orders** (``select.permutations: 2``): each group is asked in its shown order and in
  the reverse of it (so position 1 becomes last).  The picks both answers agree on are kept
  (``llm``); the remaining slots of a disagreement go to the LLM-free draw (``fallback``), so a
  position-biased model cannot place its favourite position by itself.  When only one order
  gets a usable answer, that answer is used.  ``agreement`` records the share of the quota both
  orders agreed on.
* A group whose answer is unusable or failed (error, budget reached) gets the documented
  LLM-free pick (:meth:`plan.Group.fallback`) and a status and ``cause`` saying why; a usable
  answer with too few identifiers is topped up from the same draw.  Nothing is silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from selectllm.llm.cache import AnswerCache
from selectllm.llm.types import LLMRequest, request_key
from selectllm.select.distributed import plan_groups_distributed
from selectllm.select.parse import UNUSABLE_CLASSES, Parsed, parse_selection
from selectllm.select.plan import Group, stable_permutation
from selectllm.select.prompts import DEFAULT_PROMPT, REASON_TOKENS, PromptSpec
from selectllm.select.registry import StrategyResult
from selectllm.select.send import send
from selectllm.select.tables import lookup

REPAIR = ("Your answer could not be used ({why}). Answer again with exactly {picks} identifier{s} between 1 "
          "and {n}, in the format asked for, and nothing else.")
MAX_TRIES = 8  # earlier runs' unusable tries looked up per group (each run adds at most one)
REPAIRED = "repaired"  # a decision's parse class: its first answer was unusable and a repair was asked


def answer_tokens(cfg, picks: int) -> int:
    """Answer tokens of one request: ``llm.max_tokens``, plus REASON_TOKENS per pick with
    ``select.reasons`` (a reason is one line)."""
    return cfg.llm.max_tokens + (REASON_TOKENS * picks if cfg.select.reasons else 0)


def shown_order(g: Group, seed: int, view: int = 0, attempt: int = 0) -> list[int]:
    """The order the candidates are shown in: ``order[p]`` is the index (in ``g.candidates``) of
    the candidate shown at position ``p + 1``.  View 1 is view 0 reversed."""
    order = stable_permutation(g.candidates, "shown", seed, attempt)
    return order[::-1] if view == 1 else order


def _request(cfg, g: Group, texts: dict[str, dict], prompt: PromptSpec, view: int, attempt: int) -> LLMRequest:
    reasons = bool(cfg.select.reasons)
    structured = cfg.llm.asks_structured and prompt.structured is not False
    schema = prompt.reasons_schema if reasons else prompt.schema
    order = shown_order(g, cfg.select.seed, view, attempt)
    cands = [(texts[g.candidates[i]]["instruction"], texts[g.candidates[i]]["input"] or "") for i in order]
    messages = prompt.build(cands, g.quota, structured, reasons)
    max_tokens = answer_tokens(cfg, g.quota)
    params = {"max_tokens": max_tokens, "temperature": cfg.llm.temperature,
              "response_format": "json_schema" if structured else "text"}
    return LLMRequest(key=request_key(cfg.llm.model, messages, params, prompt.version, endpoint=cfg.llm.endpoint),
                      group_id=g.group_id, messages=messages, max_tokens=max_tokens,
                      response_format=schema if structured else None,
                      text_messages=prompt.build(cands, g.quota, False, reasons) if structured else None,
                      meta={"view": view, "attempt": attempt, "order": order, "params": params,
                            "version": prompt.version})


def build_requests(cfg, groups: list[Group], texts: dict[str, dict],
                   prompt: PromptSpec | None = None) -> list[LLMRequest]:
    """The first ask about each group (``select.permutations`` of them: one per shown order);
    ``prompt`` picks the wording (default: prompts.selection_messages).  A structured request
    carries its text form too (sent if the endpoint cannot do structured outputs);
    ``select.reasons`` asks for a one-line reason per pick in the same request."""
    prompt = prompt or DEFAULT_PROMPT
    return [_request(cfg, g, texts, prompt, view, 0) for g in groups for view in range(cfg.select.permutations)]


def repair_request(cfg, req: LLMRequest, answer: str | None, parsed: Parsed, n: int, picks: int) -> LLMRequest:
    """The same conversation, the unusable answer, and a short request to answer again."""
    why = "; ".join(parsed.problems[:2]) or "no identifiers"
    note = {"role": "user", "content": REPAIR.format(why=why, picks=picks, s="" if picks == 1 else "s", n=n)}
    said = {"role": "assistant", "content": (answer or "").strip() or "(empty)"}
    messages = [*req.messages, said, note]
    params = {**req.meta["params"], "repair": 1}
    return LLMRequest(key=request_key(cfg.llm.model, messages, params, req.meta["version"],
                                          endpoint=cfg.llm.endpoint),
                      group_id=req.group_id, messages=messages, max_tokens=req.max_tokens,
                      response_format=req.response_format,
                      text_messages=[*req.text_messages, said, note] if req.text_messages else None,
                      meta={**req.meta, "repair": True})


@dataclass
class Answer:
    """The last word of one view of a group: its request, result and parse (None: not usable)."""

    request: LLMRequest
    result: object
    parsed: Parsed | None
    asks: int = 1

    @property
    def usable(self) -> bool:
        return self.result.status == "ok" and self.parsed is not None and self.parsed.usable


def _parse_text(cfg, g: Group, prompt: PromptSpec, text: str | None) -> Parsed:
    example = prompt.example(len(g.candidates), g.quota) if prompt.example else ()
    return parse_selection(text, len(g.candidates), g.quota, bool(cfg.select.reasons), example=example)


def _parse(cfg, g: Group, prompt: PromptSpec, res) -> Parsed | None:
    return _parse_text(cfg, g, prompt, res.text) if res.status == "ok" else None


def _earlier_tries(ctx, asking: list[Group], texts, prompt: PromptSpec) -> tuple[dict, float]:
    """For each (group, view): the try to ask this run, skipping tries that earlier runs bought
    and found unusable even after their repair; and what those tries cost."""
    cfg = ctx.cfg
    cache = AnswerCache(ctx.run.uri("cache", "llm"))
    present = set(cache.keys())
    tries = {(g.group_id, v): 0 for g in asking for v in range(cfg.select.permutations)}
    spent = 0.0
    by_id = {g.group_id: g for g in asking}
    pending = list(tries)
    while pending:
        reqs = {k: _request(cfg, by_id[k[0]], texts, prompt, k[1], tries[k]) for k in pending}
        reqs = {k: r for k, r in reqs.items() if r.key in present}
        if not reqs:
            break
        recs = cache.load(r.key for r in reqs.values())
        repairs = {}
        for k, r in reqs.items():
            rec = recs.get(r.key)
            g = by_id[k[0]]
            p = _parse_text(cfg, g, prompt, rec.get("text")) if rec else None
            if p is not None and not p.usable:
                repairs[k] = (repair_request(cfg, r, rec.get("text"), p, len(g.candidates), g.quota), rec)
        pending = []
        for k, (rep, rec) in repairs.items():
            if rep.key not in present:
                continue
            rrec = cache.get(rep.key)
            g = by_id[k[0]]
            p = _parse_text(cfg, g, prompt, (rrec or {}).get("text"))
            if rrec is not None and not p.usable and tries[k] + 1 < MAX_TRIES:
                spent += float(rec.get("usd", 0.0)) + float(rrec.get("usd", 0.0))
                tries[k] += 1
                pending.append(k)
    return tries, spent


def ask_groups(ctx, asking: list[Group], texts: dict[str, dict], prompt: PromptSpec) -> dict[tuple, Answer]:
    """Every view of every group asked (tries of earlier runs skipped), unusable answers repaired once."""
    cfg = ctx.cfg
    tries, earlier = _earlier_tries(ctx, asking, texts, prompt)
    by_id = {g.group_id: g for g in asking}
    keys = list(tries)
    requests = [_request(cfg, by_id[k[0]], texts, prompt, k[1], tries[k]) for k in keys]
    results = send(ctx, requests, prior_usd=earlier)
    answers = {k: Answer(r, res, _parse(cfg, by_id[k[0]], prompt, res)) for k, r, res in zip(keys, requests, results)}
    broken = [k for k, a in answers.items() if a.result.status == "ok" and not a.usable]
    if broken:
        spent = earlier + sum(float(a.result.usd or 0.0) for a in answers.values())
        repairs = [repair_request(cfg, answers[k].request, answers[k].result.text, answers[k].parsed,
                                  len(by_id[k[0]].candidates), by_id[k[0]].quota) for k in broken]
        first_counts = dict(getattr(ctx, "llm_counts", {}))
        fixed = send(ctx, repairs, prior_usd=spent, log_name="repairs.jsonl")
        ctx.llm_counts = {**getattr(ctx, "llm_counts", {}), **first_counts}
        for k, req, res in zip(broken, repairs, fixed):
            before = answers[k]
            p = _parse(cfg, by_id[k[0]], prompt, res)
            classes = [*before.parsed.classes, REPAIRED, *(p.classes if p is not None else [])]
            parsed = Parsed(p.positions, p.problems, p.reasons, classes) if p is not None else \
                Parsed([], before.parsed.problems, [], classes)
            # the repair's outcome with the cost of both asks
            both = SimpleNamespace(status=res.status, text=res.text, error=res.error, cause=getattr(res, "cause", None),
                                   **{f: (getattr(before.result, f, 0) or 0) + (getattr(res, f, 0) or 0)
                                      for f in ("input_tokens", "output_tokens", "usd")})
            answers[k] = Answer(req, both, parsed, asks=2)
    return answers


def decision(g: Group, chosen: list[str], chosen_by: list[str], status: str, reason: str, result=None,
             chosen_reasons: list[str] | None = None, **extra) -> dict:
    """One decisions.parquet row; ``chosen_by`` says who picked each chosen id (llm|fallback|no_llm).
    ``extra``: the LLM columns (shown_order, picked_positions, parse, asks, agreement, cause)."""
    return {"group_id": g.group_id, "cluster_id": g.cluster_id, "candidate_ids": list(g.candidates),
            "chosen_ids": chosen, "chosen_by": chosen_by, "chosen_reasons": chosen_reasons or [""] * len(chosen),
            "status": status, "reason": reason,
            "input_tokens": int(getattr(result, "input_tokens", 0) or 0),
            "output_tokens": int(getattr(result, "output_tokens", 0) or 0),
            "usd": float(getattr(result, "usd", 0.0) or 0.0),
            "shown_order": None, "picked_positions": [], "parse": [], "asks": 0, "agreement": None, "cause": "",
            **extra}


def _draw(g: Group, exclude: list[str], k: int) -> list[str]:
    """``k`` candidates not in ``exclude``, in the order of the LLM-free draw."""
    return [g.candidates[i] for i in stable_permutation(g.candidates, "fallback") if g.candidates[i] not in exclude][:k]


def _cause(a: Answer) -> str:
    if a.result.status == "budget_stopped":
        return "budget_stopped"
    if a.result.status != "ok":
        return f"error: {getattr(a.result, 'cause', None) or 'request failed'}"
    bad = [c for c in (a.parsed.classes if a.parsed else []) if c in UNUSABLE_CLASSES or c == "echo_example"]
    return f"unusable: {bad[-1] if bad else 'no_ids'}"


def decide_answers(g: Group, views: list[Answer]) -> dict:
    """The decision of one group from the last word of each of its views."""
    cost = SimpleNamespace(**{f: sum(getattr(a.result, f, 0) or 0 for a in views)
                              for f in ("input_tokens", "output_tokens", "usd")})
    first = views[0]
    extra = {"shown_order": first.request.meta["order"], "asks": sum(a.asks for a in views),
             "parse": sorted({c for a in views if a.parsed for c in a.parsed.classes}),
             # 1-based shown positions of every pick of every usable answer
             "picked_positions": [p + 1 for a in views if a.usable for p in a.parsed.positions]}
    usable = [a for a in views if a.usable]
    if not usable:
        cause = _cause(first)
        status = {"budget_stopped": "budget_stopped"}.get(cause, "error" if cause.startswith("error") else "fallback")
        if status == "budget_stopped":
            reason = "llm.max_usd reached before this group"
        elif status == "error":
            reason = (first.result.error or "request failed")[:500]
        else:
            reason = "; ".join(first.parsed.problems if first.parsed else [])[:500] or "unusable answer"
        return decision(g, g.fallback(), ["fallback"] * g.quota, status, reason, cost, cause=cause, **extra)
    lists = [[a.request.meta["order"][p] for p in a.parsed.positions] for a in usable]
    said_by = {a.request.meta["order"][p]: why for a in usable for p, why in zip(a.parsed.positions, a.parsed.reasons)}
    problems = [x for a in usable for x in a.parsed.problems]
    if len(lists) == 2:  # two orders: keep what both agree on
        chosen_idx = [i for i in lists[0] if i in lists[1]][: g.quota]
        extra["agreement"] = len(chosen_idx) / g.quota
        if len(chosen_idx) < g.quota:
            problems.append(f"the two orders agreed on {len(chosen_idx)} of {g.quota} pick(s)")
    else:
        chosen_idx = lists[0]
        if len(views) == 2:
            problems.append("only one of the two orders gave a usable answer")
    chosen = [g.candidates[i] for i in chosen_idx]
    said = [said_by.get(i, "") for i in chosen_idx]
    chosen_by = ["llm"] * len(chosen)
    if len(chosen) < g.quota:  # top up with the LLM-free draw
        missing = g.quota - len(chosen)
        chosen += _draw(g, chosen, missing)
        chosen_by += ["fallback"] * missing
        said += [""] * missing
        problems.append(f"{missing} pick(s) topped up from the fallback order")
    return decision(g, chosen, chosen_by, "ok", "; ".join(problems)[:500], cost, said, **extra)


def decide_one(g: Group, result, reasons: bool = False, prompt: PromptSpec | None = None,
               order: list[int] | None = None) -> dict:
    """The decision of a group asked once (candidates shown in ``order``, default as planned)."""
    prompt = prompt or DEFAULT_PROMPT
    cfg = SimpleNamespace(select=SimpleNamespace(reasons=reasons))
    req = SimpleNamespace(meta={"order": order or list(range(len(g.candidates)))})
    return decide_answers(g, [Answer(req, result, _parse(cfg, g, prompt, result))])


def decide_groups(ctx, groups: list[Group], prompt: PromptSpec | None = None) -> list[dict]:
    prompt = prompt or DEFAULT_PROMPT
    asking = [g for g in groups if g.needs_llm]
    texts = lookup(ctx, sorted({c for g in asking for c in g.candidates}), ["instruction", "input"])
    answers = ask_groups(ctx, asking, texts, prompt) if asking else {}
    views = ctx.cfg.select.permutations
    decisions = []
    for g in groups:
        if g.needs_llm:
            decisions.append(decide_answers(g, [answers[(g.group_id, v)] for v in range(views)]))
        else:
            decisions.append(decision(g, list(g.candidates), ["no_llm"] * len(g.candidates), "ok",
                                      "cluster has no more rows than its quota; no LLM call"))
    return decisions


def selectllm_groups(cfg, pool) -> list[Group]:
    """The groups the ``selectllm`` strategy asks about (also used by ``selectllm estimate``):
    :func:`selectllm.select.plan.plan_groups`, planned by tasks over the assignment parts."""
    s = cfg.select
    return plan_groups_distributed(pool.fs, pool.files, pool.k, s.budget, s.picks_per_prompt,
                                   s.candidates_per_prompt, pool.tasks, allocation=s.allocation, seed=s.seed,
                                   covered=getattr(pool, "covered", None) if s.covered_quotas else None)


def selectllm_strategy(ctx, pool) -> StrategyResult:
    """One prompt per cluster: the LLM picks the most beneficial of a spread of its members."""
    groups = selectllm_groups(ctx.cfg, pool)
    ctx.log.print(f"select: {len(groups):,} groups planned over {pool.n:,} rows in {len(pool.files):,} parts"
                  f" ({'Ray tasks' if pool.remote else 'this process'}); "
                  f"{sum(g.needs_llm for g in groups) * ctx.cfg.select.permutations:,} LLM requests to send")
    decisions = decide_groups(ctx, groups)
    selected = [(cid, d["cluster_id"]) for d in decisions for cid in d["chosen_ids"]]
    return StrategyResult(selected, decisions)
