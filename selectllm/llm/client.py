"""Send chat requests to an OpenAI-compatible endpoint: the project's only LLM retry layer.

:func:`run_requests` takes a list of :class:`LLMRequest` and returns one :class:`LLMResult` per
request, in the same order.  For each request, in this order:

1. **Cache** -- an answer stored under the request's key is returned without sending
   (``cached=True``); so is a second request with the same key in the same call.
2. **Budget** -- the request reserves its maximum cost (prompt tokens x input price +
   ``max_tokens`` x output price; for real endpoints the prompt estimate gets a
   :data:`PROMPT_MARGIN` safety margin because their tokenizer may differ from ours).  If the cap
   cannot hold it, even once in-flight requests have settled, the result is ``budget_stopped``
   and nothing is sent.  After the answer the reservation is settled to the billed ``usage``.
3. **Rate limits** -- one request and ``prompt + max_tokens`` tokens are booked in the token
   buckets (:mod:`selectllm.llm.limiter`) and the worker waits as long as they say; the tokens not
   used are refunded from ``usage``; ``x-ratelimit-*`` headers tighten the buckets; a 429's
   ``retry-after`` pauses every worker.
4. **Send** with ``openai.AsyncOpenAI(max_retries=0)`` (the SDK never retries on its own).
   429 / 5xx / timeouts / connection errors are retried with exponential backoff and full jitter
   (``retry-after`` honoured), up to ``llm.max_retries`` times.  400 / 404 / 409 / 422 are not
   retried: the result is ``error`` with the server's message.  401 / 403 and an exhausted quota
   raise :class:`~selectllm.errors.UserError`.  ``finish_reason == "length"`` gets one more try
   with twice the ``max_tokens`` (both attempts are billed and counted).
5. **Store** the answer in the cache *before* it is returned.

Structured outputs (``llm.structured_output``): ``on`` sends each request's ``response_format``,
``off`` never does, ``auto`` sends it but, if the endpoint rejects it with a 400, resends once
without it and stops sending it for the rest of the run.  Likewise an endpoint that rejects
``max_tokens`` (newer OpenAI models) gets ``max_completion_tokens``, and one that rejects
``temperature`` gets none, for the rest of the run.

The API key comes from the environment variable ``llm.api_key_env`` (provider ``simulator``: a
dummy key when unset) and never appears in a message, log line or file: error texts are scrubbed.

:class:`LLMRunner` is the async engine behind :func:`run_requests`; its limiter and budget are
duck-typed async objects (:class:`LocalLimiter`, :class:`LocalBudget`) so a Ray actor pool can
pass handles to shared ones instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

import fsspec
import openai

from selectllm.config import LLMConfig
from selectllm.errors import UserError
from selectllm.llm.budget import Budget, cost_usd, max_request_cost
from selectllm.llm.cache import AnswerCache
from selectllm.llm.limiter import RateLimiter, retry_after_seconds
from selectllm.llm.tokens import count_message_tokens, count_text_tokens
from selectllm.llm.types import LLMRequest, LLMResult

log = logging.getLogger("selectllm.llm")

SIMULATOR_DUMMY_KEY = "sk-selectllm-simulator"
PROMPT_MARGIN = (1.10, 16)  # real endpoints: reserve ceil(prompt * 1.10) + 16 prompt tokens
KEY_HEADER = "X-Selectllm-Key"


# --------------------------------------------------------------------------- local limiter / budget


class LocalLimiter:
    """Async face of :class:`RateLimiter` on this process's monotonic clock."""

    def __init__(self, rpm: float, tpm: float) -> None:
        self.rl = RateLimiter(rpm, tpm, now=time.monotonic())

    async def reserve(self, tokens: float) -> float:
        return self.rl.reserve(tokens, time.monotonic())

    async def refund(self, tokens: float, request: bool = False) -> None:
        now = time.monotonic()
        self.rl.refund(tokens, now)
        if request:
            self.rl.refund_request(now)

    async def pause_for(self, seconds: float) -> None:
        self.rl.pause_until(time.monotonic() + seconds)

    async def pause_remaining(self) -> float:
        return self.rl.pause_remaining(time.monotonic())

    async def observe(self, headers: Any, in_flight_requests: int = 0, in_flight_tokens: float = 0) -> None:
        self.rl.observe_headers(headers, time.monotonic(), in_flight_requests, in_flight_tokens)


class LocalBudget:
    """Async face of :class:`Budget`."""

    def __init__(self, max_usd: float, spent: float = 0.0) -> None:
        self.b = Budget(max_usd, spent=spent)

    async def try_reserve(self, usd: float) -> bool:
        return self.b.try_reserve(usd)

    async def could_fit_later(self, usd: float) -> bool:
        return self.b.could_fit_later(usd)

    async def settle(self, reserved: float, actual: float) -> None:
        self.b.settle(reserved, actual)

    async def spent(self) -> float:
        return self.b.spent


# --------------------------------------------------------------------------- helpers


def resolve_api_key(cfg: LLMConfig) -> str:
    key = os.environ.get(cfg.api_key_env, "").strip()
    if key:
        return key
    if cfg.provider == "simulator":
        return SIMULATOR_DUMMY_KEY
    raise UserError(f"llm.provider is {cfg.provider} but the environment variable {cfg.api_key_env} "
                    f"(llm.api_key_env) holding the API key is not set")


class _BadBody(Exception):
    """A 2xx answer whose body is not a chat completion (a proxy's HTML page, ...): retried."""


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


class _RequestsLog:
    """One JSON line per request: appended live to a local file; buffered for remote URLs."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.buffer: list[str] = []
        self.f = None
        if url and _is_local(url):
            path = url[len("file://"):] if url.startswith("file://") else url
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.f = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, rec: dict) -> None:
        if not self.url:
            return
        line = json.dumps(rec, sort_keys=True)
        if self.f is not None:
            self.f.write(line + "\n")
        else:
            self.buffer.append(line)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        elif self.url and self.buffer:
            with fsspec.open(self.url, "w", encoding="utf-8") as f:
                f.write("\n".join(self.buffer) + "\n")
            self.buffer = []


# --------------------------------------------------------------------------- the runner


class LLMRunner:
    """Sends :class:`LLMRequest` objects concurrently under a budget and rate limits."""

    def __init__(
        self,
        cfg: LLMConfig,
        cache_dir: str,
        *,
        base_url: str | None = None,
        requests_log: str | None = None,
        limiter: Any = None,
        budget: Any = None,
        retry_base_s: float = 0.5,
        retry_cap_s: float = 30.0,
        seed: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.cache = AnswerCache(cache_dir)
        self.base_url = base_url or cfg.base_url
        if cfg.provider == "simulator" and not self.base_url:
            raise UserError("llm.provider is simulator but no base URL was given: start one with "
                            "llm_endpoint(cfg) (or set llm.base_url)")
        self.api_key = resolve_api_key(cfg)
        self.limiter = limiter or LocalLimiter(cfg.rpm, cfg.tpm)
        self.budget = budget or LocalBudget(cfg.max_usd)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.rng = random.Random(seed)
        self.log = _RequestsLog(requests_log)
        self._client: openai.AsyncOpenAI | None = None
        self._rf_rejected = False  # auto structured outputs: endpoint said no
        self._max_tokens_param = "max_tokens"
        self._send_temperature = True
        self._in_flight = 0
        self._in_flight_tokens = 0.0
        self._by_key: dict[str, asyncio.Future] = {}
        self._settled = asyncio.Event()
        self.counters = {"sent": 0, "cached": 0, "retries": 0, "unknown_billing_usd": 0.0}

    # ---- plumbing
    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            kwargs: dict[str, Any] = {"api_key": self.api_key, "max_retries": 0, "timeout": self.cfg.timeout_s}
            if self.base_url:
                kwargs["base_url"] = self.base_url
            self._client = openai.AsyncOpenAI(**kwargs)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.log.close()

    def _scrub(self, msg: str) -> str:
        if self.api_key and len(self.api_key) >= 4:
            msg = msg.replace(self.api_key, "***")
        return msg.replace("\n", " ")[:500]

    def _prompt_estimate(self, prompt_tokens: int) -> int:
        if self.cfg.provider == "simulator":
            return prompt_tokens
        return math.ceil(prompt_tokens * PROMPT_MARGIN[0]) + PROMPT_MARGIN[1]

    async def _settle(self, reserved: float, actual: float) -> None:
        await self.budget.settle(reserved, actual)
        self._settled.set()
        self._settled = asyncio.Event()

    async def _reserve_budget(self, usd: float) -> bool:
        while True:
            if await self.budget.try_reserve(usd):
                return True
            if not await self.budget.could_fit_later(usd):
                return False
            ev = self._settled
            try:
                await asyncio.wait_for(ev.wait(), timeout=0.2)  # remote budgets: poll
            except asyncio.TimeoutError:
                pass

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        jitter = self.rng.uniform(0, min(self.retry_cap_s, self.retry_base_s * 2 ** (failures - 1)))
        if retry_after is not None:
            return retry_after + self.rng.uniform(0, 0.1 * max(retry_after, self.retry_base_s))
        return jitter

    def _send_rf(self, req: LLMRequest) -> bool:
        if req.response_format is None or self.cfg.structured_output == "off":
            return False
        if self.cfg.structured_output == "on":
            return True
        return not self._rf_rejected

    # ---- one request
    async def run_one(self, req: LLMRequest) -> LLMResult:
        rec = await self._cache_get(req.key)
        if rec is not None:
            self.counters["cached"] += 1
            return self._finish(req, self._from_record(req, rec))
        fut = self._by_key.get(req.key)
        if fut is not None:  # same key earlier in this call: never pay twice
            first: LLMResult = await asyncio.shield(fut)
            self.counters["cached"] += 1
            if first.status == "ok":  # like a cache hit: the figures of the one purchase
                res = LLMResult(**{**first.to_dict(), "group_id": req.group_id, "cached": True, "attempts": 0})
            else:  # same outcome, nothing billed twice
                res = LLMResult(**{**first.to_dict(), "group_id": req.group_id, "attempts": 0,
                                   "input_tokens": 0, "output_tokens": 0, "usd": 0.0})
            return self._finish(req, res)
        fut = asyncio.get_running_loop().create_future()
        self._by_key[req.key] = fut
        try:
            res = await self._send(req)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()  # mark retrieved
            self._by_key.pop(req.key, None)
            raise
        fut.set_result(res)
        del self._by_key[req.key]  # later duplicates find the answer in the cache
        return self._finish(req, res)

    async def _cache_get(self, key: str) -> dict | None:
        if self.cache.local:
            return self.cache.get(key)
        return await asyncio.to_thread(self.cache.get, key)

    async def _cache_put(self, key: str, rec: dict) -> None:
        if self.cache.local:
            self.cache.put(key, rec)
        else:
            await asyncio.to_thread(self.cache.put, key, rec)

    def _from_record(self, req: LLMRequest, rec: dict) -> LLMResult:
        return LLMResult(key=req.key, group_id=req.group_id, status="ok", text=rec.get("text"),
                         finish_reason=rec.get("finish_reason"), input_tokens=int(rec.get("input_tokens", 0)),
                         output_tokens=int(rec.get("output_tokens", 0)), usd=float(rec.get("usd", 0.0)),
                         attempts=0, cached=True)

    def _finish(self, req: LLMRequest, res: LLMResult) -> LLMResult:
        self.log.write({"key": req.key, "status": res.status, "attempts": res.attempts, "cached": res.cached,
                        "input_tokens": res.input_tokens, "output_tokens": res.output_tokens,
                        "usd": res.usd, **({"error": res.error} if res.error else {})})
        return res

    async def _send(self, req: LLMRequest) -> LLMResult:
        cfg, model = self.cfg, self.cfg.model
        prompt_tokens = count_message_tokens(req.messages, model)
        est_prompt = self._prompt_estimate(prompt_tokens)
        max_tokens = int(req.max_tokens)
        attempts = failures = 0
        billed_in = billed_out = 0
        billed_usd = 0.0
        partial: tuple[str, str | None] | None = None  # (text, finish_reason) of a 'length' answer

        def result(status: str, **kw: Any) -> LLMResult:
            return LLMResult(key=req.key, group_id=req.group_id, status=status,  # type: ignore[arg-type]
                             input_tokens=billed_in, output_tokens=billed_out, usd=billed_usd,
                             attempts=attempts, **kw)

        async def done_ok(text: str, finish_reason: str | None, structured: bool) -> LLMResult:
            rec = {"key": req.key, "model": model, "text": text, "finish_reason": finish_reason,
                   "input_tokens": billed_in, "output_tokens": billed_out, "usd": billed_usd,
                   "attempts": attempts, "structured": structured, "created": time.time()}
            await self._cache_put(req.key, rec)  # durable before use
            return result("ok", text=text, finish_reason=finish_reason)

        while True:
            need_tokens = est_prompt + max_tokens
            if need_tokens > cfg.tpm:
                return result("error", error=f"request needs {need_tokens} tokens, more than llm.tpm={cfg.tpm} "
                                             f"allows per minute")
            max_cost = max_request_cost(est_prompt, max_tokens, cfg.price)
            if not await self._reserve_budget(max_cost):
                if partial is not None:  # keep the truncated answer we already paid for
                    return await done_ok(partial[0], partial[1], self._send_rf(req))
                return result("budget_stopped", error=f"llm.max_usd={cfg.max_usd} cannot cover this request "
                                                      f"(up to ${max_cost:.6f})")
            wait = await self.limiter.reserve(need_tokens)
            while True:
                if wait > 0:
                    await asyncio.sleep(wait)
                wait = await self.limiter.pause_remaining()
                if wait <= 0:
                    break

            send_rf = self._send_rf(req)
            kwargs: dict[str, Any] = {"model": model, "messages": req.messages,
                                      self._max_tokens_param: max_tokens,
                                      "extra_headers": {KEY_HEADER: req.key}}
            if self._send_temperature:
                kwargs["temperature"] = cfg.temperature
            if send_rf:
                kwargs["response_format"] = req.response_format
            attempts += 1
            self.counters["sent"] += 1
            self._in_flight += 1
            self._in_flight_tokens += need_tokens
            err: Exception | None = None
            try:
                raw = await self.client.chat.completions.with_raw_response.create(**kwargs)
                headers = raw.headers
                completion = raw.parse()
                if not hasattr(completion, "choices"):
                    raise _BadBody(f"HTTP {raw.status_code} answer is not a chat completion")
            except (openai.APIError, _BadBody) as e:
                err = e
            finally:
                self._in_flight -= 1
                self._in_flight_tokens -= need_tokens

            if isinstance(err, openai.APIStatusError):
                await self._settle(max_cost, 0.0)
                status = err.status_code
                code = getattr(err, "code", None)
                msg = self._scrub(getattr(err, "message", str(err)))
                if status in (401, 403):
                    raise UserError(
                        f"the LLM endpoint ({self.base_url or 'OpenAI'}) rejected the API key from "
                        f"${cfg.api_key_env} (HTTP {status})") from None
                retry_after = retry_after_seconds(err.response.headers)
                if status == 429:
                    await self.limiter.refund(need_tokens, request=True)
                    if code == "insufficient_quota":
                        raise UserError(f"the LLM account has no quota left (HTTP 429 insufficient_quota) at "
                                        f"{self.base_url or 'OpenAI'}") from None
                    if code == "request_too_large":
                        return result("error", error=msg)
                    if retry_after is not None:
                        await self.limiter.pause_for(retry_after)
                elif status >= 500:
                    await self.limiter.refund(need_tokens)
                else:
                    await self.limiter.refund(need_tokens, request=True)
                    if status == 400 and self._adapt_to_rejection(err, send_rf):
                        continue
                    return result("error", error=msg)
            elif isinstance(err, openai.APITimeoutError):
                # the server may have billed it: keep the reservation as spent (the cap stays hard)
                await self._settle(max_cost, max_cost)
                self.counters["unknown_billing_usd"] += max_cost
                msg, retry_after = "request timed out", None
            elif err is not None:  # connection error, or a 200 whose body is not a completion
                await self._settle(max_cost, 0.0)
                await self.limiter.refund(need_tokens)
                msg, retry_after = self._scrub(getattr(err, "message", None) or str(err)), None
            if err is not None:
                failures += 1
                if failures > cfg.max_retries:
                    return result("error", error=f"gave up after {attempts} attempts: {msg}")
                self.counters["retries"] += 1
                log.debug("retrying %s after: %s", req.key[:12], msg)
                await asyncio.sleep(self._backoff(failures, retry_after))
                continue

            # ---- a 200 answer
            choice = completion.choices[0] if completion.choices else None
            text = (choice.message.content if choice is not None and choice.message is not None else None) or ""
            finish = choice.finish_reason if choice is not None else None
            usage = completion.usage
            in_t = int(usage.prompt_tokens) if usage is not None else prompt_tokens
            out_t = int(usage.completion_tokens) if usage is not None else count_text_tokens(text, model)
            actual = cost_usd(in_t, out_t, cfg.price)
            await self._settle(max_cost, actual)
            await self.limiter.refund(need_tokens - (in_t + out_t))
            await self.limiter.observe(headers, self._in_flight, self._in_flight_tokens)
            billed_in += in_t
            billed_out += out_t
            billed_usd += actual
            if finish == "length" and partial is None:
                partial = (text, finish)
                max_tokens *= 2
                continue
            return await done_ok(text, finish, send_rf)

    def _adapt_to_rejection(self, e: openai.APIStatusError, sent_rf: bool) -> bool:
        """A 400 that a different request shape avoids: adapt for the rest of the run."""
        param = (getattr(e, "param", None) or "").lower()
        msg = (getattr(e, "message", "") or "").lower()
        if getattr(e, "code", None) == "context_length_exceeded":
            return False
        if sent_rf and self.cfg.structured_output == "auto" and (
                param == "response_format" or "response_format" in msg or "json_schema" in msg):
            if not self._rf_rejected:
                log.warning("the LLM endpoint rejected response_format; sending requests without it")
            self._rf_rejected = True
            return True
        if self._max_tokens_param == "max_tokens" and (param == "max_tokens" or "max_completion_tokens" in msg):
            log.warning("the LLM endpoint rejected max_tokens; using max_completion_tokens")
            self._max_tokens_param = "max_completion_tokens"
            return True
        if self._send_temperature and param == "temperature":
            log.warning("the LLM endpoint rejected temperature; sending requests without it")
            self._send_temperature = False
            return True
        return False

    # ---- many requests
    async def run(self, requests: list[LLMRequest], progress: bool = False) -> list[LLMResult]:
        n = len(requests)
        results: list[LLMResult | None] = [None] * n
        if n == 0:
            return []
        bar = _Progress(n, progress)
        it = iter(range(n))

        async def worker() -> None:
            for i in it:
                results[i] = await self.run_one(requests[i])
                bar.advance(results[i])

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.cfg.concurrency, n))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            bar.close()
        return results  # type: ignore[return-value]


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.p = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("LLM requests"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[usd]}"), TimeRemainingColumn(),
                              console=Console(stderr=True), transient=False)
            self.usd = 0.0
            self.task = self.p.add_task("llm", total=total, usd="$0.0000")
            self.p.start()

    def advance(self, res: LLMResult | None) -> None:
        if self.p is not None:
            if res is not None and not res.cached:
                self.usd += res.usd
            self.p.update(self.task, advance=1, usd=f"${self.usd:.4f}")

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()
            self.p = None


# --------------------------------------------------------------------------- public entry points


async def run_requests_async(
    requests: list[LLMRequest],
    cfg: LLMConfig,
    cache_dir: str,
    requests_log: str | None = None,
    base_url: str | None = None,
    progress: bool = False,
    **runner_kwargs: Any,
) -> list[LLMResult]:
    runner = LLMRunner(cfg, cache_dir, base_url=base_url, requests_log=requests_log, **runner_kwargs)
    try:
        return await runner.run(requests, progress=progress)
    finally:
        await runner.aclose()


def run_requests(
    requests: list[LLMRequest],
    cfg: LLMConfig,
    cache_dir: str,
    requests_log: str | None = None,
    base_url: str | None = None,
    progress: bool = True,
    **runner_kwargs: Any,
) -> list[LLMResult]:
    """Send ``requests`` (see module doc); results come back in the same order.

    ``runner_kwargs`` go to :class:`LLMRunner` (``retry_base_s``, ``retry_cap_s``, ``seed``,
    ``limiter``, ``budget``).  Safe to call from inside a running event loop (it then runs in a
    helper thread).  Raises :class:`UserError` for a missing or rejected API key.
    """
    def go() -> list[LLMResult]:
        return asyncio.run(run_requests_async(requests, cfg, cache_dir, requests_log, base_url,
                                              progress, **runner_kwargs))

    resolve_api_key(cfg)  # fail fast, before any thread or loop
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    if not in_loop:
        return go()
    with ThreadPoolExecutor(max_workers=1) as ex:
        return ex.submit(go).result()


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
