"""The one send path of every LLM strategy: cache-aware spend, the engine, the endpoint."""

from __future__ import annotations

from selectllm.llm.cache import AnswerCache
from selectllm.llm.client import llm_endpoint, run_requests, use_ray


def send(ctx, requests: list, prior_usd: float = 0.0, log_name: str = "requests.jsonl") -> list:
    """Send through the one LLM layer (cache, budget, rate limits); one result per request.

    All LLM state lives on the run directory's filesystem (local or object storage): the answer
    cache and the Batch API records under ``cache/llm/``, the request log in the stage's output,
    the simulator's log under ``logs/``.  The cache is read once (one listing, concurrent reads of
    the answers present): answers bought by an earlier (killed) run are used and count against
    ``llm.max_usd``.  ``llm.engine: ray`` starts (or joins) Ray for the async actor pool; ``auto``
    uses the pool when an earlier stage of this process started Ray.

    ``prior_usd``: spent on this selection beyond these requests' cached answers (earlier tries,
    the first asks of a repair round); it counts against ``llm.max_usd``.  ``log_name``: the
    stage's request log this call writes (one file per call: an object store cannot append).

    Sets ``ctx.llm_counts`` (for the stage's manifest counts) and prints one line when they change:
    ``structured_output`` (the response format the endpoint was asked in at the end:
    ``json_schema``, ``json_object_schema``, ``json_object`` or ``text``; see
    :mod:`selectllm.llm.policy`), ``structured_output_fallback`` (why it stepped down, when it
    did), ``reasoning`` (room left for a reasoning model's thinking).  Another endpoint's answers
    in this run dir's cache are never used; that they are there is printed.
    """
    if not requests:
        return []
    cfg = ctx.cfg
    cache_dir = ctx.run.uri("cache", "llm")
    if cfg.history.path:  # the programme's cache: no run buys an answer an earlier run bought
        cfg = _programme_capped(ctx)
        cache_dir = _history_cache(cfg)
    known = AnswerCache(cache_dir).load(r.key for r in requests)
    prior = prior_usd + sum(float(rec.get("usd", 0.0)) for rec in known.values())
    if cfg.llm.engine == "ray" and cfg.llm.mode == "online":
        from selectllm.engines import ray_init

        ray_init(cfg)
    report: dict = {}
    with llm_endpoint(cfg.llm, ctx.run.uri("logs", "simulator.jsonl")) as base_url:
        results = run_requests(requests, cfg.llm, cache_dir=cache_dir,
                               requests_log=ctx.run.staging_uri(ctx.out_path(log_name)),
                               base_url=base_url, prior_usd=prior, known=known, report=report,
                               **ray_pool_size(ctx, cfg.llm, requests))
    before = getattr(ctx, "llm_counts", None)
    ctx.llm_counts = llm_counts(requests, report)
    if ctx.llm_counts != before:  # a repair round that learnt nothing new prints nothing
        ctx.log.print(f"select: LLM {cfg.llm.endpoint} model {cfg.llm.model}: " + describe(ctx.llm_counts, report))
    return results


def ray_pool_size(ctx, llm, requests: list) -> dict:
    """The Ray LLM pool's actors and their CPUs, as the stage's ``Resources.workers`` sizes them for
    these requests (``select.stage.select_workers``); nothing when they do not go to a Ray pool."""
    if llm.mode != "online" or not use_ray(llm.engine):
        return {}
    sized = ctx.workers(requests=len({r.key for r in requests}))
    return {"actors": sized["llm_actors"], "actor_cpus": sized["llm_cpus_per_actor"]}


def _history_cache(cfg) -> str:
    from selectllm.history import History

    return History(cfg.history.path).uri("cache", "llm")


def _programme_capped(ctx):
    """``history.max_usd``: this run may spend what the earlier runs of the programme left (and
    at most ``llm.max_usd``); nothing left is one line before any request."""
    from selectllm.errors import UserError
    from selectllm.history import run_view

    cfg = ctx.cfg
    if cfg.history.max_usd is None:
        return cfg
    h, _, view = run_view(cfg, ctx.run)
    left = cfg.history.max_usd - h.spent(view)
    if left <= 0:
        raise UserError(f"history.max_usd={cfg.history.max_usd} is spent (${h.spent(view):.4f} by "
                        f"{sum(c['kind'] == 'run' for c in view)} earlier runs): raise it to select with the LLM")
    if left >= cfg.llm.max_usd:
        return cfg
    ctx.log.print(f"select: history.max_usd leaves ${left:.4f} of the programme's budget for this run")
    return cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"max_usd": left})})


def llm_counts(requests: list, report: dict) -> dict:
    structured = any(r.response_format is not None for r in requests)
    counts: dict = {"structured_output": report.get("structured_output", "json_schema") if structured else "text",
                    "reasoning": bool(report.get("reasoning"))}
    if structured and report.get("structured_fallback"):
        counts["structured_output_fallback"] = report["structured_fallback"]
    return counts


def describe(counts: dict, report: dict) -> str:
    out = f"structured output {counts['structured_output']}"
    if counts.get("structured_output_fallback"):
        out += f" (after {counts['structured_output_fallback']})"
    if counts.get("reasoning"):
        out += "; reasoning model: llm.reasoning_tokens of room per request"
    if report.get("other_endpoints"):
        out += f"; this run dir's cache also holds answers from {', '.join(report['other_endpoints'])} (not used)"
    return out
