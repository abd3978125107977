"""The one thing every paid request passes through: the budget and the rate limits together.

A request talks to its :class:`Gate` twice: :meth:`Gate.acquire` before it is sent (reserve its
maximum cost in the :class:`~selectllm.llm.budget.Budget`, then book one request and its
``prompt + max_tokens`` tokens in the :class:`~selectllm.llm.limiter.RateLimiter`) and
:meth:`Gate.complete` after the attempt (settle the money to what was billed, refund the tokens
and the request slot that were not used, pause everyone after a 429 with ``retry-after``, and
tighten the buckets from the response's ``x-ratelimit-*`` headers).  Two calls, so a gate that
lives in a Ray actor (:mod:`selectllm.llm.ray_pool`) costs two round trips per attempt, and the
second one need not be awaited.

Pure: the clock is an argument.  The gate counts what it has booked and not yet seen completed
(``unseen_*``): the server's ``remaining`` headers do not include those yet.
"""

from __future__ import annotations

from collections import deque
from typing import Mapping

from selectllm.llm.budget import Budget
from selectllm.llm.limiter import RateLimiter

OK, LATER, STOP = "ok", "later", "stop"
BURST_WINDOW_S = 30.0  # 429s without retry-after within this window make the shared pause grow
BURST_PAUSE_S = (1.0, 30.0)  # first pause, longest pause


class Gate:
    def __init__(self, rpm: float, tpm: float, max_usd: float, spent: float = 0.0, now: float = 0.0) -> None:
        self.limiter = RateLimiter(rpm, tpm, now)
        self.budget = Budget(max_usd, spent=spent)
        self.unseen_requests = 0
        self.unseen_tokens = 0.0
        self.calls = {"acquire": 0, "complete": 0}
        self.recent_429: deque[float] = deque()

    def acquire(self, usd: float, tokens: float, now: float) -> tuple[str, float, float]:
        """``(state, wait_s, pause_s)``.  ``ok``: reserved; send after ``wait_s`` seconds.
        ``later``: the budget cannot hold ``usd`` now but may once outstanding requests settle
        (nothing was booked; ask again).  ``stop``: it never will.  ``pause_s``: how long the
        shared 429 pause still lasts (callers remember it to honour it without asking)."""
        self.calls["acquire"] += 1
        pause = self.limiter.pause_remaining(now)
        if not self.budget.try_reserve(usd):
            return (LATER if self.budget.could_fit_later(usd) else STOP), 0.0, pause
        wait = self.limiter.reserve(tokens, now)
        self.unseen_requests += 1
        self.unseen_tokens += tokens
        return OK, wait, pause

    def complete(
        self,
        now: float,
        *,
        reserved_usd: float,
        actual_usd: float,
        booked_tokens: float,
        refund_tokens: float = 0.0,
        refund_request: bool = False,
        pause_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        rate_limited: bool = False,
    ) -> None:
        """Close one :meth:`acquire`: ``actual_usd`` billed (0 when nothing was), ``refund_tokens``
        booked but not used (negative: used more), ``refund_request`` when the server did not
        count the request (429, 4xx, never sent).  ``rate_limited`` (a 429): with ``pause_s``
        (its ``retry-after``) everyone pauses that long; without, everyone pauses 1 s, doubling
        with each further 429 within 30 s (at most 30 s)."""
        self.calls["complete"] += 1
        self.budget.settle(reserved_usd, actual_usd)
        self.unseen_requests = max(0, self.unseen_requests - 1)
        self.unseen_tokens = max(0.0, self.unseen_tokens - booked_tokens)
        if refund_tokens:
            self.limiter.refund(refund_tokens, now)
        if refund_request:
            self.limiter.refund_request(now)
        if rate_limited:
            while self.recent_429 and self.recent_429[0] < now - BURST_WINDOW_S:
                self.recent_429.popleft()
            self.recent_429.append(now)
            if not pause_s:
                pause_s = min(BURST_PAUSE_S[1], BURST_PAUSE_S[0] * 2 ** (len(self.recent_429) - 1))
        if pause_s:
            self.limiter.pause_until(now + pause_s)
        if headers:
            self.limiter.observe_headers(headers, now, self.unseen_requests, self.unseen_tokens)

    def snapshot(self, now: float) -> dict:
        return {**self.budget.snapshot(), **self.limiter.snapshot(now), "calls": dict(self.calls),
                "unseen_requests": self.unseen_requests}
