"""``llm.mode: batch``: the same requests through the OpenAI Batch API, resumable by batch id.

:func:`run_batch` has the interface and results of :func:`selectllm.llm.client.run_requests`:

1. **Cache** -- answers already stored are returned (``cached=True``; one listing of the cache
   and concurrent reads, :meth:`~selectllm.llm.cache.AnswerCache.load`); each key is sent once.
2. **Resume** -- every batch record under ``<cache dir>/batches/`` that is not ``done`` is
   finished first: the batch it names is polled (never created again), downloaded and joined.
   A record is written *before* ``batches.create`` (with the uploaded file id) and again right
   after (with the batch id), so a run killed at any point finds its batch: by id, or -- killed
   between create and the second write -- by listing the endpoint's batches for that input file.
3. **Budget** -- the rest is priced at its maximum cost at the Batch API price
   (``llm.price`` x ``llm.batch_price_factor``, 0.5 by default: OpenAI bills batches at half the
   online price) and reserved in order; requests that do not fit under ``llm.max_usd`` (minus
   ``prior_usd`` and what resumed batches cost) get ``budget_stopped`` and are not uploaded.
4. **Submit** -- JSONL lines ``{"custom_id": <request key>, "method": "POST", "url":
   "/v1/chat/completions", "body": {...}}`` (at most 50,000 lines / 190 MB per batch),
   ``files.create(purpose="batch")``, ``batches.create(endpoint="/v1/chat/completions",
   completion_window="24h")``.
5. **Poll** every ``llm.batch_poll_s`` seconds with a progress bar; download the output and
   error files; join on ``custom_id``; store every answer in the cache *before* it is used; mark
   the record ``done``.
6. **Retry rounds** (the batch path's one retry layer, at most ``llm.max_retries`` rounds):
   lines that failed with 429/5xx, expired or were never answered go into the next batch;
   ``finish_reason == "length"`` goes once more with twice the ``max_tokens`` (both billed; the
   truncated answer is kept in the record meanwhile); an endpoint that rejects (400/422) or
   ignores ``response_format`` (``structured_output: auto``) or rejects ``max_tokens`` gets the
   other shape (:class:`~selectllm.llm.policy.RequestShape`).
   Other 4xx lines (context length, unknown model) are ``error`` results with the server's
   message.  Control calls (upload, create, poll, download) are retried on 429/5xx/timeouts
   with backoff; 401/403 raise :class:`~selectllm.errors.UserError` without the key.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import openai

from selectllm.config import LLMConfig
from selectllm.errors import UserError
from selectllm.llm.budget import Budget, cost_usd, max_request_cost
from selectllm.llm.cache import AnswerCache
from selectllm.llm import policy
from selectllm.llm.records import RequestsLog, cached_result, duplicate_result, log_record
from selectllm.llm.tokens import count_message_tokens
from selectllm.llm.types import LLMRequest, LLMResult

ENDPOINT = "/v1/chat/completions"
MAX_LINES = 50_000
MAX_BYTES = 190 * 1024 * 1024
TERMINAL = ("completed", "failed", "expired", "cancelled")
RETRIABLE_LINE_CODES = ("batch_expired", "batch_cancelled")


@dataclass
class _Plan:
    req: LLMRequest
    max_tokens: int
    max_cost: float = 0.0


@dataclass
class _State:
    """What one :func:`run_batch` call knows about each key."""

    results: dict[str, LLMResult] = field(default_factory=dict)
    partials: dict[str, dict] = field(default_factory=dict)  # key -> truncated answer already paid
    rounds: dict[str, int] = field(default_factory=dict)  # key -> lines sent for it
    last_error: dict[str, str] = field(default_factory=dict)
    shape: policy.RequestShape = field(default_factory=policy.RequestShape)


class BatchClient:
    """The Batch API calls, each retried on 429/5xx/timeouts/connection errors."""

    def __init__(self, cfg: LLMConfig, api_key: str, base_url: str | None, retry_base_s: float = 0.5,
                 retry_cap_s: float = 30.0, seed: int | None = None) -> None:
        self.cfg = cfg
        self.api_key = api_key
        self.base_url = base_url
        kwargs: dict[str, Any] = {"api_key": api_key, "max_retries": 0, "timeout": cfg.timeout_s}
        if base_url:
            kwargs["base_url"] = base_url
        self.client = openai.OpenAI(**kwargs)
        self.retry_base_s, self.retry_cap_s = retry_base_s, retry_cap_s
        self.rng = random.Random(seed)

    def scrub(self, msg: str) -> str:
        return policy.scrub(msg, self.api_key)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        failures = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except openai.APIStatusError as e:
                status = e.status_code
                if status in (401, 403):
                    raise policy.auth_error(self.base_url, self.cfg.api_key_env, status) from None
                if not policy.is_retried(status):
                    raise UserError(f"Batch API {what} failed (HTTP {status}): "
                                    f"{self.scrub(getattr(e, 'message', str(e)))}") from None
                err = f"HTTP {status}"
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                err = type(e).__name__
            failures += 1
            if failures > self.cfg.max_retries:
                raise UserError(f"Batch API {what} failed after {failures} attempts ({err}) at "
                                f"{self.base_url or 'OpenAI'}") from None
            time.sleep(policy.backoff(self.rng, failures, self.retry_base_s, self.retry_cap_s))

    def content(self, file_id: str) -> str:
        return self.call("download", lambda: self.client.files.content(file_id).text)

    def find_batch_for_file(self, input_file_id: str) -> str | None:
        def scan() -> str | None:
            for b in self.client.batches.list(limit=100):
                if b.input_file_id == input_file_id:
                    return b.id
            return None

        return self.call("list", scan)


# --------------------------------------------------------------------------- records


class _Records:
    """Batch records: ``<cache dir>/batches/<sha256 of the JSONL>/...`` via an AnswerCache."""

    def __init__(self, cache_dir: str) -> None:
        self.store = AnswerCache(cache_dir.rstrip("/") + "/batches")

    def all(self) -> list[dict]:
        out = []
        for rid in self.store.keys():
            rec = self.store.get(rid)
            if rec is not None:
                out.append(rec)
        return sorted(out, key=lambda r: r.get("created", 0))

    def put(self, rec: dict) -> None:
        self.store.put(rec["record"], rec)


# --------------------------------------------------------------------------- the run


def _price_factor(cfg: LLMConfig) -> float:
    return float(cfg.batch_price_factor)


def _est_prompt(cfg: LLMConfig, st: _State, req: LLMRequest) -> int:
    return policy.prompt_estimate(cfg.provider, count_message_tokens(st.shape.messages(req), cfg.model))


def _body(cfg: LLMConfig, st: _State, plan: _Plan) -> dict:
    return st.shape.body(cfg.model, st.shape.messages(plan.req), plan.max_tokens, cfg.temperature,
                         plan.req.response_format)


def _lines(cfg: LLMConfig, st: _State, plans: list[_Plan]) -> list[bytes]:
    return [(json.dumps({"custom_id": p.req.key, "method": "POST", "url": ENDPOINT, "body": _body(cfg, st, p)},
                        sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8") for p in plans]


def _split(plans: list[_Plan], lines: list[bytes]) -> list[tuple[list[_Plan], list[bytes]]]:
    out: list[tuple[list[_Plan], list[bytes]]] = []
    cur_p: list[_Plan] = []
    cur_l: list[bytes] = []
    size = 0
    for p, line in zip(plans, lines):
        if cur_p and (len(cur_p) >= MAX_LINES or size + len(line) > MAX_BYTES):
            out.append((cur_p, cur_l))
            cur_p, cur_l, size = [], [], 0
        cur_p.append(p)
        cur_l.append(line)
        size += len(line)
    if cur_p:
        out.append((cur_p, cur_l))
    return out


def _submit(bc: BatchClient, records: _Records, cfg: LLMConfig, plans: list[_Plan], lines: list[bytes],
            structured: bool) -> dict:
    import hashlib

    data = b"".join(lines)
    rid = hashlib.sha256(data).hexdigest()
    rec = {"record": rid, "state": "uploading", "created": time.time(), "model": cfg.model,
           "keys": [p.req.key for p in plans], "max_tokens": {p.req.key: p.max_tokens for p in plans},
           "max_cost": {p.req.key: p.max_cost for p in plans}, "price_factor": _price_factor(cfg),
           "input_file_id": None, "batch_id": None, "partials": {}, "structured": structured}
    f = bc.call("upload", bc.client.files.create, file=(f"selectllm-{rid[:16]}.jsonl", data, "application/jsonl"),
                purpose="batch")
    rec.update(state="creating", input_file_id=f.id)
    records.put(rec)  # before create: a kill from here on finds this batch again
    b = bc.call("create", bc.client.batches.create, input_file_id=f.id, endpoint=ENDPOINT,
                completion_window="24h", metadata={"selectllm_record": rid[:32]})
    rec.update(state="created", batch_id=b.id)
    records.put(rec)
    return rec


def _wait(bc: BatchClient, cfg: LLMConfig, recs: list[dict], progress: bool, poll_s: float) -> dict[str, Any]:
    """Poll until every batch is terminal; ``{record id: Batch}``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from selectllm.console import console  # the project's terminal, also in quiet mode

    done: dict[str, Any] = {}
    bar = None
    tasks: dict[str, Any] = {}
    if progress:
        bar = Progress(TextColumn("LLM batch {task.fields[bid]}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console)
        for r in recs:
            tasks[r["record"]] = bar.add_task("b", total=len(r["keys"]), bid=r["batch_id"][-8:], status="")
        bar.start()
    try:
        while len(done) < len(recs):
            for r in recs:
                if r["record"] in done:
                    continue
                b = bc.call("poll", bc.client.batches.retrieve, r["batch_id"])
                counts = getattr(b, "request_counts", None)
                if bar is not None:
                    n = (counts.completed + counts.failed) if counts is not None else 0
                    bar.update(tasks[r["record"]], completed=n, status=b.status)
                if b.status in TERMINAL:
                    done[r["record"]] = b
            if len(done) < len(recs):
                time.sleep(poll_s)
    finally:
        if bar is not None:
            bar.stop()
    return done


def _join(bc: BatchClient, cfg: LLMConfig, st: _State, cache: AnswerCache, records: _Records, rec: dict,
          batch: Any, want: dict[str, LLMRequest]) -> dict[str, float]:
    """Download a terminal batch, store its answers, mark its record done; ``{key: usd billed}``."""
    billed: dict[str, float] = {}
    factor = float(rec.get("price_factor", _price_factor(cfg)))
    by_key: dict[str, dict] = {}
    for fid in (batch.output_file_id, batch.error_file_id):
        if not fid:
            continue
        for line in bc.content(fid).splitlines():
            if line.strip():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and item.get("custom_id"):
                    by_key[item["custom_id"]] = item
    batch_error = None
    if batch.status == "failed":
        errs = getattr(getattr(batch, "errors", None), "data", None) or []
        batch_error = "; ".join(bc.scrub(str(getattr(e, "message", e))) for e in errs) or "batch failed"
    for key in rec["keys"]:
        item = by_key.get(key)
        resp = (item or {}).get("response") or None
        status = int(resp.get("status_code", 0)) if resp else 0
        body = resp.get("body") if resp else None
        if status == 200 and isinstance(body, dict) and body.get("choices") is not None:
            choice = body["choices"][0] if body["choices"] else {}
            text = ((choice.get("message") or {}).get("content")) or ""
            finish = choice.get("finish_reason")
            usage = body.get("usage") or {}
            in_t = int(usage.get("prompt_tokens", 0))
            out_t = int(usage.get("completion_tokens", 0))
            actual = cost_usd(in_t, out_t, cfg.price) * factor
            billed[key] = actual
            if finish != "length":
                st.shape.check_answer(text, bool(rec.get("structured")))
            part = st.partials.get(key)
            tot_in, tot_out, tot_usd = in_t, out_t, actual
            if part is not None:
                tot_in += part["input_tokens"]
                tot_out += part["output_tokens"]
                tot_usd += part["usd"]
            st.rounds[key] = st.rounds.get(key, 0) + 1
            if finish == "length" and part is None:
                st.partials[key] = rec["partials"][key] = {"text": text, "finish_reason": finish,
                                                           "input_tokens": in_t, "output_tokens": out_t,
                                                           "usd": actual}
            else:
                answer = {"key": key, "model": cfg.model, "text": text, "finish_reason": finish,
                          "input_tokens": tot_in, "output_tokens": tot_out, "usd": tot_usd,
                          "attempts": st.rounds[key], "structured": bool(rec.get("structured")),
                          "batch_id": rec.get("batch_id"), "created": time.time()}
                cache.put(key, answer)  # durable before use
                st.partials.pop(key, None)
                if key in want:
                    st.results[key] = LLMResult(key=key, group_id=want[key].group_id, status="ok", text=text,
                                                finish_reason=finish, input_tokens=tot_in, output_tokens=tot_out,
                                                usd=tot_usd, attempts=st.rounds[key], cached=False)
        elif batch_error is not None and not by_key:
            if key in want:
                st.results[key] = _error(want, key, f"Batch API batch {rec.get('batch_id')} failed: {batch_error}", st)
        elif status:
            st.rounds[key] = st.rounds.get(key, 0) + 1
            err = (body or {}).get("error") if isinstance(body, dict) else None
            msg = bc.scrub(str((err or {}).get("message") or f"HTTP {status}: {json.dumps(body)[:300]}"))
            err = err or {}
            if policy.is_retried(status):
                st.last_error[key] = f"HTTP {status}: {msg}"
            elif st.shape.adapt(status, err.get("code"), err.get("param"), msg, bool(rec.get("structured"))):
                st.last_error[key] = f"HTTP {status}: {msg} (resent in another shape)"
            elif key in want:
                st.results[key] = _error(want, key, policy.final_error(cfg.model, status, err.get("code"), msg), st)
        else:  # an error line without a response, or not answered at all (expired, cancelled)
            code = str(((item or {}).get("error") or {}).get("code") or "")
            if item is not None and code and code not in RETRIABLE_LINE_CODES:
                st.rounds[key] = st.rounds.get(key, 0) + 1
                if key in want:
                    st.results[key] = _error(want, key, f"Batch API line error {code}: "
                                             f"{bc.scrub(str(item['error'].get('message', '')))}", st)
            else:
                st.last_error[key] = f"not answered (batch {batch.status})"
    rec["state"] = "done"
    rec["status"] = batch.status
    records.put(rec)
    return billed


def _error(want: dict[str, LLMRequest], key: str, msg: str, st: _State) -> LLMResult:
    part = st.partials.get(key) or {}
    return LLMResult(key=key, group_id=want[key].group_id if key in want else None, status="error", error=msg[:500],
                     input_tokens=int(part.get("input_tokens", 0)), output_tokens=int(part.get("output_tokens", 0)),
                     usd=float(part.get("usd", 0.0)), attempts=st.rounds.get(key, 0))


def run_batch(
    requests: list[LLMRequest],
    cfg: LLMConfig,
    cache_dir: str,
    *,
    requests_log: str | None = None,
    base_url: str | None = None,
    progress: bool = True,
    prior_usd: float = 0.0,
    api_key: str,
    poll_s: float | None = None,
    retry_base_s: float = 0.5,
    retry_cap_s: float = 30.0,
    seed: int | None = None,
    known: dict[str, dict] | None = None,
    report: dict | None = None,
    **_ignored: Any,
) -> list[LLMResult]:
    """See the module doc.  Results in request order, like the online path."""
    base_url = base_url or cfg.base_url
    if cfg.provider == "simulator" and not base_url:
        raise UserError("llm.provider is simulator but no base URL was given: start one with "
                        "llm_endpoint(cfg) (or set llm.base_url)")
    poll = float(poll_s if poll_s is not None else cfg.batch_poll_s)
    cache = AnswerCache(cache_dir)
    records = _Records(cache_dir)
    bc = BatchClient(cfg, api_key, base_url, retry_base_s, retry_cap_s, seed)
    st = _State(shape=policy.RequestShape(cfg.structured_output))
    want: dict[str, LLMRequest] = {}
    for r in requests:
        want.setdefault(r.key, r)
    budget = Budget(cfg.max_usd, spent=prior_usd)
    known = dict(known) if known is not None else cache.load(want)
    try:
        # truncated answers already paid for, waiting for their second try
        for rec in records.all():
            for key, part in (rec.get("partials") or {}).items():
                if key not in st.partials and key not in known and cache.get(key) is None:
                    st.partials[key] = part
                    if key in want:
                        budget.spent += float(part.get("usd", 0.0))
        # 1. finish batches a killed run left behind (never created twice)
        pending = [rec for rec in records.all() if rec.get("state") != "done"]
        if pending:
            for rec in pending:
                if rec.get("batch_id") is None:
                    bid = bc.find_batch_for_file(rec["input_file_id"]) if rec.get("input_file_id") else None
                    if bid is None and rec.get("input_file_id"):
                        b = bc.call("create", bc.client.batches.create, input_file_id=rec["input_file_id"],
                                    endpoint=ENDPOINT, completion_window="24h",
                                    metadata={"selectllm_record": rec["record"][:32]})
                        bid = b.id
                    if bid is None:  # never uploaded: nothing was sent
                        rec["state"] = "done"
                        rec["status"] = "never_created"
                        records.put(rec)
                        continue
                    rec.update(state="created", batch_id=bid)
                    records.put(rec)
            live = [rec for rec in pending if rec.get("state") != "done"]
            batches = _wait(bc, cfg, live, progress, poll)
            for rec in live:  # created by an earlier run under its budget: here it is spend already made
                billed = _join(bc, cfg, st, cache, records, rec, batches[rec["record"]], want)
                budget.spent += sum(usd for key, usd in billed.items() if key in want)
        # 2. rounds of new batches
        while True:
            todo: list[_Plan] = []
            for key, r in want.items():
                if key in st.results:
                    continue
                hit = known.pop(key, None)  # one listing at the start; this run's answers are in st.results
                if hit is not None:
                    st.results[key] = cached_result(r, hit)
                    continue
                sent = st.rounds.get(key, 0) - (1 if key in st.partials else 0)  # the length retry is free
                if sent > cfg.max_retries:
                    st.results[key] = _error(want, key, f"gave up after {st.rounds.get(key, 0)} batch lines: "
                                             f"{st.last_error.get(key, 'not answered')}", st)
                    continue
                mt = int(r.max_tokens) * (2 if key in st.partials else 1)
                todo.append(_Plan(r, mt))
            if not todo:
                break
            fit: list[_Plan] = []
            for p in todo:
                p.max_cost = max_request_cost(_est_prompt(cfg, st, p.req), p.max_tokens, cfg.price) * _price_factor(cfg)
                if budget.try_reserve(p.max_cost):
                    fit.append(p)
                elif fit and budget.could_fit_later(p.max_cost):
                    continue  # may fit once this round's batch settles below its maximum: next round
                elif p.req.key in st.partials:  # keep the truncated answer already paid for
                    part = st.partials.pop(p.req.key)
                    cache.put(p.req.key, {"key": p.req.key, "model": cfg.model, **part,
                                          "attempts": st.rounds.get(p.req.key, 1), "created": time.time()})
                    st.results[p.req.key] = LLMResult(key=p.req.key, group_id=p.req.group_id, status="ok",
                                                      text=part["text"], finish_reason=part["finish_reason"],
                                                      input_tokens=part["input_tokens"],
                                                      output_tokens=part["output_tokens"], usd=part["usd"],
                                                      attempts=st.rounds.get(p.req.key, 1))
                else:
                    st.results[p.req.key] = LLMResult(
                        key=p.req.key, group_id=p.req.group_id, status="budget_stopped",
                        error=f"llm.max_usd={cfg.max_usd} cannot cover this request (up to ${p.max_cost:.6f} at "
                              f"the batch price)")
            if not fit:
                continue
            structured = any("response_format" in _body(cfg, st, p) for p in fit)
            recs = [_submit(bc, records, cfg, ps, ls, structured) for ps, ls in _split(fit, _lines(cfg, st, fit))]
            batches = _wait(bc, cfg, recs, progress, poll)
            for rec in recs:
                billed = _join(bc, cfg, st, cache, records, rec, batches[rec["record"]], want)
                for key in rec["keys"]:
                    budget.settle(rec["max_cost"][key], billed.get(key, 0.0))
    finally:
        bc.client.close()
        if report is not None:
            report["structured_fallback"] = st.shape.fallback
    log = RequestsLog(requests_log)
    out: list[LLMResult] = []
    seen: dict[str, LLMResult] = {}
    try:
        for r in requests:
            first = seen.get(r.key)
            res = st.results[r.key] if first is None else duplicate_result(first, r)
            if first is None:
                seen[r.key] = res
            out.append(res)
            log.write(log_record(r, res))
    finally:
        log.close()
    return out


