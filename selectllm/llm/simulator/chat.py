"""The simulator's chat endpoint: server state (rate-limit window, attempts, stats, request log),
request validation, and the ``/v1/chat/completions``, ``/v1/models``, ``/v1/health`` and
``/v1/stats`` handlers.  Batch lines go through the same :class:`SimState` (see ``batch.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from selectllm.config import SimulatorConfig
from selectllm.llm.limiter import format_duration
from selectllm.llm.simulator.answers import MALFORMED, _unit, answer_text
from selectllm.llm.tokens import count_message_tokens, truncate_to_tokens

WINDOW_S = 60.0
DEFAULT_CONTEXT_LIMIT = 128_000
DEFAULT_MAX_TOKENS = 4096
DEFAULT_BATCH_DELAY_S = 1.0
DEFAULT_MODELS = (
    "gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4-turbo", "gpt-4",
    "gpt-3.5-turbo", "gpt-5", "gpt-5-mini", "gpt-5-nano", "o3-mini", "o4-mini", "simulator",
)


def _open_log(url: str):
    """The request log: a local file appended line by line, or an object (``s3://``, ``gs://``)
    appended through fsspec (the lines go out as multipart parts; the object is complete when the
    server stops)."""
    if "://" not in url or url.startswith("file://"):
        path = url.removeprefix("file://")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", encoding="utf-8", buffering=1)
    import fsspec

    return fsspec.open(url, "ab").open()



def _error(status: int, message: str, type_: str, code: str | None = None,
           param: str | None = None, headers: dict | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class _Outcome:
    status: int
    body: dict
    prompt_tokens: int = 0
    completion_tokens: int = 0
    malformed: bool = False


@dataclass
class SimState:
    cfg: SimulatorConfig
    log_path: str | None = None
    models: frozenset[str] | None = None  # None = accept any model name
    context_limit: int = DEFAULT_CONTEXT_LIMIT
    batch_delay_s: float = DEFAULT_BATCH_DELAY_S
    window: deque = field(default_factory=deque)  # [t, tokens]
    window_tokens: int = 0
    attempts: dict = field(default_factory=dict)  # body sha -> admitted count
    stats: dict = field(default_factory=lambda: {
        "requests": 0, "by_status": {}, "prompt_tokens": 0, "completion_tokens": 0,
        "malformed": 0, "length": 0,
        "batch": {"batches": 0, "lines": 0, "prompt_tokens": 0, "completion_tokens": 0},
    })
    files: dict = field(default_factory=dict)
    batches: dict = field(default_factory=dict)
    _log: Any = None

    # ---- log
    def log(self, rec: dict) -> None:
        if not self.log_path:
            return
        if self._log is None:
            self._log = _open_log(self.log_path)
        line = json.dumps(rec, sort_keys=True) + "\n"
        self._log.write(line if isinstance(self._log, io.TextIOBase) else line.encode("utf-8"))

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # ---- sliding window
    def _prune(self, now: float) -> None:
        while self.window and self.window[0][0] <= now - WINDOW_S:
            _, tok = self.window.popleft()
            self.window_tokens -= tok

    def admit(self, now: float, tokens: int) -> tuple[bool, float, str]:
        """Admit a request of ``tokens`` or say how long to wait: ``(ok, retry_after_s, why)``."""
        self._prune(now)
        rpm, tpm = self.cfg.rpm, self.cfg.tpm
        if tpm is not None and tokens > tpm:
            return False, 0.0, "too_large"
        waits: list[tuple[float, str]] = []
        if rpm is not None and len(self.window) >= rpm:
            waits.append((self.window[len(self.window) - rpm][0] + WINDOW_S - now, "requests"))
        if tpm is not None and self.window_tokens + tokens > tpm:
            freed, need = 0, self.window_tokens + tokens - tpm
            for t, tok in self.window:
                freed += tok
                if freed >= need:
                    waits.append((t + WINDOW_S - now, "tokens"))
                    break
        if waits:
            wait, why = max(waits)
            return False, max(0.001, wait), why
        self.window.append([now, tokens])
        self.window_tokens += tokens
        return True, 0.0, ""

    def ratelimit_headers(self, now: float) -> dict[str, str]:
        self._prune(now)
        h: dict[str, str] = {}
        reset = (self.window[-1][0] + WINDOW_S - now) if self.window else 0.0
        if self.cfg.rpm is not None:
            h["x-ratelimit-limit-requests"] = str(self.cfg.rpm)
            h["x-ratelimit-remaining-requests"] = str(max(0, self.cfg.rpm - len(self.window)))
            h["x-ratelimit-reset-requests"] = format_duration(reset)
        if self.cfg.tpm is not None:
            h["x-ratelimit-limit-tokens"] = str(self.cfg.tpm)
            h["x-ratelimit-remaining-tokens"] = str(max(0, self.cfg.tpm - self.window_tokens))
            h["x-ratelimit-reset-tokens"] = format_duration(reset)
        return h

    # ---- chat logic shared by online and batch requests
    def validate(self, body: Any) -> tuple[_Outcome | None, int, int]:
        """``(error or None, prompt_tokens, max_tokens)``."""
        if not isinstance(body, dict):
            return _Outcome(400, _err_body("request body must be a JSON object", "invalid_request_error")), 0, 0
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            return _Outcome(400, _err_body("you must provide a model parameter", "invalid_request_error",
                                           param="model")), 0, 0
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _Outcome(400, _err_body("'messages' must be a non-empty array of objects",
                                           "invalid_request_error", param="messages")), 0, 0
        if self.models is not None and model not in self.models:
            return _Outcome(404, _err_body(f"The model `{model}` does not exist or you do not have access to it.",
                                           "invalid_request_error", code="model_not_found")), 0, 0
        rf = body.get("response_format")
        if rf is not None and (not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema")):
            return _Outcome(400, _err_body("Invalid value for 'response_format'", "invalid_request_error",
                                           param="response_format")), 0, 0
        given = body.get("max_completion_tokens") or body.get("max_tokens")
        if given is not None and (not isinstance(given, int) or given < 1):
            return _Outcome(400, _err_body("max_tokens must be a positive integer", "invalid_request_error",
                                           param="max_tokens")), 0, 0
        prompt = count_message_tokens(messages, model)
        # without an explicit cap the answer may fill the rest of the context (OpenAI's behaviour)
        max_tokens = given if given is not None else max(1, min(DEFAULT_MAX_TOKENS, self.context_limit - prompt))
        if prompt + (given or 0) > self.context_limit or prompt >= self.context_limit:
            msg = (f"This model's maximum context length is {self.context_limit} tokens. However, you "
                   f"requested {prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in "
                   f"the completion). Please reduce the length of the messages or completion.")
            return _Outcome(400, _err_body(msg, "invalid_request_error", code="context_length_exceeded",
                                           param="messages")), prompt, max_tokens
        return None, prompt, max_tokens

    def answer(self, body: dict, body_sha: str, attempt: int, prompt: int, max_tokens: int) -> _Outcome:
        model = body["model"]
        malformed = _unit(body_sha, self.cfg.seed, attempt, "malformed") < self.cfg.malformed_rate
        if malformed:
            text = MALFORMED[int(_unit(body_sha, self.cfg.seed, attempt, "which") * len(MALFORMED))]
        else:
            text = answer_text(body["messages"], body.get("response_format"), self.cfg,
                               lambda name: _unit(body_sha, self.cfg.seed, attempt, name))
        text, completion, truncated = truncate_to_tokens(text, model, max_tokens)
        comp = {
            "id": f"chatcmpl-{body_sha[:12]}{attempt}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_selectllm_sim",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if truncated else "stop",
            }],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }
        return _Outcome(200, comp, prompt, completion, malformed)

    def is_error(self, body_sha: str, attempt: int) -> int:
        """0, or the 5xx status this attempt fails with."""
        if _unit(body_sha, self.cfg.seed, attempt, "error") < self.cfg.error_rate:
            return 503 if _unit(body_sha, self.cfg.seed, attempt, "which5xx") < 0.5 else 500
        return 0

    def count(self, status: int, out: _Outcome | None = None) -> None:
        st = self.stats
        st["requests"] += 1
        st["by_status"][str(status)] = st["by_status"].get(str(status), 0) + 1
        if status == 200 and out is not None:
            st["prompt_tokens"] += out.prompt_tokens
            st["completion_tokens"] += out.completion_tokens
            st["malformed"] += int(out.malformed)
            st["length"] += int(out.body["choices"][0]["finish_reason"] == "length")


def _err_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


STATE = web.AppKey("state", SimState)


def _authorized(request: web.Request) -> bool:
    auth = request.headers.get("Authorization", "")
    return auth.startswith("Bearer ") and bool(auth[len("Bearer "):].strip())


def _unauthorized() -> web.Response:
    return _error(401, "Incorrect API key provided. Use 'Authorization: Bearer <key>'.",
                  "invalid_request_error", code="invalid_api_key")


# --------------------------------------------------------------------------- handlers


async def chat_completions(request: web.Request) -> web.Response:
    st = request.app[STATE]
    raw = await request.read()
    body_sha = hashlib.sha256(raw).hexdigest()
    rec: dict[str, Any] = {"ts": round(time.time(), 6), "path": request.path,
                           "key": request.headers.get("X-Selectllm-Key"), "body_sha256": body_sha[:16],
                           "attempt": None, "prompt_tokens": 0, "completion_tokens": 0}

    def done(resp: web.Response, out: _Outcome | None = None) -> web.Response:
        rec["status"] = resp.status
        if out is not None and resp.status == 200:
            rec["prompt_tokens"], rec["completion_tokens"] = out.prompt_tokens, out.completion_tokens
        st.count(resp.status, out)
        st.log(rec)
        return resp

    if not _authorized(request):
        return done(_unauthorized())
    try:
        body = json.loads(raw)
    except ValueError:
        return done(_error(400, "We could not parse the JSON body of your request.", "invalid_request_error"))
    err, prompt, max_tokens = st.validate(body)
    if err is not None:
        return done(web.json_response(err.body, status=err.status))
    rec["model"] = body["model"]

    attempt = st.attempts.get(body_sha, 0)
    out = st.answer(body, body_sha, attempt, prompt, max_tokens)
    now = time.monotonic()
    ok, wait, why = st.admit(now, out.prompt_tokens + out.completion_tokens)
    if not ok:
        hdrs = st.ratelimit_headers(now)
        if why == "too_large":
            return done(_error(
                429, f"Request too large for {body['model']}: Limit {st.cfg.tpm}, Requested "
                     f"{out.prompt_tokens + out.completion_tokens} tokens per min. Reduce the prompt or "
                     f"max_tokens.", "tokens", code="request_too_large", headers=hdrs))
        hdrs["retry-after"] = str(max(1, math.ceil(wait)))
        hdrs["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        limit = st.cfg.rpm if why == "requests" else st.cfg.tpm
        return done(_error(
            429, f"Rate limit reached for {body['model']} on {why} per min (RPM/TPM): Limit {limit}. "
                 f"Please try again in {format_duration(wait)}.", why, code="rate_limit_exceeded",
            headers=hdrs))
    st.attempts[body_sha] = attempt + 1
    rec["attempt"] = attempt
    entry = st.window[-1]
    if st.cfg.latency_ms > 0:
        await asyncio.sleep(st.cfg.latency_ms / 1000.0)
    hdrs = st.ratelimit_headers(time.monotonic())
    hdrs["x-request-id"] = f"req_{uuid.uuid4().hex[:24]}"
    hdrs["openai-processing-ms"] = str(int(st.cfg.latency_ms))
    status = st.is_error(body_sha, attempt)
    if status:
        # a failed request keeps its place in the request count but is not charged tokens
        if st.window and st.window[0][0] <= entry[0]:  # not yet pruned from the window
            st.window_tokens -= entry[1]
        entry[1] = 0
        return done(_error(status, "The server had an error while processing your request (simulated).",
                           "server_error", headers=hdrs))
    return done(web.json_response(out.body, headers=hdrs), out)


async def list_models(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorized(request):
        return _unauthorized()
    names = sorted(st.models) if st.models is not None else list(DEFAULT_MODELS)
    return web.json_response({"object": "list", "data": [
        {"id": n, "object": "model", "created": 0, "owned_by": "selectllm-simulator"} for n in names]})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats)
