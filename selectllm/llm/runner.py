"""The online runner: one asyncio loop sending :class:`LLMRequest` objects concurrently through a
gate (budget + token buckets), with the retry policy of :mod:`selectllm.llm.policy`.

Used in this process (:func:`run_requests_async`, with a :class:`LocalGate`) and inside each Ray
pool actor (:mod:`selectllm.llm.ray_pool`, with an actor-backed gate).  The steps of one request
are described in :mod:`selectllm.llm.client`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import openai

from selectllm.config import LLMConfig
from selectllm.errors import UserError
from selectllm.llm import policy
from selectllm.llm.budget import cost_usd, max_request_cost
from selectllm.llm.cache import AnswerCache
from selectllm.llm.gate import LATER, OK, Gate
from selectllm.llm.limiter import retry_after_seconds
from selectllm.llm.records import (RequestsLog, cached_result, duplicate_result, log_record, ratelimit_headers,
                                   resolve_api_key)
from selectllm.llm.signals import StopSignals, check_complete
from selectllm.llm.tokens import count_message_tokens, count_text_tokens
from selectllm.llm.types import LLMRequest, LLMResult

PROGRESS_SECONDS = 10.0  # without a terminal: one progress line this often

log = logging.getLogger("selectllm.llm")

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



class _Stopped(Exception):
    """Internal: the run was asked to stop before this request was sent."""



class _BadBody(Exception):
    """A 2xx answer whose body is not a chat completion (a proxy's HTML page, ...): retried."""


_GO = object()  # _reserve: the gate let the attempt through
_AGAIN = object()  # an attempt's verdict: make another one


@dataclass
class _Try:
    """One request's state across its attempts (what the phases of ``LLMRunner._send`` share)."""

    req: LLMRequest
    max_tokens: int  # answer tokens asked (twice as many after an answer cut at max_tokens)
    attempts: int = 0
    failures: int = 0  # transient failures so far (at most llm.max_retries are retried)
    billed_in: int = 0
    billed_out: int = 0
    billed_usd: float = 0.0
    reasoning_tokens: int = 0
    partial: tuple[str, str | None, str | None] | None = None  # (text, finish_reason, format) of a cut answer
    counted: dict[int, int] = field(default_factory=dict)  # prompt tokens per message form

    def result(self, status: str, cause: str | None = None, **kw: Any) -> LLMResult:
        return LLMResult(key=self.req.key, group_id=self.req.group_id, status=status,  # type: ignore[arg-type]
                         input_tokens=self.billed_in, output_tokens=self.billed_out, usd=self.billed_usd,
                         attempts=self.attempts, cause=cause, **kw)


@dataclass
class _Booking:
    """One attempt's booking at the gate."""

    messages: list[dict]
    prompt_tokens: int  # counted here (the endpoint's usage replaces it)
    need_tokens: int  # booked in the token buckets: prompt estimate + answer tokens
    max_cost: float  # reserved under llm.max_usd
    max_tokens: int  # answer tokens asked, with room for reasoning


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
        known: dict[str, dict] | None = None,
    ) -> None:
        self.cfg = cfg
        self.cache = AnswerCache(cache_dir)
        self.known = known or {}  # records already read (AnswerCache.load): no second read
        self.base_url = base_url or cfg.base_url
        if cfg.provider == "simulator" and not self.base_url:
            raise UserError("llm.provider is simulator but no base URL was given: start one with "
                            "llm_endpoint(cfg) (or set llm.base_url)")
        self.api_key = api_key or resolve_api_key(cfg)
        self.gate = gate or LocalGate(cfg.rpm, cfg.tpm, cfg.max_usd, spent=prior_usd)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.rng = random.Random(seed)
        self.log = RequestsLog(requests_log)
        self._client: openai.AsyncOpenAI | None = None
        self.shape = policy.RequestShape.of(cfg)  # what the endpoint accepts
        self._by_key: dict[str, asyncio.Future] = {}
        self._probe: asyncio.Future | None = None  # the structured request in flight that tests the endpoint
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
        return policy.scrub(msg, self.api_key)

    async def _acquire(self, usd: float, tokens: float) -> tuple[str, float]:
        while True:
            state, wait = await self.gate.acquire(usd, tokens)
            if state != LATER:
                return state, wait
            if self.stopping:
                raise _Stopped
            await self.gate.wait_settled(0.2)

    # ---- one request
    async def run_one(self, req: LLMRequest) -> LLMResult | None:
        """The result, or None when a stop was requested before the request was sent."""
        rec = await self._cache_get(req.key)
        if rec is not None:
            self.counters["cached"] += 1
            return self._finish(req, cached_result(req, rec))
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
            res = await self._send_probed(req)
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

    async def _send_probed(self, req: LLMRequest) -> LLMResult | None:
        """With ``structured_output: auto``, the first request that would send ``response_format``
        goes alone (a probe); the others wait for what it shows (taken, rejected, ignored), so a
        server that cannot do structured outputs sees one such request per run, not one per slot."""
        while self.shape.needs_probe(req.response_format):
            if self._probe is None:
                self._probe = asyncio.get_running_loop().create_future()
                try:
                    return await self._send(req)
                finally:
                    probe, self._probe = self._probe, None
                    probe.set_result(None)
            await asyncio.shield(self._probe)  # no verdict (e.g. the probe failed): the next one probes
        return await self._send(req)

    async def _cache_get(self, key: str) -> dict | None:
        if key in self.known:
            return self.known[key]
        if self.cache.local:
            return self.cache.get(key)
        return await asyncio.to_thread(self.cache.get, key)

    async def _cache_put(self, key: str, rec: dict) -> None:
        if self.cache.local:
            self.cache.put(key, rec)
        else:
            await asyncio.to_thread(self.cache.put, key, rec)

    def _finish(self, req: LLMRequest, res: LLMResult) -> LLMResult:
        self.log.write(log_record(req, res))
        return res

    # ---- one request, in phases: book -> reserve -> post -> an error's verdict, or the answer
    async def _send(self, req: LLMRequest) -> LLMResult | None:
        """Send one request until it has an outcome (None: a stop came before it was sent).

        Each attempt: :meth:`_book` (messages in the current shape, tokens, maximum cost) ->
        :meth:`_reserve` (the gate: budget, token buckets, pauses) -> :meth:`_post` -> either
        :meth:`_on_error` (retry with backoff, resend in another shape, or a final error with its
        cause) or :meth:`_on_answer` (store it; ask once more with twice the tokens when cut)."""
        t = _Try(req, int(req.max_tokens))
        while True:
            b = self._book(t)
            if isinstance(b, LLMResult):
                return b
            outcome = await self._reserve(t, b)
            if outcome is not _GO:
                return outcome
            if self.shape.messages(req) is not b.messages:  # another request changed the shape meanwhile
                self._give_back(b)
                continue
            sent_mode = self.shape.mode_for(req.response_format)
            kwargs = self.shape.body(self.cfg.model, b.messages, b.max_tokens, self.cfg.temperature,
                                     req.response_format)
            t.attempts += 1
            self.counters["sent"] += 1
            try:
                completion, headers = await self._post(kwargs, req.key)
            except (openai.APIError, _BadBody) as e:
                outcome = await self._on_error(t, b, e, sent_mode)
            except BaseException:  # cancelled mid-request: it may be billed, keep it as spent
                self.gate.complete(reserved_usd=b.max_cost, actual_usd=b.max_cost, booked_tokens=b.need_tokens)
                raise
            else:
                outcome = await self._on_answer(t, b, completion, headers, sent_mode)
            if outcome is not _AGAIN:
                return outcome

    def _book(self, t: "_Try") -> "_Booking | LLMResult":
        """The messages in the current shape, the tokens to book and the most the attempt can cost."""
        messages = self.shape.messages(t.req)
        if id(messages) not in t.counted:  # the shape may change mid-way: counted once per form
            t.counted[id(messages)] = count_message_tokens(messages, self.cfg.model)
        est_prompt = policy.prompt_estimate(self.cfg.provider, t.counted[id(messages)])
        max_tokens = self.shape.answer_tokens(t.max_tokens)
        need = est_prompt + max_tokens
        if need > self.cfg.tpm:
            return t.result("error", "rate_limited",
                            error=f"request needs {need} tokens, more than llm.tpm={self.cfg.tpm} allows per minute")
        return _Booking(messages, t.counted[id(messages)], need, max_request_cost(est_prompt, max_tokens, self.cfg.price),
                        max_tokens)

    async def _reserve(self, t: "_Try", b: "_Booking") -> Any:
        """Wait for the gate: ``_GO``, or the request's outcome (budget reached, stop requested)."""
        try:
            if self.stopping:
                raise _Stopped
            state, wait = await self._acquire(b.max_cost, b.need_tokens)
        except _Stopped:
            state, wait = "stopped", 0.0
        if state != OK:
            if t.partial is not None:  # keep the truncated answer we already paid for
                return await self._keep_partial(t)
            if state == "stopped":
                return None
            return t.result("budget_stopped", "budget",
                            error=f"llm.max_usd={self.cfg.max_usd} cannot cover this request (up to ${b.max_cost:.6f})")
        while True:
            await self._nap(wait)
            wait = self.gate.pause_remaining()
            if wait <= 0 or self.stopping:
                break
        if self.stopping:  # booked but not sent: give everything back
            self._give_back(b)
            return await self._keep_partial(t) if t.partial is not None else None
        return _GO

    def _give_back(self, b: "_Booking") -> None:
        self.gate.complete(reserved_usd=b.max_cost, actual_usd=0.0, booked_tokens=b.need_tokens,
                           refund_tokens=b.need_tokens, refund_request=True)

    async def _post(self, kwargs: dict, key: str) -> tuple[Any, Any]:
        kwargs["extra_headers"] = {KEY_HEADER: key}
        raw = await self.client.chat.completions.with_raw_response.create(**kwargs)
        try:
            completion = raw.parse()
        except ValueError:  # "application/json" that is not JSON (a proxy's page)
            raise _BadBody(f"HTTP {raw.status_code} answer is not JSON") from None
        if not hasattr(completion, "choices"):
            raise _BadBody(f"HTTP {raw.status_code} answer is not a chat completion")
        return completion, raw.headers

    async def _on_error(self, t: "_Try", b: "_Booking", err: Exception, sent_mode: str | None) -> Any:
        """Settle the gate for a failed attempt; ``_AGAIN`` (after backoff when transient) or a
        final error result with its cause.  401/403 and an exhausted quota raise."""
        close = {"reserved_usd": b.max_cost, "booked_tokens": b.need_tokens}
        retry_after = None
        if isinstance(err, openai.APIStatusError):
            status, code, param = err.status_code, getattr(err, "code", None), getattr(err, "param", None)
            msg = self._scrub(policy.error_text(err))
            retry_after = retry_after_seconds(err.response.headers)
            if status == 429:  # not counted by the server: give the slot back, pause everyone
                limited = code not in ("insufficient_quota", "request_too_large")
                self.gate.complete(**close, actual_usd=0.0, refund_tokens=b.need_tokens, refund_request=True,
                                   pause_s=retry_after if limited else None, rate_limited=limited,
                                   headers=ratelimit_headers(err.response.headers))
            elif status >= 500:  # counted as a request, no tokens
                self.gate.complete(**close, actual_usd=0.0, refund_tokens=b.need_tokens)
            else:
                self.gate.complete(**close, actual_usd=0.0, refund_tokens=b.need_tokens, refund_request=True)
            if status in (401, 403):
                raise policy.auth_error(self.base_url, self.cfg.api_key_env, status) from None
            if status == 429 and code == "insufficient_quota":
                raise policy.quota_error(self.base_url) from None
            if status == 429 and code == "request_too_large":
                return t.result("error", "rate_limited", error=msg)
            if sent_mode is not None and policy.rejects_format(status, code, param, msg):
                if self.shape.step_down(sent_mode, f"HTTP {status} naming the response format: {msg[:160]}"):
                    return _AGAIN  # unbilled: sent again at once in the next form
                return t.result("error", "format_rejected",
                                error=f"{policy.final_error(self.cfg.model, status, code, msg)} "
                                      f"(llm.structured_output: {self.cfg.structured_output}; try auto)")
            if not policy.is_retried(status):
                if self.shape.adapt(status, code, param, msg):
                    return _AGAIN
                cause = "context_length" if code == "context_length_exceeded" else "http_4xx"
                return t.result("error", cause, error=policy.final_error(self.cfg.model, status, code, msg))
            cause = "rate_limited" if status == 429 else "http_5xx"
        elif isinstance(err, openai.APITimeoutError):
            # the server may have billed it: keep the reservation as spent (the cap stays hard)
            self.gate.complete(**close, actual_usd=b.max_cost)
            self.counters["unknown_billing_usd"] += b.max_cost
            msg, cause = "request timed out", "timeout"
        else:  # connection error, or a 200 whose body is not a completion
            self.gate.complete(**close, actual_usd=0.0, refund_tokens=b.need_tokens)
            msg = self._scrub(getattr(err, "message", None) or str(err))
            cause = "bad_body" if isinstance(err, _BadBody) else "unreachable"
        t.failures += 1
        if t.failures > self.cfg.max_retries:
            return t.result("error", cause, error=f"gave up after {t.attempts} attempts: {msg}")
        self.counters["retries"] += 1
        log.debug("retrying %s after: %s", t.req.key[:12], msg)
        await self._nap(policy.backoff(self.rng, t.failures, self.retry_base_s, self.retry_cap_s, retry_after))
        return _AGAIN

    async def _on_answer(self, t: "_Try", b: "_Booking", completion: Any, headers: Any,
                         sent_mode: str | None) -> Any:
        """A 200: settle the gate to the billed usage, learn from it, then ``_AGAIN`` (cut at
        ``max_tokens``: once more with twice the tokens) or the outcome (stored before use; an
        empty answer is an error with cause ``empty``, never stored)."""
        choice = completion.choices[0] if completion.choices else None
        text = (choice.message.content if choice is not None and choice.message is not None else None) or ""
        finish = choice.finish_reason if choice is not None else None
        usage = completion.usage
        in_t = int(usage.prompt_tokens) if usage is not None else b.prompt_tokens
        out_t = int(usage.completion_tokens) if usage is not None else count_text_tokens(text, self.cfg.model)
        details = getattr(usage, "completion_tokens_details", None) if usage is not None else None
        thought = int(getattr(details, "reasoning_tokens", 0) or 0)
        actual = cost_usd(in_t, out_t, self.cfg.price)
        self.gate.complete(reserved_usd=b.max_cost, booked_tokens=b.need_tokens, actual_usd=actual,
                           refund_tokens=b.need_tokens - (in_t + out_t), headers=ratelimit_headers(headers))
        t.billed_in += in_t
        t.billed_out += out_t
        t.billed_usd += actual
        t.reasoning_tokens += thought
        self.shape.saw_reasoning(thought)
        if finish != "length":  # a cut answer is no sign of what the endpoint does
            self.shape.check_answer(text, sent_mode)
        if finish == "length" and t.partial is None:
            t.partial = (text, finish, sent_mode)
            t.max_tokens *= 2
            return _AGAIN
        if not text.strip() and t.partial is not None and t.partial[0].strip():
            text, finish, sent_mode = t.partial
        if not text.strip():
            return self._empty(t, finish)
        return await self._store(t, text, finish, sent_mode)

    def _empty(self, t: "_Try", finish: str | None) -> LLMResult:
        thought = f" after {t.reasoning_tokens} reasoning tokens" if t.reasoning_tokens else ""
        return t.result("error", "empty", finish_reason=finish,
                        error=f"empty answer{thought} (finish_reason {finish}); raise llm.max_tokens"
                              f"{' or llm.reasoning_tokens' if thought or self.shape.reasoning else ''}")

    async def _keep_partial(self, t: "_Try") -> LLMResult:
        text, finish, mode = t.partial  # type: ignore[misc]
        return await self._store(t, text, finish, mode) if text.strip() else self._empty(t, finish)

    async def _store(self, t: "_Try", text: str, finish: str | None, mode: str | None) -> LLMResult:
        rec = {"key": t.req.key, "endpoint": self.cfg.endpoint, "model": self.cfg.model, "text": text,
               "finish_reason": finish, "input_tokens": t.billed_in, "output_tokens": t.billed_out,
               "usd": t.billed_usd, "attempts": t.attempts, "format": mode,
               "structured": mode not in (None, "text"), "created": time.time()}
        await self._cache_put(t.req.key, rec)  # durable before use
        return t.result("ok", "truncated" if finish == "length" else None, text=text, finish_reason=finish,
                        format=mode)

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
        bar = Progress(n, progress)
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


class Progress:
    """Requests done and dollars spent (cached answers cost nothing): a bar on a terminal, and
    otherwise (logs, Ray jobs) one line ``LLM requests: 1,234/10,000 done, $0.1234 spent`` every
    :data:`PROGRESS_SECONDS` and at the end."""

    def __init__(self, total: int, enabled: bool, every: float | None = None) -> None:
        self.p = None
        self.total, self.done, self.usd = total, 0, 0.0
        self.every = PROGRESS_SECONDS if every is None else every
        self.last = time.monotonic()
        self.lines = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from selectllm.console import console  # the project's terminal, also in quiet mode

            if not console.is_terminal:
                self.lines = console
                return
            self.p = Progress(TextColumn("LLM requests"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[usd]}"), TimeRemainingColumn(),
                              console=console, transient=False)
            self.task = self.p.add_task("llm", total=total, usd="$0.0000")
            self.p.start()

    def line(self) -> str:
        return f"LLM requests: {self.done:,}/{self.total:,} done, ${self.usd:.4f} spent"

    def advance(self, res: LLMResult | None) -> None:
        self.done += 1
        if res is not None and not res.cached:
            self.usd += res.usd
        if self.p is not None:
            self.p.update(self.task, advance=1, usd=f"${self.usd:.4f}")
        elif self.lines is not None and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.lines.print(self.line(), highlight=False)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()
            self.p = None
        elif self.lines is not None:
            self.lines.print(self.line(), highlight=False)
            self.lines = None


# --------------------------------------------------------------------------- public entry points


async def run_requests_async(
    requests: list[LLMRequest],
    cfg: LLMConfig,
    cache_dir: str,
    requests_log: str | None = None,
    base_url: str | None = None,
    progress: bool = False,
    *,
    stop_on_signals: bool = False,
    report: dict | None = None,
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
        if report is not None:
            runner.shape.report(report)
    return check_complete(results, stops.received)
