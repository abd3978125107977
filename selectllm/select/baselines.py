"""Baselines SelectLLM is compared with: ``kmeans-closest``, ``length`` and ``alpagasus``.

(``random`` and ``kcenter`` live in :mod:`selectllm.select.strategies`.)  Each picks exactly
``min(budget, pool)`` distinct rows.

* ``kmeans-closest`` -- k-means with ``budget`` clusters (scikit-learn, ``random_state =
  select.seed``; fitted on a sample above 200k rows), then the member closest to each centroid
  (ties: lowest id).  Clusters left empty, if any, are made up by the rows closest to their own
  centroid that are not chosen yet.
* ``length`` -- the longest rows: most characters of instruction + input (ties: lowest id).  The
  reference's "infoverse length / big" baseline.
* ``alpagasus`` -- one LLM rating (0-5) per pool row, keep the highest (AlpaGasus, Chen et al.
  2023).  AlpaGasus rates instruction, input *and response*; the pool has no response column, so
  the instruction and input are rated.  Order: rated rows by score (high first), then rows with no
  rating (``llm.max_usd`` reached, request error, answer without a score), ties by id.  So when
  the budget cap stops the ratings, the selection is the best-rated rows among those rated,
  topped up by the lowest ids among the unrated ones.  It costs one request per pool row: the
  expensive reference point.  Decisions: one row per request (``group_id`` = row number in id
  order, ``cluster_id`` = the row's cluster); ``reason`` holds the score.
"""

from __future__ import annotations

import json
import re

import numpy as np

from selectllm.select.strategies import StrategyResult, _target, pool_embeddings, register


# ----------------------------------------------------------------------------- kmeans-closest
@register("kmeans-closest")
def kmeans_closest_strategy(ctx, ids, labels, dist) -> StrategyResult:
    """The member closest to each of ``budget`` k-means centroids."""
    from selectllm.cluster.kmeans_groups import fit_kmeans, nearest_center

    n, target = len(ids), _target(ctx, ids)
    x = pool_embeddings(ctx, ids)
    if target >= n:
        rows = np.arange(n)
    else:
        centers = fit_kmeans(x, target, seed=ctx.cfg.select.seed)
        lab, d2 = nearest_center(x, centers)
        order = np.lexsort((np.arange(n), d2, lab))  # by cluster, distance, row
        first = np.ones(n, dtype=bool)
        first[1:] = lab[order][1:] != lab[order][:-1]
        rows = order[first]
        if len(rows) < target:  # empty clusters: the next-closest rows to their own centroid
            taken = np.zeros(n, dtype=bool)
            taken[rows] = True
            rest = np.lexsort((np.arange(n), d2))
            rows = np.concatenate([rows, rest[~taken[rest]][: target - len(rows)]])
        rows = np.sort(rows[:target])
    return StrategyResult([(str(ids[i]), int(labels[i])) for i in rows], extra={"kmeans_k": int(target)})


# ----------------------------------------------------------------------------- length
def row_lengths(ctx, ids) -> np.ndarray:
    """Characters of instruction + input for every id (aligned with ``ids``)."""
    cached = getattr(ctx, "row_lengths", None)
    if cached is not None and len(cached) == len(ids):
        return cached
    import pyarrow.compute as pc

    from selectllm.tables import dataset

    t = dataset(ctx.run, "dedup").to_table(columns=["id", "instruction", "input"])
    n_chars = pc.add(pc.utf8_length(pc.fill_null(t.column("instruction"), "")),
                     pc.utf8_length(pc.fill_null(t.column("input"), "")))
    by_id = dict(zip(t.column("id").to_pylist(), n_chars.to_numpy(zero_copy_only=False).tolist()))
    out = np.asarray([by_id.get(str(i), 0) for i in ids], dtype=np.int64)
    try:
        ctx.row_lengths = out
    except (AttributeError, TypeError):
        pass
    return out


@register("length")
def length_strategy(ctx, ids, labels, dist) -> StrategyResult:
    """The longest rows (instruction + input characters), ties to the lowest id."""
    n, target = len(ids), _target(ctx, ids)
    lengths = row_lengths(ctx, ids)
    rows = np.sort(np.lexsort((np.arange(n), -lengths))[:target])
    return StrategyResult([(str(ids[i]), int(labels[i])) for i in rows])


# ----------------------------------------------------------------------------- alpagasus
_SCORE_RE = re.compile(r"score\s*(?:is|:|=)?\s*\**\s*(\d+(?:\.\d+)?)", re.I)
_NUMBER_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])")


def parse_rating(text: str | None) -> float | None:
    """The 0-5 score in an answer: ``{"score": 4}``, ``Score: 4.5``, or a first line holding one number."""
    if not text or not text.strip():
        return None
    value = None
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            obj = json.loads(text[start:end + 1])
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):  # a JSON answer must carry a numeric "score"
            score = obj.get("score")
            if not isinstance(score, (int, float)) or isinstance(score, bool):
                return None
            value = float(score)
    if value is None:
        m = _SCORE_RE.search(text)
        if m:
            value = float(m.group(1))
        else:
            first = text.strip().splitlines()[0]
            nums = _NUMBER_RE.findall(first)
            value = float(nums[0]) if len(nums) == 1 else None
    if value is None or not 0.0 <= value <= 5.0:
        return None
    return value


def rating_requests(cfg, ids, texts: dict[str, dict]) -> list:
    """One rating request per id; ``group_id`` is the row's position in ``ids``."""
    from selectllm.llm.types import LLMRequest, request_key
    from selectllm.select.prompts import RATING_PROMPT_VERSION, RATING_SCHEMA, rating_messages

    structured = cfg.llm.structured_output != "off"
    params = {"max_tokens": cfg.llm.max_tokens, "temperature": cfg.llm.temperature,
              "response_format": "json_schema" if structured else "text"}
    out = []
    for i, ident in enumerate(ids):
        row = texts[str(ident)]
        messages = rating_messages(row["instruction"] or "", row["input"] or "", structured)
        out.append(LLMRequest(key=request_key(cfg.llm.model, messages, params, RATING_PROMPT_VERSION),
                              group_id=i, messages=messages, max_tokens=cfg.llm.max_tokens,
                              response_format=RATING_SCHEMA if structured else None))
    return out


def send_requests(ctx, requests: list) -> list:
    """Send through the one LLM layer (cache, budget, rate limits), as ``decide_groups`` does:
    answers bought by an earlier run of the same requests count against ``llm.max_usd``."""
    from selectllm.llm.cache import AnswerCache
    from selectllm.llm.client import llm_endpoint, run_requests

    if not requests:
        return []
    cfg = ctx.cfg
    cache_dir = ctx.run.path("cache", "llm")
    cache = AnswerCache(cache_dir)
    prior = sum(float(rec.get("usd", 0.0)) for rec in (cache.get(r.key) for r in requests) if rec)
    ctx.run.fs.makedirs(ctx.run.path("logs"), exist_ok=True)
    with llm_endpoint(cfg.llm, ctx.run.path("logs", "simulator.jsonl")) as base_url:
        return run_requests(requests, cfg.llm, cache_dir=cache_dir, requests_log=ctx.out_path("requests.jsonl"),
                            base_url=base_url, prior_usd=prior)


def rank_by_rating(scores: np.ndarray) -> np.ndarray:
    """Row order: rated rows by score (high first), then unrated (NaN) rows; ties by row (= id)."""
    n = len(scores)
    unrated = np.isnan(scores)
    key = np.where(unrated, 0.0, -scores)
    return np.lexsort((np.arange(n), key, unrated))


@register("alpagasus")
def alpagasus_strategy(ctx, ids, labels, dist) -> StrategyResult:
    """One LLM rating per row; keep the ``budget`` best rated (see module doc)."""
    from selectllm.select.stage import lookup_rows

    n, target = len(ids), _target(ctx, ids)
    texts = lookup_rows(ctx.run, [str(i) for i in ids], ["instruction", "input"])
    results = send_requests(ctx, rating_requests(ctx.cfg, ids, texts))
    scores = np.full(n, np.nan)
    status = ["ok"] * n
    reason = [""] * n
    for r in results:
        i = int(r.group_id)
        if r.status == "budget_stopped":
            status[i], reason[i] = "budget_stopped", "llm.max_usd reached before this row was rated"
        elif r.status != "ok":
            status[i], reason[i] = "error", (r.error or "request failed")[:500]
        else:
            s = parse_rating(r.text)
            if s is None:
                status[i], reason[i] = "fallback", f"no 0-5 score in answer: {(r.text or '')[:80]!r}"
            else:
                scores[i], reason[i] = s, f"score {s:g}"
    rows = np.sort(rank_by_rating(scores)[:target])
    chosen = np.zeros(n, dtype=bool)
    chosen[rows] = True
    by_res = {int(r.group_id): r for r in results}
    decisions = []
    for i in range(n):
        r = by_res.get(i)
        decisions.append({"group_id": i, "cluster_id": int(labels[i]), "candidate_ids": [str(ids[i])],
                          "chosen_ids": [str(ids[i])] if chosen[i] else [], "status": status[i], "reason": reason[i],
                          "input_tokens": int(getattr(r, "input_tokens", 0) or 0),
                          "output_tokens": int(getattr(r, "output_tokens", 0) or 0),
                          "usd": float(getattr(r, "usd", 0.0) or 0.0)})
    rated = int((~np.isnan(scores)).sum())
    extra = {"rated": rated, "unrated_selected": int(np.isnan(scores[rows]).sum()),
             "score_min_selected": float(np.nanmin(scores[rows])) if rated and not np.isnan(scores[rows]).all() else None}
    return StrategyResult([(str(ids[i]), int(labels[i])) for i in rows], decisions, extra)
