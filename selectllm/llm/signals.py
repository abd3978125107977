"""Graceful stop: the first SIGINT/SIGTERM finishes what is in flight; unsent requests are reported."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any, Callable

from selectllm.errors import UserError
from selectllm.llm.types import LLMResult


class LLMInterrupted(UserError):
    """SIGINT/SIGTERM: requests in flight were finished and stored, the rest were not sent."""



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
            from selectllm.console import say  # the terminal, also while engine output goes to the log

            say(f"selectllm: {self.received}: finishing the LLM requests in flight and storing their answers "
                f"(send it again to abort at once)")
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
