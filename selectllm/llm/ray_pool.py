"""The ``select`` stage's LLM requests on Ray: an async actor pool behind one shared limiter actor.

* :class:`RateLimiterActor` -- one per run (named ``selectllm-llm-gate-<hash of the cache dir>``
  in namespace ``selectllm``, ``get_if_exists``): a :class:`~selectllm.llm.gate.Gate` (token
  buckets for requests and tokens per minute, the shared 429 pause, the hard USD budget) on the
  actor's clock.  Every pool actor books through it, so the limits and the cap hold for the
  whole cluster, not per worker.  A request costs two calls: ``acquire`` (awaited: the wait time
  comes back) and ``complete`` (not awaited; gathered before a chunk returns).
  It is owned by the driver that created it (not detached): if the driver dies, so does it, and
  a rerun starts a fresh one whose spent-so-far comes from the answer cache, instead of inheriting
  reservations that would never settle.
* :class:`LLMPoolActor` -- an async actor running an :class:`~selectllm.llm.runner.LLMRunner`
  whose gate is an :class:`ActorGate` (a handle to the limiter actor).  Requests arrive in chunks;
  a semaphore keeps at most its share of ``llm.concurrency`` requests in progress, so the pool as
  a whole never has more than ``llm.concurrency`` in flight.
* :func:`run_requests_ray` -- the driver: drops duplicate keys (each key is sent once), deals
  chunks to the actors as they free up, shows a progress bar, writes ``requests.jsonl`` and
  returns one result per request in order.  SIGINT/SIGTERM stop it gracefully: nothing new is
  sent, requests in flight finish and are stored, then :class:`LLMInterrupted` is raised.

Pool size: ``actors`` actors sharing ``llm.concurrency`` evenly, each with ``actor_cpus`` CPUs
and the SPREAD strategy: the caller's to decide (the select stage's ``Resources.workers``,
``select.stage.select_workers``; a caller that gives none gets one actor of no CPU).  The answer cache must be
reachable from every node (a shared filesystem or an object store URL); the simulator's
loopback URL only works on a single-node cluster.  The API key travels to the actors as a
:class:`~selectllm.llm.records.Secret` constructor argument (never in a runtime_env, log or file).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from typing import Any

import ray

from selectllm.config import LLMConfig
from selectllm.errors import UserError
from selectllm.llm import policy
from selectllm.llm.records import RequestsLog, Secret, cached_result, duplicate_result, log_record
from selectllm.llm.runner import LLMRunner, Progress
from selectllm.llm.signals import StopSignals, check_complete
from selectllm.llm.budget import Budget
from selectllm.llm.gate import Gate
from selectllm.llm.types import LLMRequest, LLMResult

NAMESPACE = "selectllm"
CHUNKS_PER_ACTOR = 3  # chunks queued at each actor: it never idles between chunks
MAX_CHUNK = 64


def gate_name(cache_dir: str) -> str:
    return "selectllm-llm-gate-" + hashlib.sha256(cache_dir.encode()).hexdigest()[:16]


class RateLimiterActor:
    """The run's shared :class:`~selectllm.llm.gate.Gate` (use as ``ray.remote(RateLimiterActor)``;
    :func:`open_gate` does).  Methods take durations, never timestamps: clocks differ between nodes."""

    def __init__(self, rpm: float, tpm: float, max_usd: float, spent_usd: float = 0.0) -> None:
        self.g = Gate(rpm, tpm, max_usd, spent=spent_usd, now=time.monotonic())

    # ---- the two calls a request makes
    async def acquire(self, usd: float, tokens: float) -> tuple[str, float, float]:
        return self.g.acquire(usd, tokens, time.monotonic())

    async def complete(self, **kw: Any) -> None:
        self.g.complete(time.monotonic(), **kw)

    # ---- the individual operations (for other callers and tests)
    async def reserve(self, tokens: float) -> float:
        return self.g.limiter.reserve(tokens, time.monotonic())

    async def refund(self, tokens: float, request: bool = False) -> None:
        now = time.monotonic()
        self.g.limiter.refund(tokens, now)
        if request:
            self.g.limiter.refund_request(now)

    async def observe_headers(self, headers: dict) -> None:
        self.g.limiter.observe_headers(headers, time.monotonic(), self.g.unseen_requests, self.g.unseen_tokens)

    async def pause_remaining(self) -> float:
        return self.g.limiter.pause_remaining(time.monotonic())

    async def settle(self, reserved: float, actual: float) -> None:
        self.g.budget.settle(reserved, actual)

    async def release(self, reserved: float) -> None:
        self.g.budget.release(reserved)

    async def spent(self) -> float:
        return self.g.budget.spent

    async def set_budget(self, max_usd: float, spent_usd: float) -> None:
        if self.g.budget.outstanding:
            raise RuntimeError("set_budget while requests are outstanding")
        self.g.budget = Budget(max_usd, spent=spent_usd)

    async def snapshot(self) -> dict:
        return self.g.snapshot(time.monotonic())


class ActorGate:
    """The runner's gate interface (see :class:`~selectllm.llm.client.LocalGate`) over a
    :class:`RateLimiterActor` handle: one awaited call per attempt, one not awaited."""

    def __init__(self, handle: Any) -> None:
        self.h = handle
        self._pause_until = 0.0
        self._pending: set[asyncio.Future] = set()

    def _note_pause(self, pause_s: float | None) -> None:
        if pause_s:
            self._pause_until = max(self._pause_until, time.monotonic() + pause_s)

    async def acquire(self, usd: float, tokens: float) -> tuple[str, float]:
        state, wait, pause = await self.h.acquire.remote(usd, tokens)
        self._note_pause(pause)
        return state, wait

    def complete(self, **kw: Any) -> None:
        self._note_pause(kw.get("pause_s") or (1.0 if kw.get("rate_limited") else None))
        fut = asyncio.wrap_future(self.h.complete.remote(**kw).future())
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    def pause_remaining(self) -> float:
        """The shared pause as last heard from the limiter (no round trip)."""
        return max(0.0, self._pause_until - time.monotonic())

    async def wait_settled(self, timeout: float) -> None:
        await asyncio.sleep(timeout)

    async def flush(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending))


class LLMPoolActor:
    """One async worker of the pool (use as ``ray.remote(LLMPoolActor)``)."""

    def __init__(self, cfg: LLMConfig, cache_dir: str, base_url: str | None, gate: Any, api_key: Secret,
                 runner_kwargs: dict) -> None:
        self.runner = LLMRunner(cfg, cache_dir, base_url=base_url, gate=ActorGate(gate), api_key=api_key.get(),
                                **runner_kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None

    async def ping(self) -> int:
        return 0

    async def run_chunk(self, requests: list[LLMRequest]) -> tuple[list[LLMResult | None], dict | None]:
        """The results, and what this actor learnt about the endpoint (RequestShape.finding)."""
        results = await self.runner.run(requests)
        await self.runner.gate.flush()  # every complete() has reached the limiter
        return results, self.runner.shape.finding()

    async def adopt_shape(self, found: dict) -> None:
        """Another actor learnt what the endpoint accepts (a response format rung, reasoning): here too."""
        self.runner.shape.adopt(found)

    async def counters(self) -> dict:
        return dict(self.runner.counters)

    async def stop(self) -> None:
        self.runner.request_stop()

    async def reset(self) -> None:
        self.runner.stopping = False
        self.runner._stop_event = None

    async def close(self) -> None:
        await self.runner.aclose()


def open_gate(cache_dir: str, cfg: LLMConfig, prior_usd: float) -> tuple[Any, bool]:
    """The run's limiter actor: ``(handle, created_here)``.  One that already exists (another
    driver on the same run) is joined as it is: its budget already counts that driver's spend."""
    name = gate_name(cache_dir)
    try:
        return ray.get_actor(name, namespace=NAMESPACE), False
    except ValueError:
        pass
    handle = ray.remote(RateLimiterActor).options(
        name=name, namespace=NAMESPACE, get_if_exists=True, num_cpus=0, max_concurrency=1000,
    ).remote(cfg.rpm, cfg.tpm, cfg.max_usd, prior_usd)
    return handle, True


def share(concurrency: int, actors: int) -> list[int]:
    """Each actor's share of ``concurrency`` (summing to it, each >= 1: at most ``concurrency`` actors)."""
    n = max(1, min(actors, concurrency))
    base, extra = divmod(concurrency, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _unwrap(e: Exception) -> Exception:
    cause = getattr(e, "cause", None)
    if isinstance(cause, UserError):
        return type(cause)(str(cause))
    return e


class RayLLMPool:
    """The limiter actor and the pool actors, kept for one or more :meth:`run` calls (starting a
    pool actor costs seconds: it imports the HTTP client).  Use as a context manager."""

    def __init__(self, cfg: LLMConfig, cache_dir: str, *, api_key: str, base_url: str | None = None,
                 prior_usd: float = 0.0, actors: int = 1, actor_cpus: float = 0, **runner_kwargs: Any) -> None:
        if cfg.provider == "simulator" and not (base_url or cfg.base_url):
            raise UserError("llm.provider is simulator but no base URL was given: start one with "
                            "llm_endpoint(cfg) (or set llm.base_url)")
        self.cfg = cfg
        self.shape = share(cfg.concurrency, actors)
        self.gate, self.own_gate = open_gate(cache_dir, cfg, prior_usd)
        remote_cls = ray.remote(LLMPoolActor).options(num_cpus=actor_cpus, max_concurrency=CHUNKS_PER_ACTOR + 2,
                                                      scheduling_strategy="SPREAD")
        self.pool = [remote_cls.remote(cfg.model_copy(update={"concurrency": c}), cache_dir, base_url, self.gate,
                                       Secret(api_key), runner_kwargs) for c in self.shape]
        self._dirty = False  # a stopped run left the runners stopping

    def __enter__(self) -> "RayLLMPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for p in self.pool:
            ray.kill(p)
        self.pool = []
        if self.own_gate:
            ray.kill(self.gate)
            self.own_gate = False

    def limiter_snapshot(self) -> dict:
        return ray.get(self.gate.snapshot.remote())

    def set_budget(self, max_usd: float, spent_usd: float) -> None:
        """Start a new budget on this pool's limiter (between runs; nothing may be in flight)."""
        ray.get(self.gate.set_budget.remote(max_usd, spent_usd))

    def run(self, requests: list[LLMRequest], *, requests_log: str | None = None, progress: bool = True,
            stats: dict | None = None, known: dict[str, dict] | None = None,
            report: dict | None = None) -> list[LLMResult]:
        """``known``: cache records already read (answered here, never dealt to an actor)."""
        first: dict[str, int] = {}
        uniq: list[LLMRequest] = []
        for r in requests:
            if r.key not in first:
                first[r.key] = len(uniq)
                uniq.append(r)
        if not uniq:
            return []
        known = known or {}
        learnt = policy.RequestShape.of(self.cfg)  # what the actors found, merged
        if self._dirty:
            ray.get([p.reset.remote() for p in self.pool])
            self._dirty = False
        pool = self.pool
        size = max(1, min(MAX_CHUNK, 2 * min(self.shape)))
        todo = [j for j, r in enumerate(uniq) if r.key not in known]
        chunks = [todo[s:s + size] for s in range(0, len(todo), size)]
        log = RequestsLog(requests_log)
        bar = Progress(len(uniq), progress)
        results_u: list[LLMResult | None] = [None] * len(uniq)
        for j, r in enumerate(uniq):
            if r.key in known:
                results_u[j] = cached_result(r, known[r.key])
                log.write(log_record(r, results_u[j]))
                bar.advance(results_u[j])
        queue = deque(range(len(chunks)))
        outstanding: dict[Any, tuple[int, int]] = {}

        def submit(a: int) -> None:
            ci = queue.popleft()
            ref = pool[a].run_chunk.remote([uniq[j] for j in chunks[ci]])
            outstanding[ref] = (a, ci)

        before = ray.get([p.counters.remote() for p in pool]) if stats is not None else []
        stops = StopSignals(lambda: None)
        try:
            with stops:
                if chunks and learnt.needs_probe(uniq[chunks[0][0]].response_format):
                    # a probe: one structured request alone, so every actor learns the endpoint's answer at once
                    probe = [chunks[0].pop(0)]
                    try:
                        res, found = ray.get(pool[0].run_chunk.remote([uniq[j] for j in probe]))
                    except ray.exceptions.RayTaskError as e:
                        raise _unwrap(e) from None
                    for j, r in zip(probe, res):
                        results_u[j] = r
                        if r is not None:
                            log.write(log_record(uniq[j], r))
                            bar.advance(r)
                    if found:
                        learnt.adopt(found)
                        ray.get([p.adopt_shape.remote(found) for p in pool[1:]])
                    if not chunks[0]:
                        queue.popleft()
                for _ in range(CHUNKS_PER_ACTOR):
                    for a in range(len(pool)):
                        if queue:
                            submit(a)
                while outstanding:
                    ready, _ = ray.wait(list(outstanding), num_returns=1, timeout=0.25)
                    if stops.received and not self._dirty:
                        self._dirty = True
                        queue.clear()
                        ray.get([p.stop.remote() for p in pool])
                    for ref in ready:
                        a, ci = outstanding.pop(ref)
                        try:
                            res, found = ray.get(ref)
                        except ray.exceptions.RayTaskError as e:
                            raise _unwrap(e) from None
                        if found and (found["mode"], found["reasoning_seen"]) != (learnt.mode, learnt.reasoning_seen):
                            learnt.adopt(found)  # something new (or stale): every actor takes the merged finding
                            ray.get([p.adopt_shape.remote(learnt.finding()) for p in pool])
                        for j, r in zip(chunks[ci], res):
                            results_u[j] = r
                            if r is not None:
                                log.write(log_record(uniq[j], r))
                                bar.advance(r)
                        if queue:
                            submit(a)
            if stats is not None:  # counters: since the pool started (sent_per_actor: this run)
                per = ray.get([p.counters.remote() for p in pool])
                counters = {k: sum(c[k] for c in per) for k in per[0]}
                stats.update({"actors": len(pool), "per_actor": list(self.shape), "chunk": size,
                              "counters": counters, "sent_per_actor": [c["sent"] - b["sent"] for c, b in
                                                                       zip(per, before)],
                              "limiter": ray.get(self.gate.snapshot.remote())})
        finally:
            bar.close()
            if report is not None:
                learnt.report(report)
            out: list[LLMResult | None] = []
            first_pos: dict[str, int] = {}
            for i, r in enumerate(requests):
                first_pos.setdefault(r.key, i)
            for i, r in enumerate(requests):
                j = first[r.key]
                u = results_u[j]
                if u is None or first_pos[r.key] == i:  # by position: a list may hold one object twice
                    out.append(u)
                    continue
                dup = duplicate_result(u, r)
                log.write(log_record(r, dup))
                out.append(dup)
            log.close()
        return check_complete(out, stops.received)


def run_requests_ray(
    requests: list[LLMRequest],
    cfg: LLMConfig,
    cache_dir: str,
    *,
    requests_log: str | None = None,
    base_url: str | None = None,
    progress: bool = True,
    prior_usd: float = 0.0,
    api_key: str,
    actors: int = 1,
    actor_cpus: float = 0,
    stats: dict | None = None,
    known: dict[str, dict] | None = None,
    report: dict | None = None,
    **runner_kwargs: Any,
) -> list[LLMResult]:
    """:func:`selectllm.llm.client.run_requests` on a Ray pool of ``actors`` actors of ``actor_cpus``
    CPUs started for this call (see module doc).  ``stats``, if given, receives the pool shape, the
    runners' counters and the limiter's final snapshot."""
    if not requests:
        return []
    with RayLLMPool(cfg, cache_dir, api_key=api_key, base_url=base_url, prior_usd=prior_usd, actors=actors,
                    actor_cpus=actor_cpus, **runner_kwargs) as pool:
        return pool.run(requests, requests_log=requests_log, progress=progress, stats=stats, known=known,
                        report=report)
