"""Client-side rate limiting: token buckets for requests/min and tokens/min (pure maths).

No clock is read here: every method takes ``now`` (seconds, any monotonic origin), so the maths
is deterministic and tested with a fake clock, and the same object can live in a Ray actor.

Model: a bucket holds up to ``capacity`` units and refills continuously at ``rate`` units/s.
:meth:`TokenBucket.reserve` *books* the units at once (the level may go negative: a debt) and
returns how long the caller must wait before sending, so concurrent callers queue up fairly in
the order they reserved.  A reservation larger than the capacity is allowed (it waits for the
debt to be repaid) but a server would reject it, so callers should refuse such requests upfront.

Shape (:func:`window_shape`): a per-minute limit ``L`` becomes a bucket of capacity
``b = L/120`` (half a second's worth, at least 1 unit, at most ``L/2``) refilled at
``(L - b) / (60 + WINDOW_SLACK_S)`` per second.  A bucket lets at most ``b + W * rate`` units
through in *any* window of ``W`` seconds, whatever the traffic, so every window of
``60 + WINDOW_SLACK_S`` seconds holds at most ``L``: a sliding-window server sees at most ``L`` a
minute even when network or scheduling delays shift our requests by up to ``WINDOW_SLACK_S``
relative to each other, and a token-bucket server that enforces its limit over short periods
(OpenAI quantizes "600 RPM" to about 10 per second) never sees a burst.  The sustained rate is
``(L - b) * 60 / 61`` per minute (97.5 % of ``L`` for ``L >= 120``).

Server feedback (:meth:`RateLimiter.observe_headers`) only ever *tightens*:

* ``x-ratelimit-limit-*`` lower than ours reshapes the bucket to that limit;
* ``x-ratelimit-remaining-*`` clamps our level to what the server says is left, minus what we
  have booked that the server had not counted yet (reserved, not yet answered);
* ``x-ratelimit-reset-*`` (time until the server's window is back to its initial state) is
  parsed but not turned into a pause: after a clamp our bucket refills at its own rate, which for
  a token-bucket server (OpenAI) is when a unit comes back; a sliding-window server answers 429
  with ``retry-after`` instead, which :meth:`pause_until` honours for every caller.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``"20ms"``, ``"1s"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m3s"``."""
    seconds = max(0.0, float(seconds))
    if seconds == 0.0:
        return "0s"
    if seconds < 1.0:
        return f"{int(round(seconds * 1000))}ms"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    s_txt = f"{s:.3f}".rstrip("0").rstrip(".")
    if h:
        return f"{int(h)}h{int(m)}m{s_txt}s"
    if m:
        return f"{int(m)}m{s_txt}s"
    return f"{s_txt}s"


def parse_duration(text: str | None) -> float | None:
    """Inverse of :func:`format_duration`; also accepts a bare number of seconds."""
    if text is None:
        return None
    text = str(text).strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * unit[u] for n, u in parts)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """``retry-after-ms`` (preferred) or ``retry-after`` (seconds) from a response's headers."""
    if not headers:
        return None
    h = {str(k).lower(): v for k, v in headers.items()}
    if h.get("retry-after-ms") is not None:
        try:
            return max(0.0, float(h["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    if h.get("retry-after") is not None:
        try:
            return max(0.0, float(h["retry-after"]))
        except ValueError:
            return None  # an HTTP date: ignore, back off instead
    return None


class TokenBucket:
    """A token bucket kept as a *theoretical arrival time* (GCRA): ``tat`` is when the bucket
    would be full again, so the level at ``now`` is ``capacity - max(0, tat - now) * rate``.

    Units are booked at the moment they are *used* (:meth:`book`, possibly in the future): that
    is what makes "at most ``capacity + rate * W`` units in any window of ``W`` seconds" hold for
    any traffic, even when a request waits for another bucket before it is sent.
    """

    def __init__(self, capacity: float, rate_per_s: float, now: float = 0.0) -> None:
        if capacity <= 0 or rate_per_s <= 0:
            raise ValueError("capacity and rate must be > 0")
        self.capacity = float(capacity)
        self.rate = float(rate_per_s)
        self.tat = float(now)  # full at ``now``

    def available(self, now: float) -> float:
        return self.capacity - max(0.0, self.tat - now) * self.rate

    def ready_at(self, amount: float, now: float) -> float:
        """The earliest time >= ``now`` at which ``amount`` units are available."""
        return max(now, self.tat - (self.capacity - amount) / self.rate)

    def book(self, amount: float, at: float) -> None:
        """Use ``amount`` units at time ``at`` (which must be >= their :meth:`ready_at`)."""
        self.tat = max(self.tat, at) + amount / self.rate

    def reserve(self, amount: float, now: float) -> float:
        """Book ``amount`` units; return seconds to wait before using them (0 = now)."""
        at = self.ready_at(amount, now)
        self.book(amount, at)
        return at - now

    def refund(self, amount: float, now: float | None = None) -> None:
        """Give back ``amount`` units (negative = take more: the server billed more than booked)."""
        self.tat -= amount / self.rate

    def clamp(self, level: float, now: float) -> None:
        """Make the level at ``now`` at most ``level`` (may be negative: a debt)."""
        self.tat = max(self.tat, now + (self.capacity - level) / self.rate)

    def tighten_limit(self, capacity: float, rate_per_s: float, now: float) -> None:
        if capacity < self.capacity or rate_per_s < self.rate:
            level = min(self.available(now), capacity)
            self.capacity = min(self.capacity, float(capacity))
            self.rate = min(self.rate, float(rate_per_s))
            self.tat = now + (self.capacity - min(level, self.capacity)) / self.rate


WINDOW_S = 60.0
WINDOW_SLACK_S = 1.0  # jitter allowance between our send times and the server's arrival times


def window_shape(limit: float) -> tuple[float, float]:
    """``(capacity, rate_per_s)`` of a bucket that lets at most ``limit`` units through in any
    ``WINDOW_S + WINDOW_SLACK_S`` window (``capacity + 61 * rate == limit``); see the module doc.
    Limits below 2 units per minute get ``capacity = limit / 2``."""
    limit = float(limit)
    if limit <= 0:
        raise ValueError("limit must be > 0")
    burst = min(max(1.0, limit / 120.0), limit / 2.0)
    return burst, (limit - burst) / (WINDOW_S + WINDOW_SLACK_S)


def window_bucket(limit: float, now: float = 0.0) -> TokenBucket:
    capacity, rate = window_shape(limit)
    return TokenBucket(capacity, rate, now)


class RateLimiter:
    """Requests/min and tokens/min buckets plus a shared pause (after a 429)."""

    def __init__(self, rpm: float, tpm: float, now: float = 0.0) -> None:
        self.limits = {"requests": float(rpm), "tokens": float(tpm)}
        self.requests = window_bucket(rpm, now)
        self.tokens = window_bucket(tpm, now)
        self.paused_until = -math.inf

    def reserve(self, tokens: float, now: float) -> float:
        """Book one request of ``tokens`` tokens; return seconds to wait before sending.  Both
        buckets are booked at the send time (the later of their ready times and the pause)."""
        at = max(now, self.requests.ready_at(1, now), self.tokens.ready_at(tokens, now), self.paused_until)
        self.requests.book(1, at)
        self.tokens.book(tokens, at)
        return at - now

    def refund(self, diff: float, now: float | None = None) -> None:
        """Booked more tokens than billed (``diff`` > 0) or fewer (``diff`` < 0)."""
        self.tokens.refund(diff, now)

    def refund_request(self, now: float | None = None) -> None:
        """A booked request was not sent after all."""
        self.requests.refund(1, now)

    def pause_until(self, t: float) -> None:
        self.paused_until = max(self.paused_until, t)

    def pause_remaining(self, now: float) -> float:
        return max(0.0, self.paused_until - now)

    def observe_headers(
        self,
        headers: Mapping[str, str] | None,
        now: float,
        in_flight_requests: int = 0,
        in_flight_tokens: float = 0.0,
    ) -> None:
        """Tighten to the server's view (see module doc).  ``in_flight_*``: booked by us and not
        answered yet, so possibly not counted in the server's ``remaining``."""
        if not headers:
            return
        h = {str(k).lower(): v for k, v in headers.items()}
        for kind, bucket, in_flight in (
            ("requests", self.requests, in_flight_requests),
            ("tokens", self.tokens, in_flight_tokens),
        ):
            limit = _number(h.get(f"x-ratelimit-limit-{kind}"))
            if limit is not None and 0 < limit < self.limits[kind]:
                self.limits[kind] = limit
                bucket.tighten_limit(*window_shape(limit), now)
            remaining = _number(h.get(f"x-ratelimit-remaining-{kind}"))
            if remaining is not None:
                bucket.clamp(remaining - in_flight, now)

    def snapshot(self, now: float) -> dict:
        return {
            "requests_available": self.requests.available(now),
            "tokens_available": self.tokens.available(now),
            "rpm": self.limits["requests"],
            "tpm": self.limits["tokens"],
            "paused_for_s": self.pause_remaining(now),
        }


def _number(v: str | None) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None
