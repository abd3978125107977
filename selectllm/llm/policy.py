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
  (the response format, down :data:`LADDER`; ``max_tokens`` vs ``max_completion_tokens``;
  ``temperature``), from answers that ignore the response format, and from reported reasoning
  tokens (room for a reasoning model's thinking).
"""

from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import dataclass, field
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

# The response formats, most to least constrained; ``structured_output: auto`` starts at the top
# and steps down one rung each time the endpoint shows it cannot do one:
#   json_schema        {"type": "json_schema", "json_schema": {...}}   OpenAI, vLLM, Ollama >= 0.5, LM Studio, TGI >= 3
#   json_object_schema {"type": "json_object", "schema": {...}}       llama.cpp / llama-cpp-python (a grammar)
#   json_object        {"type": "json_object"}                        JSON of any shape (older Ollama, OpenAI JSON mode)
#   text               no response format; the request's text form     any chat endpoint
LADDER = ("json_schema", "json_object_schema", "json_object", "text")

# models known to think before answering (their reasoning tokens count against max_tokens)
KNOWN_REASONING = re.compile(r"(?:^|[/:])(?:o[1-9](?:-|$)|gpt-5|gpt-oss)|deepseek-r1|r1-distill|qwq|magistral"
                             r"|qwen3(?!.*instruct)|thinking|reasoner", re.I)


def known_reasoning(model: str) -> bool:
    return bool(KNOWN_REASONING.search(model or ""))


def names_response_format(param: str | None, message: str | None) -> bool:
    """Whether a rejection is about the response format (OpenAI names the param; FastAPI/pydantic
    servers put the field's location, e.g. ``('body', 'response_format', 'type')``, in the message)."""
    msg = (message or "").lower()
    return (param or "").lower() == "response_format" or any(
        w in msg for w in ("response_format", "json_schema", "response format", "json_object", "guided_json",
                           "structured output", "grammar"))


def rejects_format(status: int, code: str | None, param: str | None, message: str | None) -> bool:
    """Whether an error is the endpoint refusing the response format: a 400/415/422 naming it, or a
    5xx naming it (llama-cpp-python answers an unknown ``type`` with a 500 carrying the pydantic
    error) -- recognised by what it says, so it is never retried as a transient server error."""
    if code == "context_length_exceeded" or status in (401, 403, 404, 429):
        return False
    return (status in (400, 415, 422) or status >= 500) and names_response_format(param, message)


def response_format_for(mode: str, rf: dict | None) -> dict | None:
    """The ``response_format`` sent in ``mode`` for a request whose own (OpenAI ``json_schema``)
    response format is ``rf``; None: send none."""
    if rf is None or mode == "text":
        return None
    if mode == "json_schema":
        return rf
    schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else rf.get("schema")
    if mode == "json_object_schema" and schema:
        return {"type": "json_object", "schema": schema}
    return {"type": "json_object"}


def is_json_object(text: str | None) -> bool:
    """Whether an answer is one JSON object (what a structured request gets from an endpoint that
    honours it)."""
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
    """The request fields an endpoint accepts, learnt during a run.

    **Response format** (``llm.structured_output``).  ``auto`` starts at ``json_schema`` and steps
    down :data:`LADDER` (``json_object_schema``, ``json_object``, ``text``) after a request shows
    the endpoint cannot do the current rung: a rejection naming the response format
    (:func:`rejects_format`; the request is sent again at once one rung down, unbilled) or a 200
    answer that is not a JSON object (a server that ignores the field; that answer is kept: the
    parser reads both forms).  Once an answer in the current rung is JSON, the rung is confirmed
    and odd answers change nothing.  In ``text`` requests carry their ``text_messages``.  A fixed
    form (``json_schema`` ... ``text``) is always sent; its rejection is the request's final error
    (cause ``format_rejected``).  ``mode`` is the current rung, ``fallback`` says why it moved.

    **Reasoning** (``llm.reasoning``): a model known to reason (:func:`known_reasoning`), or any
    endpoint that reports ``usage.completion_tokens_details.reasoning_tokens`` (``auto``), gets
    ``llm.reasoning_tokens`` more answer tokens per request; ``llm.reasoning_effort`` is sent as
    ``reasoning_effort`` when set.
    """

    structured_output: str = "auto"  # llm.structured_output
    model: str = ""
    reasoning_setting: str = "auto"  # llm.reasoning
    reasoning_tokens: int = 1024
    reasoning_effort: str | None = None
    mode: str = "json_schema"
    confirmed: bool = False  # a request in the current rung got a JSON answer
    steps: list[str] = field(default_factory=list)  # why the response format stepped down, in order
    reasoning: bool = False
    reasoning_seen: bool = False  # the endpoint reported reasoning tokens
    max_tokens_param: str = "max_tokens"
    send_temperature: bool = True

    def __post_init__(self) -> None:
        if self.structured_output in ("on", "off"):  # the old names
            self.structured_output = "json_schema" if self.structured_output == "on" else "text"
        if self.structured_output != "auto":
            self.mode = self.structured_output
        self.reasoning = self.reasoning_setting == "on" or (
            self.reasoning_setting == "auto" and known_reasoning(self.model))

    @classmethod
    def of(cls, cfg: Any) -> "RequestShape":
        """The shape an :class:`~selectllm.config.LLMConfig` starts with."""
        return cls(cfg.structured_output, cfg.model, cfg.reasoning, cfg.reasoning_tokens, cfg.reasoning_effort)

    @property
    def auto(self) -> bool:
        return self.structured_output == "auto"

    @property
    def fallback(self) -> str | None:
        return "; ".join(self.steps) or None

    # ---- what a request carries
    def mode_for(self, response_format: Any) -> str | None:
        """The rung a request with this (structured) response format is sent in; None: it has none."""
        return None if response_format is None else self.mode

    def sends_rf(self, response_format: Any) -> bool:
        return response_format is not None and self.mode != "text"

    def needs_probe(self, response_format: Any) -> bool:
        """Whether a request with this ``response_format`` would test what the endpoint does."""
        return response_format is not None and self.auto and self.mode != "text" and not self.confirmed

    def messages(self, req: Any) -> list:
        """The messages to send for ``req`` (an LLMRequest): its text form in the ``text`` rung."""
        if req.response_format is not None and self.mode == "text" and req.text_messages:
            return req.text_messages
        return req.messages

    def answer_tokens(self, max_tokens: int) -> int:
        """Answer tokens to ask for: ``max_tokens`` plus room for a reasoning model's thinking."""
        return int(max_tokens) + (self.reasoning_tokens if self.reasoning else 0)

    def body(self, model: str, messages: list, max_tokens: int, temperature: float,
             response_format: Any = None) -> dict:
        out: dict[str, Any] = {"model": model, "messages": messages, self.max_tokens_param: max_tokens}
        if self.send_temperature:
            out["temperature"] = temperature
        rf = response_format_for(self.mode, response_format)
        if rf is not None:
            out["response_format"] = rf
        if self.reasoning_effort:
            out["reasoning_effort"] = self.reasoning_effort
        return out

    # ---- what the endpoint showed
    def step_down(self, sent_mode: str | None, why: str) -> bool:
        """``auto``: the endpoint cannot do ``sent_mode``; go one rung down (if no other request
        did meanwhile).  True when the request should be sent again in the new rung."""
        if not self.auto or sent_mode is None or sent_mode == "text":
            return False
        if sent_mode != self.mode:  # another request already moved on
            return LADDER.index(self.mode) > LADDER.index(sent_mode)
        self.mode = LADDER[LADDER.index(sent_mode) + 1]
        self.confirmed = False
        self.steps.append(f"{sent_mode}: {why}")
        log.warning("the LLM endpoint cannot do %s (%s): sending %s from now on", sent_mode, why, self.mode)
        return True

    def check_answer(self, text: str | None, sent_mode: str | None) -> None:
        """A complete 200 answer to a structured request: one that is not JSON shows an endpoint
        that ignored the response format (unless the rung was confirmed already)."""
        if not self.auto or sent_mode is None or sent_mode == "text" or sent_mode != self.mode:
            return
        if is_json_object(text):
            self.confirmed = True
        elif not self.confirmed:
            self.step_down(sent_mode, "it answered plain text")

    def saw_reasoning(self, reasoning_tokens: int) -> None:
        """The endpoint reported reasoning tokens: leave room for them from now on (``auto``)."""
        if reasoning_tokens > 0 and not self.reasoning_seen:
            self.reasoning_seen = True
            if self.reasoning_setting == "auto" and not self.reasoning:
                self.reasoning = True
                log.warning("the LLM endpoint reports reasoning tokens (%d): asking for %d more answer tokens "
                            "per request (llm.reasoning_tokens)", reasoning_tokens, self.reasoning_tokens)

    def finding(self) -> dict | None:
        """What this shape learnt that other workers should adopt (the Ray pool shares it); None: nothing."""
        if not self.steps and not self.reasoning_seen:
            return None
        return {"mode": self.mode, "steps": list(self.steps), "reasoning_seen": self.reasoning_seen}

    def adopt(self, found: dict | None) -> None:
        """Take another worker's finding, without a warning of its own."""
        if not found:
            return
        if self.auto and LADDER.index(found["mode"]) > LADDER.index(self.mode):
            self.mode, self.steps, self.confirmed = found["mode"], list(found["steps"]), False
        if found.get("reasoning_seen") and not self.reasoning_seen:
            self.reasoning_seen = True
            self.reasoning = self.reasoning or self.reasoning_setting == "auto"

    def report(self, out: dict) -> None:
        """What was negotiated, for the stage's manifest and the end-of-stage line."""
        out["structured_output"] = self.mode
        out["structured_fallback"] = self.fallback
        out["reasoning"] = self.reasoning

    def adapt(self, status: int, code: str | None, param: str | None, message: str | None) -> bool:
        """A rejection of another field that a different request shape avoids: adapt and say so
        (True = send again)."""
        param = (param or "").lower()
        msg = (message or "").lower()
        if status not in SHAPE_STATUSES or code == "context_length_exceeded":
            return False
        if self.max_tokens_param == "max_tokens" and (param == "max_tokens" or "max_completion_tokens" in msg):
            log.warning("the LLM endpoint rejected max_tokens; using max_completion_tokens")
            self.max_tokens_param = "max_completion_tokens"
            return True
        if self.send_temperature and param == "temperature":
            log.warning("the LLM endpoint rejected temperature; sending requests without it")
            self.send_temperature = False
            return True
        if self.reasoning_effort and param == "reasoning_effort":
            log.warning("the LLM endpoint rejected reasoning_effort; sending requests without it")
            self.reasoning_effort = None
            return True
        return False
