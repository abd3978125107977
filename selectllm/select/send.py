"""The one send path of every LLM strategy: cache-aware spend, the engine, the endpoint."""

from __future__ import annotations

from selectllm.llm.cache import AnswerCache
from selectllm.llm.client import llm_endpoint, run_requests


def send(ctx, requests: list) -> list:
    """Send through the one LLM layer (cache, budget, rate limits); one result per request.

    Answers bought by an earlier (killed) run of the same requests count against ``llm.max_usd``.
    ``llm.engine: ray`` starts (or joins) Ray for the async actor pool; ``auto`` uses the pool when
    an earlier stage of this process started Ray.  The request log goes to the stage's output.
    """
    if not requests:
        return []
    cfg = ctx.cfg
    cache_dir = ctx.run.path("cache", "llm")
    cache = AnswerCache(cache_dir)
    prior = sum(float(rec.get("usd", 0.0)) for rec in (cache.get(r.key) for r in requests) if rec)
    if cfg.llm.engine == "ray" and cfg.llm.mode == "online":
        from selectllm.engines import ray_init

        ray_init(cfg)
    ctx.run.fs.makedirs(ctx.run.path("logs"), exist_ok=True)
    with llm_endpoint(cfg.llm, ctx.run.path("logs", "simulator.jsonl")) as base_url:
        return run_requests(requests, cfg.llm, cache_dir=cache_dir, requests_log=ctx.out_path("requests.jsonl"),
                            base_url=base_url, prior_usd=prior)
