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
    last_error: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (message, cause)
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
            fmt: str | None) -> dict:
    import hashlib

    data = b"".join(lines)
    rid = hashlib.sha256(data).hexdigest()
    rec = {"record": rid, "state": "uploading", "created": time.time(), "model": cfg.model,
           "keys": [p.req.key for p in plans], "max_tokens": {p.req.key: p.max_tokens for p in plans},
           "max_cost": {p.req.key: p.max_cost for p in plans}, "price_factor": _price_factor(cfg),
           "input_file_id": None, "batch_id": None, "partials": {}, "format": fmt,
           "structured": fmt not in (None, "text")}
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
    # the response format the lines were sent in (records of older runs: structured or not)
    sent_mode = rec.get("format", "json_schema" if rec.get("structured") else None)
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
            details = usage.get("completion_tokens_details") or {}
            st.shape.saw_reasoning(int(details.get("reasoning_tokens") or 0))
            if finish != "length":
                st.shape.check_answer(text, sent_mode)
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
                                                           "usd": actual, "format": sent_mode}
            elif not text.strip() and not str((part or {}).get("text") or "").strip():
                st.partials.pop(key, None)
                if key in want:  # an empty answer is no answer: not stored, a rerun asks again
                    st.results[key] = LLMResult(key=key, group_id=want[key].group_id, status="error", cause="empty",
                                                error=f"empty answer (finish_reason {finish}); raise llm.max_tokens",
                                                finish_reason=finish, input_tokens=tot_in, output_tokens=tot_out,
                                                usd=tot_usd, attempts=st.rounds[key])
            else:
                if not text.strip():  # the second try came back empty: the first one's text is the answer
                    text, finish, sent_mode = part["text"], part["finish_reason"], part.get("format", sent_mode)
                answer = {"key": key, "endpoint": cfg.endpoint, "model": cfg.model, "text": text,
                          "finish_reason": finish, "input_tokens": tot_in, "output_tokens": tot_out, "usd": tot_usd,
                          "attempts": st.rounds[key], "format": sent_mode,
                          "structured": sent_mode not in (None, "text"),
                          "batch_id": rec.get("batch_id"), "created": time.time()}
                cache.put(key, answer)  # durable before use
                st.partials.pop(key, None)
                if key in want:
                    st.results[key] = LLMResult(key=key, group_id=want[key].group_id, status="ok", text=text,
                                                finish_reason=finish, input_tokens=tot_in, output_tokens=tot_out,
                                                usd=tot_usd, attempts=st.rounds[key], cached=False,
                                                cause="truncated" if finish == "length" else None, format=sent_mode)
        elif batch_error is not None and not by_key:
            if key in want:
                st.results[key] = _error(want, key, f"Batch API batch {rec.get('batch_id')} failed: {batch_error}", st,
                                         "http_4xx")
        elif status:
            st.rounds[key] = st.rounds.get(key, 0) + 1
            err = (body or {}).get("error") if isinstance(body, dict) else None
            msg = bc.scrub(str((err or {}).get("message") or f"HTTP {status}: {json.dumps(body)[:300]}"))
            err = err or {}
            code, param = err.get("code"), err.get("param")
            if sent_mode is not None and policy.rejects_format(status, code, param, msg):
                if st.shape.step_down(sent_mode, f"HTTP {status} naming the response format: {msg[:160]}"):
                    st.rounds[key] -= 1  # not billed, and not a failure: sent again in the next form
                    st.last_error[key] = (f"HTTP {status}: {msg} (resent in another form)", "format_rejected")
                elif key in want:
                    st.results[key] = _error(want, key, policy.final_error(cfg.model, status, code, msg), st,
                                             "format_rejected")
            elif policy.is_retried(status):
                st.last_error[key] = (f"HTTP {status}: {msg}", "rate_limited" if status == 429 else "http_5xx")
            elif st.shape.adapt(status, code, param, msg):
                st.last_error[key] = (f"HTTP {status}: {msg} (resent in another shape)", "http_4xx")
            elif key in want:
                st.results[key] = _error(want, key, policy.final_error(cfg.model, status, code, msg), st,
                                         "context_length" if code == "context_length_exceeded" else "http_4xx")
        else:  # an error line without a response, or not answered at all (expired, cancelled)
            code = str(((item or {}).get("error") or {}).get("code") or "")
            if item is not None and code and code not in RETRIABLE_LINE_CODES:
                st.rounds[key] = st.rounds.get(key, 0) + 1
                if key in want:
                    st.results[key] = _error(want, key, f"Batch API line error {code}: "
                                             f"{bc.scrub(str(item['error'].get('message', '')))}", st, "http_4xx")
            else:
                st.last_error[key] = (f"not answered (batch {batch.status})", "timeout")
    rec["state"] = "done"
    rec["status"] = batch.status
    records.put(rec)
    return billed


def _error(want: dict[str, LLMRequest], key: str, msg: str, st: _State, cause: str) -> LLMResult:
    part = st.partials.get(key) or {}
    return LLMResult(key=key, group_id=want[key].group_id if key in want else None, status="error", error=msg[:500],
                     input_tokens=int(part.get("input_tokens", 0)), output_tokens=int(part.get("output_tokens", 0)),
                     usd=float(part.get("usd", 0.0)), attempts=st.rounds.get(key, 0), cause=cause)


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
    run = _Run(cfg, AnswerCache(cache_dir), _Records(cache_dir),
               BatchClient(cfg, api_key, base_url, retry_base_s, retry_cap_s, seed),
               _State(shape=policy.RequestShape.of(cfg)), Budget(cfg.max_usd, spent=prior_usd),
               progress, float(poll_s if poll_s is not None else cfg.batch_poll_s))
    for r in requests:
        run.want.setdefault(r.key, r)
    run.known = dict(known) if known is not None else run.cache.load(run.want)
    try:
        run.take_partials()
        run.finish_left_behind()
        while True:
            todo = run.round_todo()
            if not todo:
                break
            fit = run.fit_budget(todo)
            if fit:
                run.send_round(fit)
    finally:
        run.bc.client.close()
        if report is not None:
            run.st.shape.report(report)
    return run.in_order(requests, requests_log)


@dataclass
class _Run:
    """One :func:`run_batch` call; its phases follow the module doc's steps."""

    cfg: LLMConfig
    cache: AnswerCache
    records: "_Records"
    bc: BatchClient
    st: _State
    budget: Budget
    progress: bool
    poll: float
    want: dict[str, LLMRequest] = field(default_factory=dict)
    known: dict[str, dict] = field(default_factory=dict)

    def take_partials(self) -> None:
        """Truncated answers already paid for, waiting for their second try (their cost is spent)."""
        for rec in self.records.all():
            for key, part in (rec.get("partials") or {}).items():
                if key not in self.st.partials and key not in self.known and self.cache.get(key) is None:
                    self.st.partials[key] = part
                    if key in self.want:
                        self.budget.spent += float(part.get("usd", 0.0))

    def finish_left_behind(self) -> None:
        """Step 2: batches a killed run left behind are polled, downloaded and joined (never created twice)."""
        pending = [rec for rec in self.records.all() if rec.get("state") != "done"]
        bc = self.bc
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
                    self.records.put(rec)
                    continue
                rec.update(state="created", batch_id=bid)
                self.records.put(rec)
        live = [rec for rec in pending if rec.get("state") != "done"]
        if not live:
            return
        batches = _wait(bc, self.cfg, live, self.progress, self.poll)
        for rec in live:  # created by an earlier run under its budget: here it is spend already made
            billed = _join(bc, self.cfg, self.st, self.cache, self.records, rec, batches[rec["record"]], self.want)
            self.budget.spent += sum(usd for key, usd in billed.items() if key in self.want)

    def round_todo(self) -> list[_Plan]:
        """The keys still without a result (cached ones answered; those out of retries given up)."""
        st, todo = self.st, []
        for key, r in self.want.items():
            if key in st.results:
                continue
            hit = self.known.pop(key, None)  # one listing at the start; this run's answers are in st.results
            if hit is not None:
                st.results[key] = cached_result(r, hit)
                continue
            sent = st.rounds.get(key, 0) - (1 if key in st.partials else 0)  # the length retry is free
            if sent > self.cfg.max_retries:
                last = st.last_error.get(key, ("not answered", "http_5xx"))
                st.results[key] = _error(self.want, key, f"gave up after {st.rounds.get(key, 0)} batch lines: "
                                         f"{last[0]}", st, last[1])
                continue
            todo.append(_Plan(r, st.shape.answer_tokens(int(r.max_tokens) * (2 if key in st.partials else 1))))
        return todo

    def fit_budget(self, todo: list[_Plan]) -> list[_Plan]:
        """Step 3: reserve each plan's maximum cost in order; what cannot fit now or later stops."""
        fit: list[_Plan] = []
        st = self.st
        for p in todo:
            p.max_cost = max_request_cost(_est_prompt(self.cfg, st, p.req), p.max_tokens, self.cfg.price) \
                * _price_factor(self.cfg)
            if self.budget.try_reserve(p.max_cost):
                fit.append(p)
            elif fit and self.budget.could_fit_later(p.max_cost):
                continue  # may fit once this round's batch settles below its maximum: next round
            elif p.req.key in st.partials:  # keep the truncated answer already paid for
                st.results[p.req.key] = self.keep_partial(p.req)
            else:
                st.results[p.req.key] = LLMResult(
                    key=p.req.key, group_id=p.req.group_id, status="budget_stopped", cause="budget",
                    error=f"llm.max_usd={self.cfg.max_usd} cannot cover this request (up to ${p.max_cost:.6f} at "
                          f"the batch price)")
        return fit

    def keep_partial(self, req: LLMRequest) -> LLMResult:
        part = self.st.partials.pop(req.key)
        rounds = self.st.rounds.get(req.key, 1)
        if not str(part.get("text") or "").strip():
            self.st.partials[req.key] = part
            return _error(self.want, req.key, "empty answer (finish_reason length); raise llm.max_tokens",
                          self.st, "empty")
        self.cache.put(req.key, {"key": req.key, "endpoint": self.cfg.endpoint, "model": self.cfg.model, **part,
                                 "attempts": rounds, "created": time.time()})
        return LLMResult(key=req.key, group_id=req.group_id, status="ok", text=part["text"],
                         finish_reason=part["finish_reason"], input_tokens=part["input_tokens"],
                         output_tokens=part["output_tokens"], usd=part["usd"], attempts=rounds,
                         cause="truncated", format=part.get("format"))

    def send_round(self, fit: list[_Plan]) -> None:
        """Steps 4-5: submit (split at the Batch API's limits), wait, join, settle the budget."""
        fmt = self.st.shape.mode if any(p.req.response_format is not None for p in fit) else None
        recs = [_submit(self.bc, self.records, self.cfg, ps, ls, fmt)
                for ps, ls in _split(fit, _lines(self.cfg, self.st, fit))]
        batches = _wait(self.bc, self.cfg, recs, self.progress, self.poll)
        for rec in recs:
            billed = _join(self.bc, self.cfg, self.st, self.cache, self.records, rec, batches[rec["record"]], self.want)
            for key in rec["keys"]:
                self.budget.settle(rec["max_cost"][key], billed.get(key, 0.0))

    def in_order(self, requests: list[LLMRequest], requests_log: str | None) -> list[LLMResult]:
        """One result per request, in order (a repeated key: its first result, not billed twice), logged."""
        log = RequestsLog(requests_log)
        out: list[LLMResult] = []
        seen: dict[str, LLMResult] = {}
        try:
            for r in requests:
                first = seen.get(r.key)
                res = self.st.results[r.key] if first is None else duplicate_result(first, r)
                if first is None:
                    seen[r.key] = res
                out.append(res)
                log.write(log_record(r, res))
        finally:
            log.close()
        return out
