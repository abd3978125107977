"""Request records shared by every LLM path: the request log, cache-hit and duplicate results,
the API key (looked up once, carried as a :class:`Secret`), the rate-limit headers a gate reads."""

from __future__ import annotations

import json
import os
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from selectllm.config import LLMConfig
from selectllm.errors import UserError
from selectllm.llm.types import LLMRequest, LLMResult

SIMULATOR_DUMMY_KEY = "sk-selectllm-simulator"


class Secret:
    """A value that never prints (``repr``/``str`` give ``***``): how the API key travels to
    Ray pool actors (as a constructor argument, never in a runtime_env, log or file)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __getstate__(self) -> str:
        return self._value

    def __setstate__(self, state: str) -> None:
        self._value = state


RATELIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                     "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens")


def ratelimit_headers(headers: Any) -> dict[str, str] | None:
    """The few headers the gate reads (small enough to send to a Ray actor)."""
    if not headers:
        return None
    out = {k: headers.get(k) for k in RATELIMIT_HEADERS if headers.get(k) is not None}
    return out or None


def log_record(req: LLMRequest, res: LLMResult) -> dict:
    """One line of ``select/requests.jsonl``."""
    return {"key": req.key, "status": res.status, "attempts": res.attempts, "cached": res.cached,
            "input_tokens": res.input_tokens, "output_tokens": res.output_tokens,
            "usd": res.usd, "cause": res.cause, "format": res.format, **({"error": res.error} if res.error else {})}


def duplicate_result(first: LLMResult, req: LLMRequest) -> LLMResult:
    """A second request with the same key in one call: never paid twice."""
    if first.status == "ok":  # like a cache hit: the figures of the one purchase
        return LLMResult(**{**first.to_dict(), "group_id": req.group_id, "cached": True, "attempts": 0})
    return LLMResult(**{**first.to_dict(), "group_id": req.group_id, "attempts": 0,  # same outcome, not billed
                        "input_tokens": 0, "output_tokens": 0, "usd": 0.0})


def resolve_api_key(cfg: LLMConfig) -> str:
    key = os.environ.get(cfg.api_key_env, "").strip()
    if key:
        return key
    if cfg.provider == "simulator":
        return SIMULATOR_DUMMY_KEY
    raise UserError(f"llm.provider is {cfg.provider} but the environment variable {cfg.api_key_env} "
                    f"(llm.api_key_env) holding the API key is not set")


def cached_result(req: LLMRequest, rec: dict) -> LLMResult:
    """The result of a request whose answer is in the cache (the figures of its one purchase)."""
    return LLMResult(key=req.key, group_id=req.group_id, status="ok", text=rec.get("text"),
                     finish_reason=rec.get("finish_reason"), input_tokens=int(rec.get("input_tokens", 0)),
                     output_tokens=int(rec.get("output_tokens", 0)), usd=float(rec.get("usd", 0.0)),
                     attempts=0, cached=True, cause="truncated" if rec.get("finish_reason") == "length" else None,
                     format=rec.get("format"))


class RequestsLog:
    """One JSON line per request, streamed to ``url`` on its own filesystem (local or object store).

    Local files are appended line by line.  An object store has no append: the lines go out as
    the parts of a multipart upload (s3fs, gcsfs: a part every few MB, so memory stays bounded)
    and the object appears on :meth:`close`.  The log lives in the stage's staging folder, which
    a killed run never commits, so a kill loses nothing that a rerun would keep.
    """

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.f = None
        if url:
            fs, path = fsspec.core.url_to_fs(url)
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            local = isinstance(fs, LocalFileSystem)
            self.f = open(path, "a", encoding="utf-8", buffering=1) if local else fs.open(path, "wb")
            self.text = local

    def write(self, rec: dict) -> None:
        if self.f is None:
            return
        line = json.dumps(rec, sort_keys=True) + "\n"
        self.f.write(line if self.text else line.encode("utf-8"))

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
