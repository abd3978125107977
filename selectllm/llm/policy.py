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
  (``response_format``, ``max_tokens`` vs ``max_completion_tokens``, ``temperature``) and from
  answers that ignore ``response_format``.
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


def error_text(err: Any) -> str:
    """An API error's message, with its body when the message does not carry it (the SDK says
    only "Error code: 422" for a FastAPI body such as ``{"detail": [{"loc": [...], "msg": ...}]}``)."""
    import json

    msg = str(getattr(err, "message", None) or err)
    body = getattr(err, "body", None)
    if body is not None and not (isinstance(body, dict) and "message" in body):  # OpenAI's error object has one
        msg = f"{msg}: {json.dumps(body, default=str)}"
    return msg


def final_error(model: str, status: int, code: str | None, msg: str) -> str:
    """The stored error of a request that is not tried again."""
    if code == "context_length_exceeded":
        msg = f"prompt too long for {model} (context_length_exceeded, not retried): {msg}"
    return f"HTTP {status}: {msg}"


# client errors after which another request shape may be accepted (FastAPI-based servers say 422)
SHAPE_STATUSES = (400, 422)


def names_response_format(param: str | None, message: str | None) -> bool:
    """Whether a rejection is about ``response_format`` (OpenAI names the param; FastAPI/pydantic
    servers put the field's location, e.g. ``["body", "response_format"]``, in the message)."""
    msg = (message or "").lower()
    return (param or "").lower() == "response_format" or any(
        w in msg for w in ("response_format", "json_schema", "response format", "guided_json"))


def is_json_object(text: str | None) -> bool:
    """Whether an answer is one JSON object (what a ``json_schema`` request gets from an endpoint
    that honours it)."""
    import json

    t = (text or "").strip()
    if t.startswith("```"):  # a fenced block: ```json ... ```
        t = t.strip("`").removeprefix("json").strip()
    try:
        return isinstance(json.loads(t), dict)
    except ValueError:
        return False


@dataclass
class RequestShape:
    """The request fields an endpoint accepts, adapted for the rest of the run on rejection.

    Structured outputs (``llm.structured_output: auto``) stop, for the rest of the run, after the
    first request that shows the endpoint cannot do them: a 400/422 naming the response format
    (the request is sent again at once in the text form, unbilled), or a 200 answer that is not a
    JSON object (a server that ignores the field; that answer is kept: the parser reads both
    forms).  ``fallback`` says which, for the manifest.  Requests then carry their
    ``text_messages`` (the paper's ``[3], [7]`` form) and no ``response_format``.
    """

    structured_output: str = "auto"  # llm.structured_output: on | off | auto
    rf_rejected: bool = False
    rf_confirmed: bool = False  # a structured request got a JSON answer
    fallback: str | None = None  # why structured outputs stopped (None: they did not)
    max_tokens_param: str = "max_tokens"
    send_temperature: bool = True

    def sends_rf(self, response_format: Any) -> bool:
        if response_format is None or self.structured_output == "off":
            return False
        return self.structured_output == "on" or not self.rf_rejected

    def needs_probe(self, response_format: Any) -> bool:
        """Whether a request with this ``response_format`` would test what the endpoint does."""
        return (response_format is not None and self.structured_output == "auto" and not self.rf_rejected
                and not self.rf_confirmed)

    def messages(self, req: Any) -> list:
        """The messages to send for ``req`` (an LLMRequest): its text form once structured outputs stopped."""
        if req.response_format is not None and not self.sends_rf(req.response_format) and req.text_messages:
            return req.text_messages
        return req.messages

    def body(self, model: str, messages: list, max_tokens: int, temperature: float,
             response_format: Any = None) -> dict:
        out: dict[str, Any] = {"model": model, "messages": messages, self.max_tokens_param: max_tokens}
        if self.send_temperature:
            out["temperature"] = temperature
        if self.sends_rf(response_format):
            out["response_format"] = response_format
        return out

    def stop_structured(self, why: str) -> None:
        if not self.rf_rejected:
            log.warning("structured outputs off for the rest of the run: %s", why)
            self.rf_rejected = True
            self.fallback = why

    def adopt(self, fallback: str | None) -> None:
        """Take another worker's finding (the Ray pool shares it), without a warning of its own."""
        if fallback and not self.rf_rejected and self.structured_output == "auto":
            self.rf_rejected, self.fallback = True, fallback

    def check_answer(self, text: str | None, sent_rf: bool) -> None:
        """A 200 answer to a structured request: an endpoint that ignored the schema answers text."""
        if not sent_rf or self.structured_output != "auto":
            return
        if is_json_object(text):
            self.rf_confirmed = True
        elif not self.rf_confirmed:  # one odd answer from an endpoint that does JSON changes nothing
            self.stop_structured("the endpoint answered plain text to a json_schema request")

    def adapt(self, status: int, code: str | None, param: str | None, message: str | None, sent_rf: bool) -> bool:
        """A rejection that another request shape avoids: adapt and say so (True = send again)."""
        param = (param or "").lower()
        msg = (message or "").lower()
        if status not in SHAPE_STATUSES or code == "context_length_exceeded":
            return False
        if sent_rf and self.structured_output == "auto" and names_response_format(param, msg):
            self.stop_structured(f"HTTP {status} naming the response format: {scrub(message or '', None)[:160]}")
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
