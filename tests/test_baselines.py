"""Baselines: kmeans-closest, length, alpagasus (one LLM rating per row) -- exact counts, rules."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from selectllm.cluster.kmeans_groups import fit_kmeans, nearest_center
from selectllm.rundir import RunDir
from selectllm.select import registry as strategies
from selectllm.select.baselines import parse_rating, rank_by_rating
from selectllm.select.tables import Pool

from helpers import make_pool_run, pool_config, stage_ctx


def _setup(tmp_path, *sets):
    ids, x, labels = make_pool_run(tmp_path)
    cfg = pool_config(tmp_path, *sets)
    run = RunDir(str(tmp_path))
    ctx = stage_ctx(run, "select", cfg=cfg)
    a = ctx.input("assignments").read().sort_by("id")
    return ctx, ids, x, labels, a.column("distance").to_numpy()


def test_kmeans_closest(tmp_path):
    ctx, ids, x, labels, dist = _setup(tmp_path)
    res = strategies.get("kmeans-closest")(ctx, Pool(ctx, remote=False))
    chosen = [i for i, _ in res.selected]
    assert len(chosen) == 12 and len(set(chosen)) == 12
    centers = fit_kmeans(x, 12, seed=0)
    lab, d2 = nearest_center(x, centers)
    pos = {v: i for i, v in enumerate(ids)}
    rows = sorted(pos[c] for c in chosen)
    assert sorted(lab[rows].tolist()) == list(range(12))  # one per k-means cluster
    for r in rows:  # ... its member closest to the centroid
        members = np.flatnonzero(lab == lab[r])
        assert d2[r] == d2[members].min()
    again = strategies.get("kmeans-closest")(ctx, Pool(ctx, remote=False))
    assert again.selected == res.selected


def test_length(tmp_path):
    ctx, ids, x, labels, dist = _setup(tmp_path, "select.budget=20")
    table = ctx.input("rows").read(["id", "instruction", "input"]).sort_by("id").to_pylist()
    lengths = np.asarray([len(r["instruction"]) + len(r["input"]) for r in table])
    res = strategies.get("length")(ctx, Pool(ctx, remote=False))
    rows = sorted(int(np.flatnonzero(ids == i)[0]) for i, _ in res.selected)
    expect = sorted(np.lexsort((np.arange(len(ids)), -lengths))[:20].tolist())  # longest, ties to lowest id
    assert rows == expect and lengths[rows].min() >= np.delete(lengths, rows).max()


@pytest.mark.parametrize("text,score", [
    ('{"score": 4}', 4.0), ("Score: 4.5\nBecause it is detailed.", 4.5), ("3", 3.0), ("score = 2", 2.0),
    ("The score is 5 out of 5", 5.0), ("7", None), ("no idea", None), ("", None), (None, None),
    ('{"score": true}', None), ("1 or 2", None), ('{"selected": [1]}', None),
])
def test_parse_rating(text, score):
    assert parse_rating(text) == score


def test_rank_by_rating():
    scores = np.asarray([3.0, np.nan, 5.0, 3.0, np.nan, 4.0])
    assert rank_by_rating(scores).tolist() == [2, 5, 0, 3, 1, 4]


def _sim_rating(instruction: str, input_text: str) -> int:
    """The simulator's rating of our prompt (words after "Rate the following", see llm/simulator/answers.py)."""
    from selectllm.llm.simulator import rating_score
    from selectllm.select.prompts import rating_messages

    text = rating_messages(instruction, input_text, True)[-1]["content"]
    return rating_score(text[re.search("Rate the following", text).end():])


@pytest.mark.subprocess
def test_alpagasus_rates_every_row_and_keeps_the_best(tmp_path):
    ctx, ids, x, labels, dist = _setup(tmp_path)
    res = strategies.get("alpagasus")(ctx, Pool(ctx, remote=False))
    assert len({i for i, _ in res.selected}) == 12
    assert len(res.decisions) == len(ids) and {d["status"] for d in res.decisions} == {"ok"}
    assert all(d["input_tokens"] > 0 for d in res.decisions) and res.extra["rated"] == len(ids)
    texts = {r["id"]: r for r in ctx.input("rows").read(["id", "instruction", "input"]).to_pylist()}
    score = {i: _sim_rating(texts[i]["instruction"], texts[i]["input"]) for i in ids}
    chosen = {i for i, _ in res.selected}
    assert min(score[i] for i in chosen) >= max(score[i] for i in ids if i not in chosen)
    for d in res.decisions:
        assert d["reason"] == f"score {score[d['candidate_ids'][0]]}"
        assert (d["chosen_ids"] == d["candidate_ids"]) == (d["candidate_ids"][0] in chosen)
    # ties are broken by id: among the lowest selected score, the lowest ids were taken
    low = min(score[i] for i in chosen)
    tied = sorted(i for i in ids if score[i] == low)
    assert sorted(i for i in chosen if score[i] == low) == tied[: sum(score[i] == low for i in chosen)]


@pytest.mark.subprocess
def test_alpagasus_budget_cap(tmp_path):
    """With llm.max_usd hit, unrated rows get no rating and rank after every rated row."""
    ctx, ids, x, labels, dist = _setup(tmp_path, "llm.max_usd=0.0015", "llm.concurrency=2")
    res = strategies.get("alpagasus")(ctx, Pool(ctx, remote=False))
    status = [d["status"] for d in res.decisions]
    rated = status.count("ok")
    assert 0 < rated < len(ids) and status.count("budget_stopped") == len(ids) - rated
    assert sum(d["usd"] for d in res.decisions) <= 0.0015 + 1e-9
    chosen = [i for i, _ in res.selected]
    assert len(set(chosen)) == 12
    by_id = {d["candidate_ids"][0]: d for d in res.decisions}
    if rated >= 12:
        assert all(by_id[c]["status"] == "ok" for c in chosen)
    else:
        assert sum(by_id[c]["status"] == "ok" for c in chosen) == rated
        unrated = sorted(i for i in ids if by_id[i]["status"] != "ok")
        assert sorted(c for c in chosen if by_id[c]["status"] != "ok") == unrated[: 12 - rated]
    assert math.isclose(res.extra["rated"], rated)
