"""Send chat requests to an OpenAI-compatible endpoint, online (``llm.mode: online``).  Retries and
errors follow :mod:`selectllm.llm.policy`, the one policy this path and the Batch API path
(:mod:`selectllm.llm.batch`) share; the SDK's own retries are off.

:func:`run_requests` takes a list of :class:`LLMRequest` and returns one :class:`LLMResult` per
request, in the same order.  For each request, in this order:

1. **Cache** -- an answer stored under the request's key is returned without sending
   (``cached=True``); so is a second request with the same key in the same call.
2. **Gate** (:mod:`selectllm.llm.gate`, one call) -- the request reserves its maximum cost
   (prompt tokens x input price + ``max_tokens`` x output price; for real endpoints the prompt
   estimate gets a :data:`PROMPT_MARGIN` safety margin because their tokenizer may differ from
   ours) under ``llm.max_usd`` (counting ``prior_usd``, already spent).  If the cap cannot hold
   it, even once in-flight requests have settled, the result is ``budget_stopped`` and nothing is
   sent.  Then one request and ``prompt + max_tokens`` tokens are booked in the token buckets
   (:mod:`selectllm.llm.limiter`) and the worker waits as long as they say (and through any
   shared 429 pause).
3. **Send** with ``openai.AsyncOpenAI(max_retries=0)`` (the SDK never retries on its own).
   429 / 5xx / timeouts / connection errors are retried with exponential backoff and full jitter
   (``retry-after`` honoured), up to ``llm.max_retries`` times.  400 / 404 / 409 / 422 are not
   retried: the result is ``error`` with the server's message (``context_length_exceeded`` says
   so).  401 / 403 and an exhausted quota raise :class:`~selectllm.errors.UserError`.
   ``finish_reason == "length"`` gets one more try with twice the ``max_tokens`` (both attempts
   are billed and counted).
4. **Gate again** (second call, not awaited) -- the reservation is settled to the billed
   ``usage``, unused tokens are refunded, ``x-ratelimit-*`` headers tighten the buckets, a 429's
   ``retry-after`` pauses every worker.
5. **Store** the answer in the cache *before* it is returned.

Structured outputs (``llm.structured_output``, :class:`~selectllm.llm.policy.RequestShape`):
``auto`` negotiates down :data:`~selectllm.llm.policy.LADDER` -- ``json_schema`` (OpenAI, vLLM),
``json_object_schema`` (llama.cpp's ``{"type": "json_object", "schema": ...}``), ``json_object``,
``text`` (each request's ``text_messages``, no response format) -- one rung each time the endpoint
shows it cannot do one: a rejection *naming* the response format, whatever its status (llama-cpp-python
says 500; that request is resent at once one rung down, unbilled, never retried as a transient
5xx), or a 200 answer that is not JSON (kept: it is usable).  The Ray pool's actors share what
they learn.  A fixed form is always sent; its rejection is a final error (cause
``format_rejected``).  ``report`` receives ``structured_output`` (the rung reached),
``structured_fallback`` (why it moved, or None), ``reasoning`` and ``other_endpoints``.  Likewise
an endpoint that rejects ``max_tokens`` (newer OpenAI models) gets ``max_completion_tokens``, and
one that rejects ``temperature`` or ``reasoning_effort`` gets none, for the rest of the run.

Reasoning models (``llm.reasoning``): a model known to reason by its name, or an endpoint that
reports ``usage.completion_tokens_details.reasoning_tokens``, gets ``llm.reasoning_tokens`` more
answer tokens per request (reserved under the cap like any others); ``llm.reasoning_effort`` is
passed through.  An empty answer (all of ``max_tokens`` spent thinking) is an ``error`` with
cause ``empty``, never stored as an answer.

Every result that is not ``ok`` has a ``cause`` (:data:`~selectllm.llm.types.CAUSES`:
unreachable, timeout, http_4xx, http_5xx, rate_limited, bad_body, format_rejected,
context_length, empty, budget; an ``ok`` answer cut at ``max_tokens`` has ``truncated``), also in
each line of the request log.

The cache key names the endpoint (``simulator`` or ``provider:base URL``) and the model
(:func:`~selectllm.llm.types.request_key`): a run dir first used with the simulator and then
pointed at a real server asks the server.  ``<cache dir>/endpoints.json`` lists who answered into
the folder; another endpoint there is logged as a warning.

Engines (``llm.engine`` / ``engine=``): ``local`` runs :class:`LLMRunner` on asyncio in this
process with a :class:`LocalGate`; ``ray`` runs one runner per actor of an async Ray actor pool,
all sharing one limiter actor (:mod:`selectllm.llm.ray_pool`); ``auto`` picks Ray when this
process is connected to it.  ``llm.mode: batch`` goes through the Batch API instead
(:mod:`selectllm.llm.batch`).  Same interface, same results.

Graceful stop: in the main thread, the first SIGINT/SIGTERM stops sending, lets the requests in
flight finish and be stored, then :class:`LLMInterrupted` (a one-line UserError) is raised; a
second signal does what it did before.

The API key comes from the environment variable ``llm.api_key_env`` (provider ``simulator``: a
dummy key when unset) and never appears in a message, log line or file: error texts are scrubbed;
Ray actors get it as a :class:`Secret`.
"""


from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

from selectllm.config import LLMConfig
from selectllm.llm.cache import AnswerCache
from selectllm.llm.records import resolve_api_key
from selectllm.llm.runner import run_requests_async
from selectllm.llm.types import LLMRequest, LLMResult

log = logging.getLogger("selectllm.llm")

def use_ray(engine: str) -> bool:
    """``llm.engine``: ``ray`` / ``local``, or ``auto`` = Ray when this process is connected to it."""
    if engine == "ray":
        return True
    if engine == "local":
        return False
    ray = sys.modules.get("ray")
    return bool(ray is not None and getattr(ray, "is_initialized", lambda: False)())


def run_requests(
    requests: list[LLMRequest],
    cfg: LLMConfig,
    cache_dir: str,
    requests_log: str | None = None,
    base_url: str | None = None,
    progress: bool = True,
    *,
    prior_usd: float = 0.0,
    engine: str | None = None,
    known: dict[str, dict] | None = None,
    report: dict | None = None,
    **runner_kwargs: Any,
) -> list[LLMResult]:
    """Send ``requests`` (see module doc); results come back in the same order.

    ``prior_usd``: already spent on this selection (answers bought by an earlier, killed run);
    it counts against ``llm.max_usd``.  ``engine`` (default ``llm.engine``): ``local`` (asyncio in
    this process), ``ray`` (:mod:`selectllm.llm.ray_pool`: async actor pool + one shared limiter
    actor), ``auto`` (Ray when this process is connected to Ray).  ``llm.mode: batch`` uses the
    Batch API (:mod:`selectllm.llm.batch`) whatever the engine.  Same interface and results.

    ``known``: cache records already read for these keys (:meth:`AnswerCache.load`: one listing,
    concurrent reads); a key in it is not read again.  ``report``, if given, receives what was
    negotiated (see module doc).

    ``runner_kwargs`` go to :class:`LLMRunner` (``retry_base_s``, ``retry_cap_s``, ``seed``;
    batch mode: ``poll_s``).  Safe to call from inside a running event loop (it then runs in a
    helper thread).  Raises :class:`UserError` for a missing or rejected API key, and
    :class:`LLMInterrupted` after a graceful stop (SIGINT/SIGTERM, main thread only).
    """
    api_key = resolve_api_key(cfg)  # fail fast, before any thread, loop or actor
    others = AnswerCache(cache_dir).note_endpoint(cfg.endpoint, cfg.model) if requests else []
    if others:
        log.warning("the LLM cache %s also holds answers from %s; none is used for %s model %s",
                    cache_dir, ", ".join(others), cfg.endpoint, cfg.model)
    if report is not None:
        report["other_endpoints"] = others
    if cfg.mode == "batch":
        from selectllm.llm.batch import run_batch

        return run_batch(requests, cfg, cache_dir, requests_log=requests_log, base_url=base_url,
                         progress=progress, prior_usd=prior_usd, api_key=api_key, known=known, report=report,
                         **runner_kwargs)
    if use_ray(engine or cfg.engine):
        from selectllm.llm.ray_pool import run_requests_ray

        return run_requests_ray(requests, cfg, cache_dir, requests_log=requests_log, base_url=base_url,
                                progress=progress, prior_usd=prior_usd, api_key=api_key, known=known,
                                report=report, **runner_kwargs)

    def go(signals: bool) -> list[LLMResult]:
        return asyncio.run(run_requests_async(requests, cfg, cache_dir, requests_log, base_url, progress,
                                              stop_on_signals=signals, prior_usd=prior_usd, api_key=api_key,
                                              known=known, report=report, **runner_kwargs))

    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    if not in_loop:
        return go(True)
    with ThreadPoolExecutor(max_workers=1) as ex:
        return ex.submit(go, False).result()


@contextmanager
def llm_endpoint(cfg: LLMConfig, log_path: str | None = None) -> Iterator[str | None]:
    """The base URL to talk to: for provider ``simulator`` without ``llm.base_url``, a simulator
    subprocess started from ``llm.simulator`` for the duration of the block (any model name
    accepted); otherwise ``llm.base_url`` (None = OpenAI's default)."""
    if cfg.provider == "simulator" and not cfg.base_url:
        from selectllm.llm.simulator import start_simulator

        with start_simulator(cfg.simulator, log_path, models=None) as handle:
            yield handle.base_url
    else:
        yield cfg.base_url
