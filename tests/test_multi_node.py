"""The whole job on several nodes of both engines: dedup on Spark ``local-cluster[2,1,1024]`` (two
executor JVMs), embed, cluster and the select planning on a 3-node local Ray cluster (a head with
no CPUs, two 1-CPU workers).  Each stage's result is the one-process answer: the same kept rows
and duplicates as ``local[2]``, the farthest-first centers of the whole pool in one process, the
groups of the one-process planner and the selection the LLM makes for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import small_corpus


ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    import numpy as np
    import pyarrow.parquet as pq
    import ray
    from pyspark.sql import SparkSession
    from ray.cluster_utils import Cluster

    from selectllm.cluster import kcenter as K
    from selectllm.config import load_config
    from selectllm.embed.embedder import from_fixed_size_list
    from helpers import stage_ctx
    from selectllm.pipeline import run_pipeline
    from selectllm.select.decide import decide_groups
    from selectllm.select.plan import plan_groups
    from selectllm.select.tables import Pool

    spark = (SparkSession.builder.master("local-cluster[2,1,1024]").appName("multi-node")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.executor.memory", "768m").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 0, "include_dashboard": False}})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="WARNING")
    cluster.wait_for_nodes()
    cfg = load_config({cfg!r}, [f"ray.address={{cluster.address}}"])
    run = run_pipeline(cfg, stages=["dedup", "embed", "cluster", "select"])
    executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
    nodes = {{a["Address"]["NodeID"] for a in ray.state.actors().values()}}  # embed and shard actors' nodes
    alive = len([m for m in ray.nodes() if m["Alive"]])
    ray.shutdown()

    # one process: the centers of the whole pool, the planner's groups, the LLM's picks for them
    emb = pq.read_table(run.path("embed")).sort_by("id")
    x = from_fixed_size_list(emb.column("embedding"))
    k = len(pq.read_table(run.path("cluster", "centers.parquet")))
    rows, _ = K.farthest_first(x, k)
    centers = pq.read_table(run.path("cluster", "centers.parquet")).column("id").to_pylist()
    ctx = stage_ctx(run, "select", cfg=cfg)
    pool = Pool(ctx, remote=False)
    ids, labels, dist = pool.arrays()
    oracle = plan_groups(ids, labels, dist, pool.k, cfg.select.budget, cfg.select.picks_per_prompt,
                         cfg.select.candidates_per_prompt, cfg.select.allocation, cfg.select.seed)
    dec = pq.read_table(run.path("select", "decisions.parquet")).sort_by("group_id").to_pylist()
    one = sorted(c for d in decide_groups(ctx, oracle) for c in d["chosen_ids"])
    selected = sorted(json.loads(line)["id"] for line in open(run.path("selected.jsonl")))
    print(json.dumps({{
        "executors": executors, "alive": alive, "actor_nodes": len(nodes),
        "same_centers": centers == emb.column("id").take(rows).to_pylist(), "k": k,
        "shards": json.load(open(run.path("manifest.json")))["stages"]["cluster"]["counts"]["shards"],
        "shard_nodes": json.load(open(run.path("manifest.json")))["stages"]["cluster"]["counts"]["nodes"],
        "same_groups": [(d["cluster_id"], d["candidate_ids"]) for d in dec]
                       == [(g.cluster_id, g.candidates) for g in oracle],
        "groups": len(oracle), "same_selection": selected == one, "selected": len(selected)}}))
    cluster.shutdown()
    spark.stop()
""")


def _kept(run: Path) -> list[tuple]:
    t = pq.read_table(sorted(str(p) for p in (run / "dedup").glob("part-*.parquet")),
                      columns=["id", "source_row"]).sort_by("id")
    return list(zip(t.column("id").to_pylist(), t.column("source_row").to_pylist()))


def _duplicates(run: Path) -> list[tuple]:
    t = pq.read_table(run / "dedup" / "duplicates.parquet").sort_by("source_row")
    return list(zip(t.column("source_row").to_pylist(), t.column("duplicate_of").to_pylist(), t.column("kind").to_pylist()))


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.ray
@pytest.mark.subprocess
def test_whole_job_on_spark_local_cluster_and_ray_nodes_equals_one_process(tmp_path, spark):
    from selectllm.config import load_config
    from selectllm.pipeline import run_pipeline

    corpus = small_corpus(tmp_path / "corpus.jsonl", good=400)
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "input": {"paths": [str(corpus)], "preset": "alpaca"},
        "embed": {"backend": "static"},
        "cluster": {"k": 12, "min_shard_rows": 50},  # two shards
        "select": {"strategy": "selectllm", "budget": 12, "candidates_per_prompt": 5},
        "llm": {"provider": "simulator", "concurrency": 4, "simulator": {"latency_ms": 1}},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    script = SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), cfg=str(path))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=540, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["executors"] == 2 and got["alive"] == 3 and got["actor_nodes"] >= 2
    assert got["same_centers"] and got["k"] == 12 and got["shards"] == got["shard_nodes"] == 2
    assert got["same_groups"] and got["groups"] == 12
    assert got["same_selection"] and got["selected"] == 12

    # dedup on local[2] (this session) keeps and removes the same rows as on the two executors
    local = tmp_path / "local"
    run_pipeline(load_config(path, [f"run_dir={local}"]), stages=["dedup"])
    assert _kept(local) == _kept(tmp_path / "run") and len(_kept(local)) > 300
    assert _duplicates(local) == _duplicates(tmp_path / "run") and _duplicates(local)
