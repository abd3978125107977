"""Baselines SelectLLM is compared with: ``random``, ``kcenter``, ``kmeans-closest``, ``length``
and ``alpagasus``.  Each picks exactly ``min(budget, pool)`` distinct rows.

* ``random`` -- uniform sample without replacement, seeded by ``select.seed``: the ``budget``
  rows with the smallest keyed hash of their id (bottom-k sampling), computed by tasks over the
  assignment parts, so it does not depend on how the pool is split.
* ``kcenter`` -- the first ``budget`` farthest-first centers (the coreset baseline); with fewer
  clusters than the budget the traversal is continued (it is prefix-consistent) in one process
  (``select.vectors_max_rows``).

* ``kmeans-closest`` -- k-means with ``budget`` clusters (scikit-learn, ``random_state =
  select.seed``), fitted on the rows of a seeded sample (the ``random`` baseline's bottom-k of a
  keyed hash: the whole pool up to 200k rows, then 200k rows), then the member closest to each
  centroid (ties: lowest id), found by tasks over the vector parts.  Clusters left empty, if any,
  are made up by the rows closest to their own centroid that are not chosen yet.
* ``length`` -- the longest rows: most characters of instruction + input (ties: lowest id), by
  tasks over dedup's parts.  The reference's "infoverse length / big" baseline.
* ``alpagasus`` -- one LLM rating (0-5) per pool row, keep the highest (AlpaGasus, Chen et al.
  2023).  AlpaGasus rates instruction, input *and response*; the pool has no response column, so
  the instruction and input are rated.  Order: rated rows by score (high first), then rows with no
  rating (``llm.max_usd`` reached, request error, answer without a score), ties by id.  So when
  the budget cap stops the ratings, the selection is the best-rated rows among those rated,
  topped up by the lowest ids among the unrated ones.  It costs one request per pool row: the
  expensive reference point.  Decisions: one row per request (``group_id`` = row number in id
  order, ``cluster_id`` = the row's cluster); ``reason`` holds the score; a chosen row is
  ``chosen_by`` ``llm`` when it was rated, ``fallback`` when it tops up the selection unrated.  Every
  request in one process (``select.alpagasus_max_rows``).
"""

from __future__ import annotations

import json
import re

import numpy as np

from selectllm.select.registry import StrategyResult
from selectllm.select.registry import target as _target
from selectllm.select.send import send
from selectllm.select.tables import centers as read_centers
from selectllm.select.tables import lookup_rows


# ----------------------------------------------------------------------------- random, kcenter
def random_strategy(ctx, pool) -> StrategyResult:
    """Uniform sample without replacement, seeded by ``select.seed`` (bottom-k of a keyed hash)."""
    from selectllm.select.distributed import smallest_keys

    t = smallest_keys(pool.fs, pool.files, _target(ctx, pool), ctx.cfg.select.seed, pool.tasks,
                      columns=["id", "cluster_id"])
    return StrategyResult(sorted(zip(t.column("id").to_pylist(), t.column("cluster_id").to_pylist())))


def kcenter_strategy(ctx, pool) -> StrategyResult:
    """The first ``budget`` farthest-first centers (the coreset baseline)."""
    target = _target(ctx, pool)
    centers = read_centers(ctx)
    if len(centers) >= target:
        chosen = centers.column("id").to_pylist()[:target]
        return StrategyResult([(c, i) for i, c in enumerate(chosen)])
    # fewer clusters than the budget: continue the traversal (it is prefix-consistent)
    from selectllm.cluster.kcenter import farthest_first

    ids, labels, _ = pool.arrays()
    x = pool.embeddings()
    pos = {v: i for i, v in enumerate(ids)}
    seeds = [pos[c] for c in centers.column("id").to_pylist()]
    rows, _ = farthest_first(x, target, initial=seeds)
    return StrategyResult([(str(ids[r]), int(labels[r])) for r in rows])


# ----------------------------------------------------------------------------- kmeans-closest
def kmeans_closest_strategy(ctx, pool) -> StrategyResult:
    """The member closest to each of ``budget`` k-means centroids: fitted on a seeded sample
    (every row up to 200k), the rows assigned by tasks over the vector parts."""
    from selectllm.cluster.kmeans_groups import FIT_MAX_ROWS, fit_kmeans
    from selectllm.select.distributed import closest_to_centers, smallest_keys
    from selectllm.select.tables import vectors_of

    target, seed = _target(ctx, pool), ctx.cfg.select.seed

    def sample(k: int) -> list[str]:  # bottom-k of the keyed hash (all rows when k >= N), in id order
        return sorted(smallest_keys(pool.fs, pool.files, k, seed, pool.tasks).column("id").to_pylist())

    if target >= pool.n:  # no more rows than the budget: all of them
        chosen = sample(pool.n)
    else:
        centers = fit_kmeans(vectors_of(ctx, sample(FIT_MAX_ROWS), pool.tasks), target, seed=seed)
        chosen = closest_to_centers(pool.fs, ctx.input("vectors").files(), centers, target, pool.tasks)
    labels = pool.labels_of(chosen)
    return StrategyResult([(i, int(labels[i])) for i in sorted(chosen)], extra={"kmeans_k": int(target)})


# ----------------------------------------------------------------------------- length
def length_strategy(ctx, pool) -> StrategyResult:
    """The longest rows (instruction + input characters), ties to the lowest id."""
    from selectllm.select.distributed import longest_rows

    rows = ctx.input("rows")
    chosen = sorted(longest_rows(rows.run.fs, rows.files(), _target(ctx, pool), pool.tasks).column("id").to_pylist())
    label_of = pool.labels_of(chosen)
    if len(label_of) != len(chosen):
        raise RuntimeError("select: some dedup rows have no cluster; rerun `selectllm cluster`")
    return StrategyResult([(i, int(label_of[i])) for i in chosen])


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

    structured = cfg.llm.asks_structured
    params = {"max_tokens": cfg.llm.max_tokens, "temperature": cfg.llm.temperature,
              "response_format": "json_schema" if structured else "text"}
    out = []
    for i, ident in enumerate(ids):
        row = texts[str(ident)]
        messages = rating_messages(row["instruction"] or "", row["input"] or "", structured)
        out.append(LLMRequest(key=request_key(cfg.llm.model, messages, params, RATING_PROMPT_VERSION,
                                              endpoint=cfg.llm.endpoint),
                              group_id=i, messages=messages, max_tokens=cfg.llm.max_tokens,
                              response_format=RATING_SCHEMA if structured else None,
                              text_messages=rating_messages(row["instruction"] or "", row["input"] or "", False)
                              if structured else None))
    return out


def rank_by_rating(scores: np.ndarray) -> np.ndarray:
    """Row order: rated rows by score (high first), then unrated (NaN) rows; ties by row (= id)."""
    n = len(scores)
    unrated = np.isnan(scores)
    key = np.where(unrated, 0.0, -scores)
    return np.lexsort((np.arange(n), key, unrated))


def alpagasus_strategy(ctx, pool) -> StrategyResult:
    """One LLM rating per row; keep the ``budget`` best rated (see module doc)."""
    ids, labels, _ = pool.arrays()
    n, target = len(ids), _target(ctx, pool)
    texts = lookup_rows(ctx.input("rows"), [str(i) for i in ids], ["instruction", "input"], pool.tasks)
    results = send(ctx, rating_requests(ctx.cfg, ids, texts))
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
                          "chosen_ids": [str(ids[i])] if chosen[i] else [],
                          "chosen_reasons": [""] if chosen[i] else [],
                          "chosen_by": ([] if not chosen[i] else ["llm"] if status[i] == "ok" else ["fallback"]),
                          "status": status[i], "reason": reason[i],
                          "input_tokens": int(getattr(r, "input_tokens", 0) or 0),
                          "output_tokens": int(getattr(r, "output_tokens", 0) or 0),
                          "usd": float(getattr(r, "usd", 0.0) or 0.0)})
    rated = int((~np.isnan(scores)).sum())
    extra = {"rated": rated, "unrated_selected": int(np.isnan(scores[rows]).sum()),
             "score_min_selected": float(np.nanmin(scores[rows])) if rated and not np.isnan(scores[rows]).all() else None}
    return StrategyResult([(str(ids[i]), int(labels[i])) for i in rows], decisions, extra)
