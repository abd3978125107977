"""Send chat requests to an OpenAI-compatible endpoint: the project's only LLM retry layer.

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

Structured outputs (``llm.structured_output``): ``on`` sends each request's ``response_format``,
``off`` never does, ``auto`` sends it but, if the endpoint rejects it with a 400, resends once
without it and stops sending it for the rest of the run.  Likewise an endpoint that rejects
``max_tokens`` (newer OpenAI models) gets ``max_completion_tokens``, and one that rejects
``temperature`` gets none, for the rest of the run.

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
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import fsspec
import openai

from selectllm.config import LLMConfig
from selectllm.errors import UserError
from selectllm.llm.budget import cost_usd, max_request_cost
from selectllm.llm.cache import AnswerCache
from selectllm.llm.gate import LATER, OK, Gate
from selectllm.llm.limiter import retry_after_seconds
from selectllm.llm.tokens import count_message_tokens, count_text_tokens
from selectllm.llm.types import LLMRequest, LLMResult

log = logging.getLogger("selectllm.llm")

SIMULATOR_DUMMY_KEY = "sk-selectllm-simulator"
PROMPT_MARGIN = (1.10, 16)  # real endpoints: reserve ceil(prompt * 1.10) + 16 prompt tokens
KEY_HEADER = "X-Selectllm-Key"


# --------------------------------------------------------------------------- local gate


class LocalGate:
    """A :class:`~selectllm.llm.gate.Gate` in this process, on this process's monotonic clock.

    The runner's interface to a gate (duck-typed, see :class:`selectllm.llm.ray_pool.ActorGate`
    for the one in a Ray actor): ``await acquire(usd, tokens) -> (state, wait_s)``,
    ``complete(**kw)`` (fire and forget), ``pause_remaining() -> s``, ``await wait_settled(timeout)``,
    ``await flush()``.
    """

    def __init__(self, rpm: float, tpm: float, max_usd: float, spent: float = 0.0) -> None:
        self.gate = Gate(rpm, tpm, max_usd, spent=spent, now=time.monotonic())
        self._changed: asyncio.Event | None = None

    async def acquire(self, usd: float, tokens: float) -> tuple[str, float]:
        state, wait, _ = self.gate.acquire(usd, tokens, time.monotonic())
        return state, wait

    def complete(self, **kw: Any) -> None:
        self.gate.complete(time.monotonic(), **kw)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def pause_remaining(self) -> float:
        return self.gate.limiter.pause_remaining(time.monotonic())

    async def wait_settled(self, timeout: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout=timeout)
        except asyncio.TimeoutError:
            pass

    async def flush(self) -> None:
        return None

    @property
    def spent(self) -> float:
        return self.gate.budget.spent


class LLMInterrupted(UserError):
    """SIGINT/SIGTERM: requests in flight were finished and stored, the rest were not sent."""


class Secret:
    """A value that never prints (``repr``/``str`` give ``***``): how the API key travels to
    Ray pool actors (as a constructor argument, never in a runtime_env, log or file)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __getstate__(self) -> str:
        return self._value

    def __setstate__(self, state: str) -> None:
        self._value = state


RATELIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                     "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens")


def ratelimit_headers(headers: Any) -> dict[str, str] | None:
    """The few headers the gate reads (small enough to send to a Ray actor)."""
    if not headers:
        return None
    out = {k: headers.get(k) for k in RATELIMIT_HEADERS if headers.get(k) is not None}
    return out or None


def log_record(req: LLMRequest, res: LLMResult) -> dict:
    """One line of ``select/requests.jsonl``."""
    return {"key": req.key, "status": res.status, "attempts": res.attempts, "cached": res.cached,
            "input_tokens": res.input_tokens, "output_tokens": res.output_tokens,
            "usd": res.usd, **({"error": res.error} if res.error else {})}


def duplicate_result(first: LLMResult, req: LLMRequest) -> LLMResult:
    """A second request with the same key in one call: never paid twice."""
    if first.status == "ok":  # like a cache hit: the figures of the one purchase
        return LLMResult(**{**first.to_dict(), "group_id": req.group_id, "cached": True, "attempts": 0})
    return LLMResult(**{**first.to_dict(), "group_id": req.group_id, "attempts": 0,  # same outcome, not billed
                        "input_tokens": 0, "output_tokens": 0, "usd": 0.0})


class _Stopped(Exception):
    """Internal: the run was asked to stop before this request was sent."""


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
    """Sends :class:`LLMRequest` objects concurrently under a budget and rate limits.

    ``gate``: a :class:`LocalGate` by default (``llm.rpm``/``llm.tpm``/``llm.max_usd``, with
    ``prior_usd`` already spent); a Ray pool passes an :class:`~selectllm.llm.ray_pool.ActorGate`
    shared by every pool actor.  ``api_key`` overrides the environment lookup (Ray pool actors get
    the driver's key).  At most ``llm.concurrency`` requests of this runner are in progress at once,
    across concurrent :meth:`run` calls.
    """

    def __init__(
        self,
        cfg: LLMConfig,
        cache_dir: str,
        *,
        base_url: str | None = None,
        requests_log: str | None = None,
        gate: Any = None,
        prior_usd: float = 0.0,
        api_key: str | None = None,
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
        self.api_key = api_key or resolve_api_key(cfg)
        self.gate = gate or LocalGate(cfg.rpm, cfg.tpm, cfg.max_usd, spent=prior_usd)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.rng = random.Random(seed)
        self.log = _RequestsLog(requests_log)
        self._client: openai.AsyncOpenAI | None = None
        self._rf_rejected = False  # auto structured outputs: endpoint said no
        self._max_tokens_param = "max_tokens"
        self._send_temperature = True
        self._by_key: dict[str, asyncio.Future] = {}
        self._slots: asyncio.Semaphore | None = None
        self._stop_event: asyncio.Event | None = None
        self.stopping = False
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

    def request_stop(self) -> None:
        """Send nothing new; requests already sent are finished and stored (graceful stop)."""
        self.stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    async def _nap(self, seconds: float) -> None:
        """Sleep, but wake up at once when a stop is requested."""
        if seconds <= 0:
            return
        if self._stop_event is None:
            self._stop_event = asyncio.Event()
            if self.stopping:
                self._stop_event.set()
        try:
            await asyncio.wait_for(self._stop_event.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    def _scrub(self, msg: str) -> str:
        if self.api_key and len(self.api_key) >= 4:
            msg = msg.replace(self.api_key, "***")
        return msg.replace("\n", " ")[:500]

    def _prompt_estimate(self, prompt_tokens: int) -> int:
        if self.cfg.provider == "simulator":
            return prompt_tokens
        return math.ceil(prompt_tokens * PROMPT_MARGIN[0]) + PROMPT_MARGIN[1]

    async def _acquire(self, usd: float, tokens: float) -> tuple[str, float]:
        while True:
            state, wait = await self.gate.acquire(usd, tokens)
            if state != LATER:
                return state, wait
            if self.stopping:
                raise _Stopped
            await self.gate.wait_settled(0.2)

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
    async def run_one(self, req: LLMRequest) -> LLMResult | None:
        """The result, or None when a stop was requested before the request was sent."""
        rec = await self._cache_get(req.key)
        if rec is not None:
            self.counters["cached"] += 1
            return self._finish(req, self._from_record(req, rec))
        fut = self._by_key.get(req.key)
        if fut is not None:  # same key earlier in this call: never pay twice
            first: LLMResult | None = await asyncio.shield(fut)
            if first is None:
                return None
            self.counters["cached"] += 1
            return self._finish(req, duplicate_result(first, req))
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
        return self._finish(req, res) if res is not None else None

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
        self.log.write(log_record(req, res))
        return res

    async def _send(self, req: LLMRequest) -> LLMResult | None:
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
            try:
                if self.stopping:
                    raise _Stopped
                state, wait = await self._acquire(max_cost, need_tokens)
            except _Stopped:
                state, wait = "stopped", 0.0
            if state != OK:
                if partial is not None:  # keep the truncated answer we already paid for
                    return await done_ok(partial[0], partial[1], self._send_rf(req))
                if state == "stopped":
                    return None
                return result("budget_stopped", error=f"llm.max_usd={cfg.max_usd} cannot cover this request "
                                                      f"(up to ${max_cost:.6f})")
            while True:
                await self._nap(wait)
                wait = self.gate.pause_remaining()
                if wait <= 0 or self.stopping:
                    break
            if self.stopping:  # booked but not sent: give everything back
                self.gate.complete(reserved_usd=max_cost, actual_usd=0.0, booked_tokens=need_tokens,
                                   refund_tokens=need_tokens, refund_request=True)
                if partial is not None:
                    return await done_ok(partial[0], partial[1], self._send_rf(req))
                return None

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
            err: Exception | None = None
            try:
                raw = await self.client.chat.completions.with_raw_response.create(**kwargs)
                headers = raw.headers
                completion = raw.parse()
                if not hasattr(completion, "choices"):
                    raise _BadBody(f"HTTP {raw.status_code} answer is not a chat completion")
            except (openai.APIError, _BadBody) as e:
                err = e
            except BaseException:  # cancelled mid-request: it may be billed, keep it as spent
                self.gate.complete(reserved_usd=max_cost, actual_usd=max_cost, booked_tokens=need_tokens)
                raise

            close = {"reserved_usd": max_cost, "booked_tokens": need_tokens}
            if isinstance(err, openai.APIStatusError):
                status = err.status_code
                code = getattr(err, "code", None)
                msg = self._scrub(getattr(err, "message", str(err)))
                retry_after = retry_after_seconds(err.response.headers)
                if status == 429:  # not counted by the server: give the slot back, pause everyone
                    limited = code not in ("insufficient_quota", "request_too_large")
                    self.gate.complete(**close, actual_usd=0.0, refund_tokens=need_tokens, refund_request=True,
                                       pause_s=retry_after if limited else None, rate_limited=limited,
                                       headers=ratelimit_headers(err.response.headers))
                elif status >= 500:  # counted as a request, no tokens
                    self.gate.complete(**close, actual_usd=0.0, refund_tokens=need_tokens)
                else:
                    self.gate.complete(**close, actual_usd=0.0, refund_tokens=need_tokens, refund_request=True)
                if status in (401, 403):
                    raise UserError(
                        f"the LLM endpoint ({self.base_url or 'OpenAI'}) rejected the API key from "
                        f"${cfg.api_key_env} (HTTP {status})") from None
                if status == 429:
                    if code == "insufficient_quota":
                        raise UserError(f"the LLM account has no quota left (HTTP 429 insufficient_quota) at "
                                        f"{self.base_url or 'OpenAI'}") from None
                    if code == "request_too_large":
                        return result("error", error=msg)
                elif status < 500:
                    if status == 400 and self._adapt_to_rejection(err, send_rf):
                        continue
                    if code == "context_length_exceeded":
                        msg = f"prompt too long for {model} (context_length_exceeded, not retried): {msg}"
                    return result("error", error=f"HTTP {status}: {msg}")
            elif isinstance(err, openai.APITimeoutError):
                # the server may have billed it: keep the reservation as spent (the cap stays hard)
                self.gate.complete(**close, actual_usd=max_cost)
                self.counters["unknown_billing_usd"] += max_cost
                msg, retry_after = "request timed out", None
            elif err is not None:  # connection error, or a 200 whose body is not a completion
                self.gate.complete(**close, actual_usd=0.0, refund_tokens=need_tokens)
                msg, retry_after = self._scrub(getattr(err, "message", None) or str(err)), None
            if err is not None:
                failures += 1
                if failures > cfg.max_retries:
                    return result("error", error=f"gave up after {attempts} attempts: {msg}")
                self.counters["retries"] += 1
                log.debug("retrying %s after: %s", req.key[:12], msg)
                await self._nap(self._backoff(failures, retry_after))
                continue

            # ---- a 200 answer
            choice = completion.choices[0] if completion.choices else None
            text = (choice.message.content if choice is not None and choice.message is not None else None) or ""
            finish = choice.finish_reason if choice is not None else None
            usage = completion.usage
            in_t = int(usage.prompt_tokens) if usage is not None else prompt_tokens
            out_t = int(usage.completion_tokens) if usage is not None else count_text_tokens(text, model)
            actual = cost_usd(in_t, out_t, cfg.price)
            self.gate.complete(**close, actual_usd=actual, refund_tokens=need_tokens - (in_t + out_t),
                               headers=ratelimit_headers(headers))
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
    async def run(self, requests: list[LLMRequest], progress: bool = False) -> list[LLMResult | None]:
        """One result per request, in order; None for requests not sent because of a stop."""
        n = len(requests)
        results: list[LLMResult | None] = [None] * n
        if n == 0:
            return []
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.cfg.concurrency)
        slots = self._slots
        bar = _Progress(n, progress)
        it = iter(range(n))

        async def worker() -> None:
            for i in it:
                if self.stopping:
                    return
                async with slots:
                    results[i] = await self.run_one(requests[i])
                bar.advance(results[i])

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.cfg.concurrency, n))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
            if errors:
                raise errors[0]
        finally:
            bar.close()
        await self.gate.flush()
        return results


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


def use_ray(engine: str) -> bool:
    """``llm.engine``: ``ray`` / ``local``, or ``auto`` = Ray when this process is connected to it."""
    if engine == "ray":
        return True
    if engine == "local":
        return False
    ray = sys.modules.get("ray")
    return bool(ray is not None and getattr(ray, "is_initialized", lambda: False)())


def check_complete(results: list[LLMResult | None], stop_reason: str | None = None) -> list[LLMResult]:
    """Raise :class:`LLMInterrupted` when a stop left requests unsent."""
    missing = sum(1 for r in results if r is None)
    if missing:
        n = len(results)
        raise LLMInterrupted(
            f"LLM requests interrupted{f' by {stop_reason}' if stop_reason else ''}: {n - missing} of {n} "
            f"finished and stored, {missing} not sent; rerun to continue (stored answers are never paid again)")
    return results  # type: ignore[return-value]


class StopSignals:
    """While active (main thread only), the first SIGINT/SIGTERM calls ``on_stop`` (finish what is
    in flight, send nothing new) and a second one does what the signal did before."""

    def __init__(self, on_stop: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.on_stop = on_stop
        self.loop = loop
        self.received: str | None = None
        self._prev: dict[int, Any] = {}

    @staticmethod
    def _ours_to_take(sig: int, prev: Any) -> bool:
        if sig == signal.SIGTERM:  # the default, or Ray's driver handler (it just exits)
            return prev in (signal.SIG_DFL, None) or getattr(prev, "__module__", "").startswith("ray.")
        return prev is signal.default_int_handler or getattr(getattr(prev, "func", None), "__name__", "") == "_on_sigint"

    def _handle(self, sig: int, *_: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(sig).name
            print(f"selectllm: {self.received}: finishing the LLM requests in flight and storing their answers "
                  f"(send it again to abort at once)", file=sys.stderr, flush=True)
            self.on_stop()
        else:
            self.restore()
            signal.raise_signal(sig)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            prev = signal.getsignal(sig)
            if not self._ours_to_take(sig, prev):
                continue
            if self.loop is not None:
                self.loop.add_signal_handler(sig, self._handle, sig)
            else:
                signal.signal(sig, self._handle)
            self._prev[sig] = prev
        return self

    def restore(self) -> None:
        for sig, prev in self._prev.items():
            if self.loop is not None:
                self.loop.remove_signal_handler(sig)
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev = {}

    def __exit__(self, *exc: Any) -> None:
        self.restore()


async def run_requests_async(
    requests: list[LLMRequest],
    cfg: LLMConfig,
    cache_dir: str,
    requests_log: str | None = None,
    base_url: str | None = None,
    progress: bool = False,
    *,
    stop_on_signals: bool = False,
    **runner_kwargs: Any,
) -> list[LLMResult]:
    """The in-process path of :func:`run_requests` (online mode), for callers inside an event loop."""
    runner = LLMRunner(cfg, cache_dir, base_url=base_url, requests_log=requests_log, **runner_kwargs)
    stops = StopSignals(runner.request_stop, asyncio.get_running_loop())
    try:
        if stop_on_signals:
            stops.__enter__()
        results = await runner.run(requests, progress=progress)
    finally:
        stops.restore()
        await runner.aclose()
    return check_complete(results, stops.received)


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
    **runner_kwargs: Any,
) -> list[LLMResult]:
    """Send ``requests`` (see module doc); results come back in the same order.

    ``prior_usd``: already spent on this selection (answers bought by an earlier, killed run);
    it counts against ``llm.max_usd``.  ``engine`` (default ``llm.engine``): ``local`` (asyncio in
    this process), ``ray`` (:mod:`selectllm.llm.ray_pool`: async actor pool + one shared limiter
    actor), ``auto`` (Ray when this process is connected to Ray).  ``llm.mode: batch`` uses the
    Batch API (:mod:`selectllm.llm.batch`) whatever the engine.  Same interface and results.

    ``runner_kwargs`` go to :class:`LLMRunner` (``retry_base_s``, ``retry_cap_s``, ``seed``;
    batch mode: ``poll_s``).  Safe to call from inside a running event loop (it then runs in a
    helper thread).  Raises :class:`UserError` for a missing or rejected API key, and
    :class:`LLMInterrupted` after a graceful stop (SIGINT/SIGTERM, main thread only).
    """
    api_key = resolve_api_key(cfg)  # fail fast, before any thread, loop or actor
    if cfg.mode == "batch":
        from selectllm.llm.batch import run_batch

        return run_batch(requests, cfg, cache_dir, requests_log=requests_log, base_url=base_url,
                         progress=progress, prior_usd=prior_usd, api_key=api_key, **runner_kwargs)
    if use_ray(engine or cfg.engine):
        from selectllm.llm.ray_pool import run_requests_ray

        return run_requests_ray(requests, cfg, cache_dir, requests_log=requests_log, base_url=base_url,
                                progress=progress, prior_usd=prior_usd, api_key=api_key, **runner_kwargs)

    def go(signals: bool) -> list[LLMResult]:
        return asyncio.run(run_requests_async(requests, cfg, cache_dir, requests_log, base_url, progress,
                                              stop_on_signals=signals, prior_usd=prior_usd, api_key=api_key,
                                              **runner_kwargs))

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
