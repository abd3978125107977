"""Money: the cost of tokens and a hard spending cap (pure; no I/O, no clock).

A request may be sent only after it has reserved its *maximum* cost (every prompt token plus
``max_tokens`` completion tokens); when its answer comes back the reservation is settled to the
actual cost.  So ``spent + reserved <= max_usd`` holds at every moment, and the final spend can
never exceed the cap as long as a request never bills more than its maximum.

The comparison keeps a relative headroom of :data:`CAP_HEADROOM` (a billionth of the cap), so
that the spend summed again by anyone, in any order, with float rounding, is still <= the cap.
"""

from __future__ import annotations

from selectllm.config import PriceConfig

CAP_HEADROOM = 1e-9


def cost_usd(input_tokens: int, output_tokens: int, price: PriceConfig) -> float:
    return input_tokens * price.input_per_mtok / 1e6 + output_tokens * price.output_per_mtok / 1e6


def max_request_cost(prompt_tokens: int, max_tokens: int, price: PriceConfig) -> float:
    """The most a request can cost: its whole prompt plus ``max_tokens`` of answer."""
    return cost_usd(prompt_tokens, max_tokens, price)


class Budget:
    """A hard cap in USD with reservations."""

    def __init__(self, max_usd: float, spent: float = 0.0) -> None:
        if max_usd < 0:
            raise ValueError("max_usd must be >= 0")
        self.max_usd = float(max_usd)
        self.spent = float(spent)
        self.reserved = 0.0
        self.outstanding = 0  # reservations not yet settled

    @property
    def limit(self) -> float:
        return self.max_usd * (1.0 - CAP_HEADROOM)

    def try_reserve(self, usd: float) -> bool:
        """Reserve ``usd`` if ``spent + reserved + usd <= max_usd``."""
        if usd < 0:
            raise ValueError("cannot reserve a negative amount")
        if self.spent + self.reserved + usd <= self.limit:
            self.reserved += usd
            self.outstanding += 1
            return True
        return False

    def could_fit_later(self, usd: float) -> bool:
        """Whether ``usd`` might fit once outstanding reservations are settled (worth waiting)."""
        return self.outstanding > 0 and self.spent + usd <= self.limit

    def settle(self, reserved: float, actual: float) -> None:
        """Replace a reservation by what was actually billed (0 for a failed attempt)."""
        if actual < 0:
            raise ValueError("actual cost must be >= 0")
        self.reserved = max(0.0, self.reserved - reserved)
        self.outstanding = max(0, self.outstanding - 1)
        if self.outstanding == 0:
            self.reserved = 0.0  # no float dust left behind
        self.spent += actual

    def release(self, reserved: float) -> None:
        self.settle(reserved, 0.0)

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.spent - self.reserved)

    def snapshot(self) -> dict:
        return {"max_usd": self.max_usd, "spent": self.spent, "reserved": self.reserved,
                "outstanding": self.outstanding}
