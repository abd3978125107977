"""Data types at the boundary of the LLM layer (plain dataclasses: they cross Ray actor calls)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "budget_stopped"]

# why a request gave no complete answer (LLMResult.cause, ``select/requests.jsonl``); every result
# that is not ``ok`` has one, an ``ok`` result only ``truncated`` (a cut answer with text, kept)
CAUSES = {
    "unreachable": "no connection to the endpoint (refused, reset, DNS) after llm.max_retries",
    "timeout": "no answer within llm.timeout_s after llm.max_retries",
    "http_4xx": "the endpoint refused the request (a 4xx other than those below)",
    "http_5xx": "server errors (5xx) until llm.max_retries ran out",
    "rate_limited": "429 until llm.max_retries ran out, or a request larger than the rate limit",
    "bad_body": "2xx answers that are not chat completions until llm.max_retries ran out",
    "format_rejected": "the endpoint rejected the response format it was asked for (llm.structured_output)",
    "context_length": "the prompt is longer than the model's context",
    "truncated": "the answer was cut at max_tokens (kept when it holds text)",
    "empty": "an empty answer (e.g. a reasoning model that spent max_tokens thinking): not used",
    "budget": "llm.max_usd reached before this request",
}


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
    cause: str | None = None  # a CAUSES key: set for every result that is not ok, "truncated" for a cut ok
    format: str | None = None  # the response format the answer was asked in (policy.LADDER), None: cached

    def to_dict(self) -> dict:
        return asdict(self)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


OPENAI_BASE_URL = "https://api.openai.com/v1"


def endpoint_id(provider: str, base_url: str | None) -> str:
    """Who answers: ``simulator`` (the one this project starts), or ``<provider>:<base URL>``
    (OpenAI's own when none is set; scheme and host lower-cased, no trailing slash)."""
    if provider == "simulator" and not base_url:
        return "simulator"
    url = (base_url or OPENAI_BASE_URL).strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{provider}:{scheme.lower()}{sep}{host.lower()}{slash}{path}"


def request_key(model: str, messages: list[dict], params: dict, prompt_version: str, *, endpoint: str) -> str:
    """sha256 (hex) of the canonical JSON of everything that decides the answer: the endpoint
    (:func:`endpoint_id`) and model that answer it, the messages and parameters, the prompt's version."""
    payload = {"endpoint": endpoint, "model": model, "messages": messages, "params": params,
               "prompt_version": prompt_version}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
