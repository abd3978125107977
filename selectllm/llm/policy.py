"""The one retry and error policy of every LLM path (online runner, Ray pool actors, Batch API).

Pure functions and one small state object, no I/O:

* :func:`backoff` -- exponential backoff with full jitter, ``retry-after`` honoured.
* :func:`is_retried` -- which HTTP statuses are tried again (429, 5xx); every other 4xx is final.
* :func:`auth_error` / :func:`quota_error` -- the one-line :class:`UserError` for 401/403 and an
  exhausted quota (the key itself never appears).
* :func:`scrub` -- error text safe to store: the API key replaced, one line, 500 characters.
* :func:`prompt_estimate` -- the prompt tokens to reserve (:data:`PROMPT_MARGIN` for real
  endpoints, whose tokenizer may differ from ours).
* :class:`RequestShape` -- what an endpoint accepts, learnt once per run from its rejections
  (``response_format``, ``max_tokens`` vs ``max_completion_tokens``, ``temperature``).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any

from selectllm.errors import UserError

log = logging.getLogger("selectllm.llm")

PROMPT_MARGIN = (1.10, 16)  # real endpoints: reserve ceil(prompt * 1.10) + 16 prompt tokens


def prompt_estimate(provider: str, prompt_tokens: int) -> int:
    if provider == "simulator":
        return prompt_tokens
    return math.ceil(prompt_tokens * PROMPT_MARGIN[0]) + PROMPT_MARGIN[1]


def backoff(rng: random.Random, failures: int, base_s: float, cap_s: float,
            retry_after: float | None = None) -> float:
    """Seconds to wait before attempt ``failures + 1``."""
    if retry_after is not None:
        return retry_after + rng.uniform(0, 0.1 * max(retry_after, base_s))
    return rng.uniform(0, min(cap_s, base_s * 2 ** (failures - 1)))


def is_retried(status: int) -> bool:
    return status == 429 or status >= 500


def scrub(msg: str, api_key: str | None) -> str:
    if api_key and len(api_key) >= 4:
        msg = msg.replace(api_key, "***")
    return msg.replace("\n", " ")[:500]


def auth_error(base_url: str | None, api_key_env: str, status: int) -> UserError:
    return UserError(f"the LLM endpoint ({base_url or 'OpenAI'}) rejected the API key from "
                     f"${api_key_env} (HTTP {status})")


def quota_error(base_url: str | None) -> UserError:
    return UserError(f"the LLM account has no quota left (HTTP 429 insufficient_quota) at {base_url or 'OpenAI'}")


def final_error(model: str, status: int, code: str | None, msg: str) -> str:
    """The stored error of a request that is not tried again."""
    if code == "context_length_exceeded":
        msg = f"prompt too long for {model} (context_length_exceeded, not retried): {msg}"
    return f"HTTP {status}: {msg}"


@dataclass
class RequestShape:
    """The request fields an endpoint accepts, adapted for the rest of the run on rejection."""

    structured_output: str = "auto"  # llm.structured_output: on | off | auto
    rf_rejected: bool = False
    max_tokens_param: str = "max_tokens"
    send_temperature: bool = True

    def sends_rf(self, response_format: Any) -> bool:
        if response_format is None or self.structured_output == "off":
            return False
        return self.structured_output == "on" or not self.rf_rejected

    def body(self, model: str, messages: list, max_tokens: int, temperature: float,
             response_format: Any = None) -> dict:
        out: dict[str, Any] = {"model": model, "messages": messages, self.max_tokens_param: max_tokens}
        if self.send_temperature:
            out["temperature"] = temperature
        if self.sends_rf(response_format):
            out["response_format"] = response_format
        return out

    def adapt(self, status: int, code: str | None, param: str | None, message: str | None, sent_rf: bool) -> bool:
        """A rejection that another request shape avoids: adapt and say so (True = send again)."""
        param = (param or "").lower()
        msg = (message or "").lower()
        if status != 400 or code == "context_length_exceeded":
            return False
        if sent_rf and self.structured_output == "auto" and (
                param == "response_format" or "response_format" in msg or "json_schema" in msg):
            if not self.rf_rejected:
                log.warning("the LLM endpoint rejected response_format; sending requests without it")
            self.rf_rejected = True
            return True
        if self.max_tokens_param == "max_tokens" and (param == "max_tokens" or "max_completion_tokens" in msg):
            log.warning("the LLM endpoint rejected max_tokens; using max_completion_tokens")
            self.max_tokens_param = "max_completion_tokens"
            return True
        if self.send_temperature and param == "temperature":
            log.warning("the LLM endpoint rejected temperature; sending requests without it")
            self.send_temperature = False
            return True
        return False
