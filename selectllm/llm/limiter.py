"""Client-side rate limiting: token buckets for requests/min and tokens/min (pure maths).

No clock is read here: every method takes ``now`` (seconds, any monotonic origin), so the maths
is deterministic and tested with a fake clock, and the same object can live in a Ray actor.

Model: a bucket holds up to ``capacity`` units and refills continuously at ``rate`` units/s.
:meth:`TokenBucket.reserve` *books* the units at once (the level may go negative: a debt) and
returns how long the caller must wait before sending, so concurrent callers queue up fairly in
the order they reserved.  A reservation larger than the capacity is allowed (it waits for the
debt to be repaid) but a server would reject it, so callers should refuse such requests upfront.

Server feedback (:meth:`RateLimiter.observe_headers`) only ever *tightens*:

* ``x-ratelimit-limit-*`` lower than ours lowers our capacity and refill rate;
* ``x-ratelimit-remaining-*`` clamps our level to what the server says is left, minus what we
  have in flight that the server had not counted yet;
* ``x-ratelimit-reset-*`` (time until the server's window is back to its initial state) is
  parsed but not turned into a pause: after a clamp to 0 our bucket refills at ``limit/60`` per
  second, which for a token-bucket server (OpenAI) is exactly when a unit comes back; a
  sliding-window server answers 429 with ``retry-after`` instead, which :meth:`pause_until`
  honours for every caller.
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
    def __init__(self, capacity: float, rate_per_s: float, now: float = 0.0) -> None:
        if capacity <= 0 or rate_per_s <= 0:
            raise ValueError("capacity and rate must be > 0")
        self.capacity = float(capacity)
        self.rate = float(rate_per_s)
        self.level = float(capacity)
        self.t = float(now)

    def _refill(self, now: float) -> None:
        if now > self.t:
            self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
            self.t = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.level

    def reserve(self, amount: float, now: float) -> float:
        """Book ``amount`` units; return seconds to wait before using them (0 = now)."""
        self._refill(now)
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def refund(self, amount: float, now: float | None = None) -> None:
        """Give back ``amount`` units (negative = take more: the server billed more than booked)."""
        if now is not None:
            self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def clamp(self, level: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.level, level)

    def tighten_limit(self, capacity: float, rate_per_s: float, now: float) -> None:
        if capacity < self.capacity:
            self._refill(now)
            self.capacity = float(capacity)
            self.rate = float(rate_per_s)
            self.level = min(self.level, self.capacity)


class RateLimiter:
    """Requests/min and tokens/min buckets plus a shared pause (after a 429)."""

    def __init__(self, rpm: float, tpm: float, now: float = 0.0) -> None:
        self.requests = TokenBucket(rpm, rpm / 60.0, now)
        self.tokens = TokenBucket(tpm, tpm / 60.0, now)
        self.paused_until = -math.inf

    def reserve(self, tokens: float, now: float) -> float:
        """Book one request of ``tokens`` tokens; return seconds to wait before sending."""
        w_req = self.requests.reserve(1, now)
        w_tok = self.tokens.reserve(tokens, now)
        return max(0.0, w_req, w_tok, self.paused_until - now)

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
        """Tighten to the server's view (see module doc).  ``in_flight_*``: sent by us and not
        answered yet, so possibly not counted in the server's ``remaining``."""
        if not headers:
            return
        h = {str(k).lower(): v for k, v in headers.items()}
        for kind, bucket, in_flight in (
            ("requests", self.requests, in_flight_requests),
            ("tokens", self.tokens, in_flight_tokens),
        ):
            limit = _number(h.get(f"x-ratelimit-limit-{kind}"))
            if limit is not None and limit > 0:
                bucket.tighten_limit(limit, limit / 60.0, now)
            remaining = _number(h.get(f"x-ratelimit-remaining-{kind}"))
            if remaining is not None:
                bucket.clamp(remaining - in_flight, now)

    def snapshot(self, now: float) -> dict:
        return {
            "requests_available": self.requests.available(now),
            "tokens_available": self.tokens.available(now),
            "rpm": self.requests.capacity,
            "tpm": self.tokens.capacity,
            "paused_for_s": self.pause_remaining(now),
        }


def _number(v: str | None) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None
