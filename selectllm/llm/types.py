"""Data types at the boundary of the LLM layer (plain dataclasses: they cross Ray actor calls)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "budget_stopped"]


@dataclass
class LLMRequest:
    """One chat request.  ``key`` is its content key (:func:`request_key`); ``group_id`` is the
    caller's handle (e.g. the candidate group), carried through untouched.

    ``text_messages``: the same question asking for a plain-text answer, sent instead of
    ``messages`` once the endpoint has shown that it rejects or ignores ``response_format``
    (:class:`selectllm.llm.policy.RequestShape`).  It is derived from the same inputs, so the key
    (computed from ``messages``) names either form."""

    key: str
    group_id: Any
    messages: list[dict]
    max_tokens: int
    response_format: dict | None = None
    meta: dict = field(default_factory=dict)
    text_messages: list[dict] | None = None


@dataclass
class LLMResult:
    """The outcome of one request.

    ``input_tokens`` / ``output_tokens`` / ``usd`` are what the answer cost, summed over every
    billed attempt (a ``length`` retry bills twice).  For ``cached=True`` they are the figures
    recorded when the answer was first bought: nothing was spent in this run, so this run's
    spend is ``sum(r.usd for r in results if not r.cached)``.
    """

    key: str
    group_id: Any
    status: Status
    text: str | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    error: str | None = None
    attempts: int = 0
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(model: str, messages: list[dict], params: dict, prompt_version: str) -> str:
    """sha256 (hex) of the canonical JSON of everything that decides the answer."""
    payload = {"model": model, "messages": messages, "params": params, "prompt_version": prompt_version}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
