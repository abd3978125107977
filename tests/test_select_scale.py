"""Select without the pool on the driver: the part tasks of select/distributed.py give exactly what
the one-process functions give (plan.plan_groups is the oracle), on one process, on Ray and on
a multi-node Ray cluster; strategies that hold the pool in one process stop before any work."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm import schemas
from selectllm.errors import UserError
from selectllm.rundir import RunDir
from selectllm.select import distributed as D
from selectllm.select.plan import plan_groups

from helpers import compare_run, make_pool_run, pool_config, stage_ctx


FS = fsspec.filesystem("file")


def write_parts(folder: Path, ids, labels, dist, parts: int, seed: int = 0) -> list[str]:
    """The rows in ``parts`` part files, shuffled across and inside the parts (some may be empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cut = np.sort(rng.integers(0, len(ids) + 1, parts - 1))
    order = rng.permutation(len(ids))
    files = []
    for p, rows in enumerate(np.split(order, cut)):
        path = str(folder / f"part-{p:05d}.parquet")
        pq.write_table(pa.table({"id": [str(ids[r]) for r in rows], "cluster_id": np.asarray(labels)[rows].astype(np.int64),
                                 "distance": np.asarray(dist, np.float32)[rows], "is_center": np.zeros(len(rows), bool)},
                                schema=schemas.ASSIGNMENTS), path, row_group_size=37)
        files.append(path)
    return files


def random_pool(n: int, k: int, seed: int, ties: bool):
    """Unequal clusters (some smaller than the candidates shown), distances with many ties when
    ``ties`` (then the id decides), the center of each cluster at distance 0."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(sorted({hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)}), dtype=object)
    labels = np.minimum(rng.geometric(1.5 / k, len(ids)) - 1, k - 1)
    labels[:k] = np.arange(k)  # no cluster empty
    dist = (rng.integers(0, 4, len(ids)) / 4.0 if ties else rng.random(len(ids))).astype(np.float32)
    dist[:k] = 0.0
    return ids, labels.astype(np.int64), dist


def as_tuples(groups):
    return [(g.group_id, g.cluster_id, g.candidates, g.quota) for g in groups]


CASES = [  # n, k, budget, picks, candidates, parts, buckets, ties
    (500, 20, 20, 1, 10, 3, 1, True),
    (500, 20, 13, 1, 10, 4, 3, True),  # k·picks > budget: the last clusters give nothing
    (500, 20, 70, 2, 5, 5, 7, False),  # shortfall topped up round-robin, quotas above candidates
    (300, 40, 60, 1, 12, 2, 40, True),  # small clusters, one bucket per cluster
    (50, 8, 500, 1, 10, 6, None, True),  # budget above the pool: everything
]


@pytest.mark.parametrize("allocation", ["equal", "sqrt", "proportional"])
@pytest.mark.parametrize("n,k,budget,picks,cpp,parts,buckets,ties", CASES)
def test_distributed_plan_equals_the_one_process_oracle(tmp_path, n, k, budget, picks, cpp, parts, buckets, ties,
                                                        allocation):
    ids, labels, dist = random_pool(n, k, seed=n + k + budget, ties=ties)
    files = write_parts(tmp_path / "a", ids, labels, dist, parts)
    oracle = plan_groups(ids, labels, dist, k, budget, picks, cpp, allocation, seed=5)
    got = D.plan_groups_distributed(FS, files, k, budget, picks, cpp, tasks=None, buckets=buckets,
                                    allocation=allocation, seed=5)
    assert as_tuples(got) == as_tuples(oracle)
    assert sum(g.quota for g in got) == min(budget, n)


def test_distributed_plan_on_ray_tasks_equals_the_oracle(tmp_path, ray_local):
    ids, labels, dist = random_pool(800, 30, seed=3, ties=True)
    files = write_parts(tmp_path / "a", ids, labels, dist, parts=4)
    oracle = plan_groups(ids, labels, dist, 30, 45, 2, 6, "sqrt", seed=1)
    for buckets in (1, 5):
        got = D.plan_groups_distributed(FS, files, 30, 45, 2, 6, tasks={"num_cpus": 1}, buckets=buckets, allocation="sqrt", seed=1)
        assert as_tuples(got) == as_tuples(oracle)


def test_lookup_reads_only_the_wanted_rows_from_every_part(tmp_path):
    ids, labels, dist = random_pool(300, 10, seed=1, ties=False)
    files = write_parts(tmp_path / "a", ids, labels, dist, parts=11)  # more files than one task scans
    wanted = [str(ids[i]) for i in (0, 7, 150, 299)] + ["not-an-id"]
    t = D.lookup_table(FS, files, wanted, ["cluster_id"], tasks=None)
    got = dict(zip(t.column("id").to_pylist(), t.column("cluster_id").to_pylist()))
    assert got == {str(ids[i]): int(labels[i]) for i in (0, 7, 150, 299)}


def test_random_sample_is_bottom_k_of_the_keyed_hash_whatever_the_split(tmp_path):
    ids, labels, dist = random_pool(400, 10, seed=2, ties=False)
    one = D.smallest_keys(FS, write_parts(tmp_path / "one", ids, labels, dist, 1), 25, 7, tasks=None)
    many = D.smallest_keys(FS, write_parts(tmp_path / "many", ids, labels, dist, 6), 25, 7, tasks=None)
    keys = D.hash_keys(list(ids), 7)  # the oracle: sort the whole pool by its keys
    expect = [str(ids[i]) for i in np.lexsort((ids, keys))[:25]]
    assert one.column("id").to_pylist() == expect == many.column("id").to_pylist()
    other_seed = D.smallest_keys(FS, write_parts(tmp_path / "s", ids, labels, dist, 2), 25, 8, tasks=None)
    assert set(other_seed.column("id").to_pylist()) != set(expect)


def test_length_baseline_matches_sorting_every_row(tmp_path):
    from selectllm.select import registry
    from selectllm.select.tables import Pool

    make_pool_run(tmp_path)
    # rows of equal length: the lowest id wins
    cfg = pool_config(tmp_path, "select.budget=30")
    ctx = stage_ctx(tmp_path, "select", cfg=cfg)
    table = ctx.input("rows").read(["id", "instruction", "input"]).to_pylist()
    table.sort(key=lambda r: (-(len(r["instruction"]) + len(r["input"])), r["id"]))
    res = registry.get("length")(ctx, Pool(ctx, remote=False))
    assert [i for i, _ in res.selected] == sorted(r["id"] for r in table[:30])
    label_of = dict(zip(*[ctx.input("assignments").read().column(c).to_pylist() for c in ("id", "cluster_id")]))
    assert all(label_of[i] == c for i, c in res.selected)


def refuse_whole_pool(monkeypatch) -> list[int]:
    """Make whole-pool reads fail; returns the list that gets the size of every lookup by id."""
    from selectllm.select import tables

    def refuse(*a, **k):
        raise AssertionError("the whole pool was loaded in one process")

    asked: list[int] = []
    real = D.lookup_table
    monkeypatch.setattr(tables.Pool, "arrays", refuse)
    monkeypatch.setattr(tables, "load_embeddings", refuse)
    monkeypatch.setattr(D, "lookup_table", lambda fs, files, ids, *a: asked.append(len(ids)) or real(fs, files, ids, *a))
    return asked


@pytest.mark.parametrize("strategy", [pytest.param("selectllm", marks=pytest.mark.subprocess),
                                      "random", "length", "kcenter"])
def test_distributed_strategies_never_load_the_pool_in_one_process(tmp_path, monkeypatch, strategy):
    """Whole-pool reads fail here; the lookups by id ask for at most groups x candidates rows."""
    from selectllm.select import registry, tables

    make_pool_run(tmp_path)
    cfg = pool_config(tmp_path, f"select.strategy={strategy}", "select.candidates_per_prompt=5")
    ctx = stage_ctx(tmp_path, "select", cfg=cfg)
    pool = tables.Pool(ctx, remote=False)
    asked = refuse_whole_pool(monkeypatch)
    res = registry.get(strategy)(ctx, pool)
    assert len({i for i, _ in res.selected}) == 12
    assert max(asked, default=0) <= 12 * 5


def test_kmeans_closest_on_the_parts_equals_one_process(tmp_path, monkeypatch):
    """Fitted on the bottom-k sample, every row assigned by part tasks: the vectors are never all
    in one process, and the rows are those of assigning every vector in one process."""
    from selectllm.cluster import kmeans_groups
    from selectllm.select import registry, tables

    ids, x, labels = make_pool_run(tmp_path)  # 240 rows
    order = np.argsort(ids)
    ids, x = np.asarray(ids)[order], x[order]
    monkeypatch.setattr(kmeans_groups, "FIT_MAX_ROWS", 100)  # a sample smaller than the pool
    cfg = pool_config(tmp_path, "select.strategy=kmeans-closest", "select.budget=15")
    ctx = stage_ctx(tmp_path, "select", cfg=cfg)
    pool = tables.Pool(ctx, remote=False)
    asked = refuse_whole_pool(monkeypatch)
    res = registry.get("kmeans-closest")(ctx, pool)
    assert max(asked) == 100  # the fit sample; then the 15 chosen rows' clusters

    # one process: the same sample, the same centroids, every row assigned at once
    sample = sorted(D.smallest_keys(pool.fs, pool.files, 100, 0, None).column("id").to_pylist())
    centers = kmeans_groups.fit_kmeans(x[np.searchsorted(ids, sample)], 15, seed=0)
    lab, d2 = kmeans_groups.nearest_center(x, centers)
    by = np.lexsort((np.arange(len(ids)), d2, lab))
    first = np.concatenate(([True], lab[by][1:] != lab[by][:-1]))
    rows = by[first].tolist()
    rest = [r for r in np.lexsort((np.arange(len(ids)), d2)) if r not in rows]
    rows = sorted(rows + rest[:15 - len(rows)])
    assert [i for i, _ in res.selected] == ids[rows].tolist()
    label_of = dict(zip(ids.tolist(), np.asarray(labels)[order].tolist()))
    assert all(label_of[i] == c for i, c in res.selected)
    # more parts, fewer rows per batch: the same rows
    monkeypatch.setattr(D, "BATCH_ROWS", 7)
    assert registry.get("kmeans-closest")(ctx, tables.Pool(ctx, remote=False)).selected == res.selected


def test_closest_to_centers_fills_empty_centroids_by_distance(tmp_path):
    import fsspec

    from selectllm.schemas import embed_schema

    x = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.15, 0.85]], dtype=np.float32)
    ids = [f"r{i}" for i in range(5)]
    for j, sl in enumerate((slice(0, 2), slice(2, 5))):
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x[sl].reshape(-1)), 2)
        pq.write_table(pa.table({"id": ids[sl], "embedding": emb}, schema=embed_schema(2)), tmp_path / f"p{j}.parquet")
    files = [str(tmp_path / "p0.parquet"), str(tmp_path / "p1.parquet")]
    centers = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)  # the third is nobody's nearest
    got = D.closest_to_centers(fsspec.filesystem("file"), files, centers, 3, tasks=None)
    assert got == ["r0", "r3", "r1"]  # r1 is the next closest to its own centroid (r4 is further)
    assert D.closest_to_centers(fsspec.filesystem("file"), files, centers, 2, tasks=None) == ["r0", "r3"]


# ------------------------------------------------------------------------------ the limits
@pytest.mark.parametrize("strategy,key", [("selectllm-paper", "paper_max_rows"),
                                          ("alpagasus", "alpagasus_max_rows")])
def test_over_the_limit_the_select_stage_fails_before_any_request(tmp_path, strategy, key):
    from selectllm.pipeline import BY_NAME, run_stage

    make_pool_run(tmp_path)  # 240 rows
    cfg = pool_config(tmp_path, f"select.strategy={strategy}", f"select.{key}=239")
    with pytest.raises(UserError) as e:
        run_stage(cfg, RunDir(str(tmp_path)), BY_NAME["select"])
    msg = str(e.value)
    assert "\n" not in msg and f"N=240 exceeds select.{key}=239" in msg and f"select.strategy {strategy}" in msg
    assert "; use " in msg  # names the alternative
    assert not (tmp_path / "cache" / "llm").exists() and not list(tmp_path.rglob("requests.jsonl"))
    assert not (tmp_path / "selected.jsonl").exists()


def test_kcenter_limit_only_when_it_must_continue_past_the_clusters():
    from selectllm.config import load_config
    from selectllm.select.registry import check_scale

    cfg = load_config(None, ["select.budget=100", "select.vectors_max_rows=1000"])
    check_scale(cfg, "kcenter", 5_000_000, 100)  # the centers are the selection: no vectors needed
    with pytest.raises(UserError, match=r"kcenter .*N=5,000,000 exceeds select.vectors_max_rows=1,000; set cluster.k"):
        check_scale(cfg, "kcenter", 5_000_000, 50)
    check_scale(cfg, "selectllm", 10**9, 1)  # distributed: no limit
    check_scale(cfg, "random", 10**9, 1)


def test_limits_do_not_change_the_select_settings():
    from selectllm.config import load_config
    from selectllm.select.stage import STAGE

    a = load_config(None, [])
    b = load_config(None, ["select.paper_max_rows=5", "select.vectors_max_rows=5", "select.alpagasus_max_rows=5"])
    c = load_config(None, ["select.budget=7"])
    assert STAGE.settings.hash(a) == STAGE.settings.hash(b) != STAGE.settings.hash(c)


def test_compare_checks_every_limit_before_running_any_strategy(tmp_path):

    make_pool_run(tmp_path)
    cfg = pool_config(tmp_path, "select.paper_max_rows=100")
    with pytest.raises(UserError, match="selectllm-paper .*select.paper_max_rows=100"):
        compare_run(cfg, RunDir(str(tmp_path)), ["random", "selectllm", "selectllm-paper"])
    assert not list(tmp_path.rglob("selected.jsonl")) and not (tmp_path / "cache" / "llm").exists()


def test_estimate_stops_at_the_limit_too(tmp_path):
    from selectllm.estimate import estimate_cost

    make_pool_run(tmp_path)
    cfg = pool_config(tmp_path, "select.strategy=alpagasus", "select.alpagasus_max_rows=10")
    with pytest.raises(UserError, match="alpagasus_max_rows=10"):
        estimate_cost(cfg, RunDir(str(tmp_path)))


# ------------------------------------------------------------------------------- progress
def test_llm_progress_lines_say_requests_done_and_dollars(capsys):
    from selectllm.llm.runner import Progress
    from selectllm.llm.types import LLMResult

    bar = Progress(3, True, every=0.0)  # not a terminal under pytest: lines
    for usd, cached in ((0.25, False), (1.0, True), (0.5, False)):
        bar.advance(LLMResult(key="k", group_id=0, status="ok", text="", usd=usd, cached=cached))
    bar.close()
    out = capsys.readouterr()
    lines = [x for x in (out.out + out.err).splitlines() if x.startswith("LLM requests:")]
    assert lines[0] == "LLM requests: 1/3 done, $0.2500 spent"
    assert lines[-1] == "LLM requests: 3/3 done, $0.7500 spent"  # cached answers cost nothing


# ---------------------------------------------------------------------------- multi-node
MULTI_NODE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import ray
    from ray.cluster_utils import Cluster

    sys.path[:0] = [{root!r}, {tests!r}]
    from helpers import pool_config, stage_ctx
    from selectllm.rundir import RunDir
    from selectllm.select import registry
    from selectllm.select.decide import decide_groups, selectllm_groups
    from selectllm.select.plan import plan_groups
    from selectllm.select.tables import Pool

    cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 0}})  # no task on the driver's node
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="WARNING")
    cluster.wait_for_nodes()
    run = RunDir({run!r})
    cfg = pool_config({run!r}, "select.budget=20", "select.candidates_per_prompt=6")
    ctx = stage_ctx(run, "select", cfg=cfg)
    far, near = Pool(ctx, remote=True), Pool(ctx, remote=False)
    ids, labels, dist = near.arrays()
    oracle = plan_groups(ids, labels, dist, near.k, 20, 1, 6, cfg.select.allocation, cfg.select.seed)
    groups = selectllm_groups(cfg, far)
    same_groups = [(g.cluster_id, g.candidates, g.quota) for g in groups] == [(g.cluster_id, g.candidates, g.quota) for g in oracle]
    # the selection: the simulator's answers to the distributed plan vs the oracle plan looked up in one process
    ray_sel = registry.get("selectllm")(ctx, far).selected
    alive = len([m for m in ray.nodes() if m["Alive"]])
    ray.shutdown()
    ctx1 = stage_ctx(run, "select", cfg=cfg)
    one = [(c, d["cluster_id"]) for d in decide_groups(ctx1, oracle) for c in d["chosen_ids"]]
    print(json.dumps({{"alive": alive, "same_groups": same_groups, "groups": len(groups),
                      "same_selection": ray_sel == one, "selected": len(one)}}))
    cluster.shutdown()
""")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.subprocess
def test_multi_node_ray_plan_and_selection_equal_one_process(tmp_path):
    """A 3-node local Ray cluster (a head without CPUs, two 1-CPU workers): the planning and
    lookup tasks run on the workers and give the oracle's groups and the same selection."""
    run = tmp_path / "run"
    ids, x, labels = make_pool_run(run, n=600, k=20)
    a = pq.read_table(run / "cluster" / "assignments.parquet")
    (run / "cluster" / "assignments.parquet").unlink()
    write_parts(run / "cluster" / "assignments.parquet", a.column("id").to_pylist(),
                a.column("cluster_id").to_numpy(), a.column("distance").to_numpy(), parts=5)
    root = Path(__file__).resolve().parents[1]
    script = MULTI_NODE.format(root=str(root), tests=str(root / "tests"), run=str(run))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["alive"] == 3
    assert result["same_groups"] and result["groups"] == 20
    assert result["same_selection"] and result["selected"] == 20


def test_compare_coverage_on_the_documented_sample(tmp_path, ray_local):
    """compare.sample_rows below the pool: coverage over the 100 rows with the smallest keyed
    hash (seed 0), the same rows for every strategy; the selection's own metrics unchanged."""
    from selectllm.report import metrics as M

    ids, x, labels = make_pool_run(tmp_path)
    cfg = pool_config(tmp_path, "compare.sample_rows=100")
    data = compare_run(cfg, RunDir(str(tmp_path)), ["random", "kcenter"])
    sample = np.sort(np.lexsort((ids, D.hash_keys(list(ids), 0)))[:100])  # the oracle, over the whole pool
    pos = {v: i for i, v in enumerate(ids)}
    for name in ("random", "kcenter"):
        sel = [json.loads(x_)["id"] for x_ in (tmp_path / "compare" / name / "selected.jsonl").read_text().splitlines()]
        rows = np.sort([pos[i] for i in sel])
        d = M.nearest_distance(x[sample], x[rows])
        assert data[name]["coverage_rows"] == 100
        assert data[name]["coverage_max"] == pytest.approx(float(d.max()), abs=1e-5)
        assert data[name]["coverage_mean"] == pytest.approx(float(d.mean()), abs=1e-5)
        assert data[name]["diversity"] == pytest.approx(M.diversity(x[rows]), abs=1e-6)
