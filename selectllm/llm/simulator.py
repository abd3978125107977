"""A local OpenAI-compatible LLM server for demos, tests and benchmarks (aiohttp).

Endpoints (all under ``/v1``; every one but ``/v1/health`` and ``/v1/stats`` needs
``Authorization: Bearer <anything non-empty>``, else 401):

* ``POST /v1/chat/completions`` -> a ChatCompletion with ``usage``.  Unknown model -> 404;
  ``prompt + max_tokens`` over the context limit (default 128k) -> 400
  ``context_length_exceeded``; an answer longer than ``max_tokens`` (or
  ``max_completion_tokens``) is cut and gets ``finish_reason: "length"``.
* ``GET /v1/models``, ``GET /v1/health``, ``GET /v1/stats`` (counters, see :class:`SimState`).
* Batch API: ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches`` (all, newest
  first, one page), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.  A batch completes ``batch_delay_s`` after creation; its
  output file holds one JSONL line per successful request (``custom_id`` + ``response.body``),
  failed lines go to ``error_file_id``.  Batch lines skip latency and rate limits.

Answers are deterministic and transparent:

* **Selection prompts** -- the user message holds candidates delimited as
  ``<candidate id="3">\\n...text...\\n</candidate>`` and a line ``Select exactly K
  instruction(s)``.  Each candidate scores ``log(1 + chars) + distinct_words / words
  + (0.5 if it has a non-empty "### Input:" part)`` (chars of the stripped text; words are
  ``\\w+`` runs, lower-cased).  The top K (ties -> lower id), best first, are answered as
  ``[3], [7]`` in plain text or ``{"selected": [3, 7]}`` when ``response_format`` asks for JSON
  (with a ``json_schema``, its first array property's name is used instead of ``selected``).
  Asked for reasons (``select.reasons``: a schema whose array holds objects, or the text form's
  "its identifier in brackets, then a one-line reason"), each pick comes with the heuristic's
  terms as its reason: ``{"choices": [{"id": 3, "reason": "score 7.41: 412 characters, 83%
  distinct words, has an input"}]}`` or one ``[3] score 7.41: ...`` line per pick.
* **Rating prompts** -- a message containing ``Rate the following``: the text after that phrase
  has ``w`` words and scores ``min(5, 1 + floor(log2(1 + w / 8)))``, answered ``Score: 4`` or
  ``{"score": 4}`` (first integer property of a ``json_schema``).
* Anything else: ``Simulated answer: <the first 12 words of the last user message>``
  (``{"answer": ...}`` in JSON mode).

Knobs (:class:`~selectllm.config.SimulatorConfig` and CLI flags): ``latency_ms`` (added to every
admitted chat request), ``rpm`` / ``tpm`` (sliding 60 s window over admitted requests; a request
is charged ``prompt_tokens + completion_tokens``; over the limit -> 429 with ``retry-after``
(whole seconds, rounded up) and ``retry-after-ms``; a single request above ``tpm`` -> 429 with
code ``request_too_large``, which retrying cannot fix), ``error_rate`` (500/503 answers) and
``malformed_rate`` (200 answers of garbage text with no ids or digits), ``seed``.

Whether an admitted request fails or is malformed is a pure function of
``sha256(request body)``, ``seed`` and how many times this exact body was admitted before, so a
run is reproducible and a retried request can succeed.

When ``rpm`` / ``tpm`` are set, every chat response carries ``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` and the ``-tokens``
variants (OpenAI formats: ``"20ms"``, ``"1.5s"``, ``"6m0s"``); *reset* is the time until the
window is empty again (back to its initial state).  Unlimited dimensions send no headers.

Request log (``log_path``, a local path or an object store URL): one JSON line per received request: ``ts``, ``path``, ``status``,
``key`` (the client's ``X-Selectllm-Key`` header, if any), ``body_sha256`` (16 hex),
``attempt``, ``prompt_tokens``, ``completion_tokens``.  Never the Authorization header.

Run it: ``python -m selectllm.llm.simulator --port 0 --port-file p.txt [--rpm 60] ...``, or
:func:`start_simulator` (a subprocess, so it never competes with the client for the GIL).
Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from selectllm.config import SimulatorConfig
from selectllm.llm.limiter import format_duration
from selectllm.llm.tokens import count_message_tokens, truncate_to_tokens

WINDOW_S = 60.0
DEFAULT_CONTEXT_LIMIT = 128_000
DEFAULT_MAX_TOKENS = 4096
DEFAULT_BATCH_DELAY_S = 1.0
DEFAULT_MODELS = (
    "gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4-turbo", "gpt-4",
    "gpt-3.5-turbo", "gpt-5", "gpt-5-mini", "gpt-5-nano", "o3-mini", "o4-mini", "simulator",
)

CANDIDATE_RE = re.compile(r'<candidate id="(\d+)">\s*(.*?)\s*</candidate>', re.S)
SELECT_K_RE = re.compile(r"Select exactly (\d+) instruction", re.I)
RATE_RE = re.compile(r"Rate the following", re.I)
INPUT_RE = re.compile(r"### Input:(.*?)(?:###|\Z)", re.S)
WORD_RE = re.compile(r"\w+")
REASONS_RE = re.compile(r"in brackets, then a one-line reason", re.I)  # select.reasons, text form
MALFORMED = (
    "I think every one of these instructions is valuable, so I cannot pick just a few.",
    "Sure! Here are my thoughts on the candidates: they vary a lot in quality and scope.",
    "As a language model I would rather not choose; all of them seem useful for annotation.",
    "The best instruction is the one that teaches the most. Hope this helps!",
)


# --------------------------------------------------------------------------- pure answer logic


def candidate_score(text: str) -> float:
    """The selection heuristic for one candidate (see module doc)."""
    t = text.strip()
    words = [w.lower() for w in WORD_RE.findall(t)]
    distinct = len(set(words)) / len(words) if words else 0.0
    m = INPUT_RE.search(t)
    has_input = bool(m and m.group(1).strip())
    return math.log1p(len(t)) + distinct + (0.5 if has_input else 0.0)


def score_reason(text: str) -> str:
    """The heuristic's one-line reason for a pick: the parts of :func:`candidate_score`."""
    t = text.strip()
    words = [w.lower() for w in WORD_RE.findall(t)]
    distinct = len(set(words)) / len(words) if words else 0.0
    m = INPUT_RE.search(t)
    has_input = bool(m and m.group(1).strip())
    return (f"score {candidate_score(text):.2f}: {len(t)} characters, {distinct:.0%} distinct words"
            + (", has an input" if has_input else ""))


def select_ids(candidates: list[tuple[int, str]], k: int) -> list[int]:
    ranked = sorted(candidates, key=lambda c: (-candidate_score(c[1]), c[0]))
    return [cid for cid, _ in ranked[: max(0, k)]]


def rating_score(text: str) -> int:
    words = len(WORD_RE.findall(text))
    return min(5, 1 + int(math.floor(math.log2(1 + words / 8))))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _schema_key(response_format: dict | None, types: tuple[str, ...], default: str) -> str:
    try:
        props = response_format["json_schema"]["schema"]["properties"]  # type: ignore[index]
        for name, spec in props.items():
            if isinstance(spec, dict) and spec.get("type") in types:
                return str(name)
    except (KeyError, TypeError, AttributeError):
        pass
    return default


def _items_are_objects(response_format: dict | None, key: str) -> bool:
    try:
        return response_format["json_schema"]["schema"]["properties"][key]["items"]["type"] == "object"  # type: ignore[index]
    except (KeyError, TypeError):
        return False


def answer_text(messages: list[dict], response_format: dict | None) -> str:
    """The full (untruncated) deterministic answer to a chat request."""
    json_mode = isinstance(response_format, dict) and response_format.get("type") in (
        "json_object", "json_schema")
    users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    last_user = users[-1] if users else ""
    everything = "\n".join(_text_of(m.get("content")) for m in messages)

    source = last_user if CANDIDATE_RE.search(last_user) else everything
    cands = [(int(i), t) for i, t in CANDIDATE_RE.findall(source)]
    if cands:
        m = SELECT_K_RE.search(source) or SELECT_K_RE.search(everything)
        k = int(m.group(1)) if m else 1
        ids = select_ids(cands, k)
        texts = dict(cands)
        if json_mode:
            key = _schema_key(response_format, ("array",), "selected")
            if _items_are_objects(response_format, key):  # {"choices": [{"id": 3, "reason": "..."}]}
                return json.dumps({key: [{"id": i, "reason": score_reason(texts[i])} for i in ids]})
            return json.dumps({key: ids})
        if REASONS_RE.search(source):
            return "\n".join(f"[{i}] {score_reason(texts[i])}" for i in ids)
        return ", ".join(f"[{i}]" for i in ids)

    src = last_user if RATE_RE.search(last_user) else everything
    m = RATE_RE.search(src)
    if m:
        score = rating_score(src[m.end():])
        if json_mode:
            key = _schema_key(response_format, ("integer", "number"), "score")
            return json.dumps({key: score})
        return f"Score: {score}"

    echo = " ".join(last_user.split()[:12])
    if json_mode:
        return json.dumps({"answer": f"Simulated answer: {echo}"})
    return f"Simulated answer: {echo}"


def _unit(*parts: Any) -> float:
    """A deterministic number in [0, 1) from its arguments."""
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return int(h[:16], 16) / 2**64


# --------------------------------------------------------------------------- server state


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
            text = answer_text(body["messages"], body.get("response_format"))
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


# ---- files + batches


def _file_obj(fid: str, f: dict) -> dict:
    return {"id": fid, "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
            "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}


async def upload_file(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorized(request):
        return _unauthorized()
    if not request.content_type.startswith("multipart/"):
        return _error(400, "expected a multipart/form-data upload", "invalid_request_error")
    purpose, data, filename = None, None, "upload.jsonl"
    reader = await request.multipart()
    async for part in reader:
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or filename
            data = await part.read(decode=False)
    if data is None:
        return _error(400, "missing 'file' part", "invalid_request_error", param="file")
    if purpose not in ("batch", "batch_output"):
        return _error(400, f"unsupported purpose {purpose!r} (this simulator takes 'batch')",
                      "invalid_request_error", param="purpose")
    fid = f"file-{uuid.uuid4().hex[:24]}"
    st.files[fid] = {"data": bytes(data), "filename": filename, "purpose": purpose,
                     "created_at": int(time.time())}
    st.log({"ts": round(time.time(), 6), "path": request.path, "status": 200, "file_id": fid,
            "bytes": len(data)})
    return web.json_response(_file_obj(fid, st.files[fid]))


async def get_file(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorized(request):
        return _unauthorized()
    f = st.files.get(request.match_info["fid"])
    if f is None:
        return _error(404, "No such File object", "invalid_request_error", code="not_found")
    return web.json_response(_file_obj(request.match_info["fid"], f))


async def get_file_content(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorized(request):
        return _unauthorized()
    f = st.files.get(request.match_info["fid"])
    if f is None:
        return _error(404, "No such File object", "invalid_request_error", code="not_found")
    return web.Response(body=f["data"], content_type="application/octet-stream")


def _run_batch(st: SimState, bid: str) -> None:
    b = st.batches[bid]
    if b["status"] not in ("validating", "in_progress"):
        return
    b["status"] = "in_progress"
    b["in_progress_at"] = int(time.time())
    data = st.files[b["input_file_id"]]["data"]
    out_lines, err_lines = [], []
    for i, line in enumerate(data.decode("utf-8", "replace").splitlines()):
        if not line.strip():
            continue
        custom_id = None
        try:
            item = json.loads(line)
            custom_id = item.get("custom_id")
            body = item["body"]
            raw = json.dumps(body, sort_keys=True).encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            err_lines.append({"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": custom_id,
                              "response": None, "error": {"code": "invalid_json_line",
                                                          "message": f"line {i + 1} is not a valid request"}})
            continue
        body_sha = hashlib.sha256(raw).hexdigest()
        err, prompt, max_tokens = st.validate(body)
        if err is None:
            attempt = st.attempts.get(body_sha, 0)
            st.attempts[body_sha] = attempt + 1
            status = st.is_error(body_sha, attempt)
            if status:
                err = _Outcome(status, _err_body("The server had an error while processing your request "
                                                 "(simulated).", "server_error"))
            else:
                out = st.answer(body, body_sha, attempt, prompt, max_tokens)
        req_id = f"req_{uuid.uuid4().hex[:24]}"
        st.stats["batch"]["lines"] += 1
        if err is not None:
            err_lines.append({"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": custom_id,
                              "response": {"status_code": err.status, "request_id": req_id, "body": err.body},
                              "error": None})
            continue
        st.stats["batch"]["prompt_tokens"] += out.prompt_tokens
        st.stats["batch"]["completion_tokens"] += out.completion_tokens
        st.stats["prompt_tokens"] += out.prompt_tokens
        st.stats["completion_tokens"] += out.completion_tokens
        st.stats["malformed"] += int(out.malformed)
        out_lines.append({"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": custom_id,
                          "response": {"status_code": 200, "request_id": req_id, "body": out.body},
                          "error": None})
        st.log({"ts": round(time.time(), 6), "path": "batch", "batch_id": bid, "custom_id": custom_id,
                "status": 200, "body_sha256": body_sha[:16], "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens})

    def store(lines: list[dict], name: str) -> str | None:
        if not lines:
            return None
        fid = f"file-{uuid.uuid4().hex[:24]}"
        payload = "".join(json.dumps(x) + "\n" for x in lines).encode()
        st.files[fid] = {"data": payload, "filename": name, "purpose": "batch_output",
                         "created_at": int(time.time())}
        return fid

    b["output_file_id"] = store(out_lines, f"{bid}_output.jsonl")
    b["error_file_id"] = store(err_lines, f"{bid}_error.jsonl")
    b["request_counts"] = {"total": len(out_lines) + len(err_lines), "completed": len(out_lines),
                           "failed": len(err_lines)}
    b["status"] = "completed"
    b["completed_at"] = int(time.time())


async def create_batch(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorized(request):
        return _unauthorized()
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
    fid = body.get("input_file_id") if isinstance(body, dict) else None
    if fid not in st.files:
        return _error(400, f"input_file_id {fid!r} not found", "invalid_request_error", param="input_file_id")
    endpoint = body.get("endpoint", "/v1/chat/completions")
    if endpoint != "/v1/chat/completions":
        return _error(400, f"unsupported endpoint {endpoint!r}", "invalid_request_error", param="endpoint")
    bid = f"batch_{uuid.uuid4().hex[:24]}"
    now = int(time.time())
    st.batches[bid] = {
        "id": bid, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": fid,
        "completion_window": body.get("completion_window", "24h"), "status": "validating",
        "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
        "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
        "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata"),
    }
    st.stats["batch"]["batches"] += 1
    asyncio.get_running_loop().call_later(st.batch_delay_s, _run_batch, st, bid)
    st.log({"ts": round(time.time(), 6), "path": request.path, "status": 200, "batch_id": bid})
    return web.json_response(st.batches[bid])


async def get_batch(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorized(request):
        return _unauthorized()
    b = st.batches.get(request.match_info["bid"])
    if b is None:
        return _error(404, "No such Batch object", "invalid_request_error", code="not_found")
    return web.json_response(b)


async def list_batches(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorized(request):
        return _unauthorized()
    data = sorted(st.batches.values(), key=lambda b: b["created_at"], reverse=True)
    return web.json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None, "has_more": False})


async def cancel_batch(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorized(request):
        return _unauthorized()
    b = st.batches.get(request.match_info["bid"])
    if b is None:
        return _error(404, "No such Batch object", "invalid_request_error", code="not_found")
    if b["status"] in ("validating", "in_progress"):
        b["status"] = "cancelled"
        b["cancelled_at"] = int(time.time())
    return web.json_response(b)


# --------------------------------------------------------------------------- entry points


def build_app(
    cfg: SimulatorConfig,
    log_path: str | None = None,
    *,
    models: list[str] | tuple[str, ...] | None = DEFAULT_MODELS,
    context_limit: int = DEFAULT_CONTEXT_LIMIT,
    batch_delay_s: float = DEFAULT_BATCH_DELAY_S,
) -> web.Application:
    """The aiohttp application.  ``models=None`` accepts any model name."""
    app = web.Application(client_max_size=256 * 1024 * 1024)
    st = SimState(cfg=cfg, log_path=log_path, models=frozenset(models) if models is not None else None,
                  context_limit=context_limit, batch_delay_s=batch_delay_s)
    app[STATE] = st
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/stats", stats)
    app.router.add_post("/v1/files", upload_file)
    app.router.add_get("/v1/files/{fid}", get_file)
    app.router.add_get("/v1/files/{fid}/content", get_file_content)
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_get("/v1/batches", list_batches)
    app.router.add_get("/v1/batches/{bid}", get_batch)
    app.router.add_post("/v1/batches/{bid}/cancel", cancel_batch)

    async def _close(app: web.Application) -> None:
        app[STATE].close()

    app.on_cleanup.append(_close)
    return app


async def _serve_async(host: str, port: int, app: web.Application, port_file: str | None,
                       exit_with_parent: bool = False) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    actual = runner.addresses[0][1]
    if port_file:
        tmp = f"{port_file}.{os.getpid()}.tmp"
        Path(tmp).write_text(str(actual))
        os.replace(tmp, port_file)
    print(f"selectllm simulator listening on http://{host}:{actual}/v1", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if exit_with_parent:
        parent = os.getppid()

        async def watch_parent() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(0.5)
            stop.set()  # the process that started us is gone: do not linger as an orphan

        watcher = asyncio.create_task(watch_parent())
    try:
        await stop.wait()
    finally:
        if exit_with_parent:
            watcher.cancel()
        await runner.cleanup()


def serve(host: str, port: int, cfg: SimulatorConfig, log_path: str | None = None, *,
          port_file: str | None = None, exit_with_parent: bool = False, **app_kwargs: Any) -> None:
    """Run the server in this process until SIGINT/SIGTERM.  ``port=0`` picks a free port
    (written to ``port_file``); ``exit_with_parent`` stops it when its parent process dies."""
    app = build_app(cfg, log_path, **app_kwargs)
    asyncio.run(_serve_async(host, port, app, port_file, exit_with_parent))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m selectllm.llm.simulator",
                                description="Local OpenAI-compatible LLM simulator.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="0 = pick a free port (see --port-file)")
    p.add_argument("--port-file", help="write the bound port to this file once listening")
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--error-rate", type=float)
    p.add_argument("--malformed-rate", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--log", help="append one JSON line per request to this file")
    p.add_argument("--models", help="comma-separated accepted model names; '*' = any "
                                    f"(default: {','.join(DEFAULT_MODELS)})")
    p.add_argument("--context-limit", type=int, default=DEFAULT_CONTEXT_LIMIT)
    p.add_argument("--batch-delay-s", type=float, default=DEFAULT_BATCH_DELAY_S)
    p.add_argument("--config-json", help="a SimulatorConfig as JSON (flags override it)")
    p.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process dies")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data = json.loads(args.config_json) if args.config_json else {}
    for flag, key in (("latency_ms", "latency_ms"), ("rpm", "rpm"), ("tpm", "tpm"),
                      ("error_rate", "error_rate"), ("malformed_rate", "malformed_rate"), ("seed", "seed")):
        v = getattr(args, flag)
        if v is not None:
            data[key] = v
    cfg = SimulatorConfig.model_validate(data)
    models: tuple[str, ...] | None = DEFAULT_MODELS
    if args.models:
        models = None if args.models.strip() == "*" else tuple(m.strip() for m in args.models.split(",") if m.strip())
    serve(args.host, args.port, cfg, args.log, port_file=args.port_file, models=models,
          context_limit=args.context_limit, batch_delay_s=args.batch_delay_s,
          exit_with_parent=args.exit_with_parent)
    return 0


# --------------------------------------------------------------------------- subprocess handle


class SimulatorHandle:
    """A simulator running in a child process.  Use as a context manager or call :meth:`stop`."""

    def __init__(self, proc: subprocess.Popen, port: int, stderr_path: str, tmpdir: str) -> None:
        self.proc = proc
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._stderr_path = stderr_path
        self._tmpdir = tmpdir

    def _get(self, path: str, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=timeout) as r:  # noqa: S310 (loopback)
            return json.loads(r.read())

    def stats(self) -> dict:
        return self._get("/stats")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        try:
            for p in Path(self._tmpdir).iterdir():
                p.unlink()
            Path(self._tmpdir).rmdir()
        except OSError:
            pass

    def __enter__(self) -> "SimulatorHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_simulator(
    cfg: SimulatorConfig | None = None,
    log_path: str | None = None,
    *,
    models: list[str] | tuple[str, ...] | None = DEFAULT_MODELS,
    context_limit: int = DEFAULT_CONTEXT_LIMIT,
    batch_delay_s: float = DEFAULT_BATCH_DELAY_S,
    startup_timeout_s: float = 60.0,
) -> SimulatorHandle:
    """Start the simulator in a subprocess on a free loopback port; return once it answers."""
    cfg = cfg or SimulatorConfig()
    tmpdir = tempfile.mkdtemp(prefix="selectllm-sim-")
    port_file = os.path.join(tmpdir, "port")
    stderr_path = os.path.join(tmpdir, "stderr.txt")
    cmd = [sys.executable, "-m", "selectllm.llm.simulator", "--host", "127.0.0.1", "--port", "0",
           "--port-file", port_file, "--config-json", cfg.model_dump_json(),
           "--context-limit", str(context_limit), "--batch-delay-s", str(batch_delay_s),
           "--models", "*" if models is None else ",".join(models), "--exit-with-parent"]
    if log_path:
        cmd += ["--log", str(log_path)]
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=env, start_new_session=True)
    deadline = time.monotonic() + startup_timeout_s
    handle: SimulatorHandle | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if handle is None and os.path.exists(port_file):
            handle = SimulatorHandle(proc, int(Path(port_file).read_text()), stderr_path, tmpdir)
        if handle is not None:
            try:
                handle._get("/health", timeout=2.0)
                return handle
            except (urllib.error.URLError, OSError, ValueError):
                pass
        time.sleep(0.05)
    tail = ""
    try:
        tail = Path(stderr_path).read_text(errors="replace")[-2000:]
    except OSError:
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    raise RuntimeError(f"the LLM simulator did not start (exit code {proc.poll()}): {tail.strip()}")


if __name__ == "__main__":
    sys.exit(main())
