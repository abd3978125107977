"""Near-duplicate removal in the dedup stage (selectllm.dedup.near) on local[2] and local-cluster[2,1,2048]."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from selectllm import schemas
from selectllm.config import load_config
from selectllm.text.minhash import shingle_text, true_jaccard

from helpers import near_removed, robust_rows, stage_ctx

ROOT = Path(__file__).resolve().parents[1]



def test_sample_corpus_planted_near_duplicates(spark, tmp_path):
    """examples/sample.jsonl with the default settings (near dedup on): exactly the planted near duplicates."""
    sample, manifest = ROOT / "examples" / "sample.jsonl", ROOT / "examples" / "sample_manifest.json"
    if not (sample.is_file() and manifest.is_file()):
        pytest.skip("examples/sample.jsonl or its manifest is not present")
    from selectllm.dedup.stage import run_stage

    want = json.loads(manifest.read_text())
    # the manifest is the raw corpus's truth: privacy (which masks its planted emails) left out
    ctx = stage_ctx(tmp_path / "run", "dedup", f"input.paths=[{sample}]", "privacy.mode=off")
    assert ctx.cfg.dedup.near.enabled and ctx.cfg.dedup.near.threshold == 0.7
    counts = run_stage(ctx)
    out = Path(ctx.out)
    stats = json.loads((out / "stats.json").read_text())
    got = {k: stats[k] for k in ("read", "kept", "exact_duplicates", "near_duplicates")}
    got["quarantined"] = stats["quarantined_total"]
    assert got == want["expected_stats"]["exact_and_near"]
    near = stats["near"]
    assert near["removed"] == stats["near_duplicates"] and (near["bands"], near["rows_per_band"]) == (21, 6)
    assert near["giant_buckets"] == 0 and near["verified_pairs"] >= near["removed"]
    assert counts["near_duplicates"] == 150 and counts["near_pair_checks"] == near["pair_checks"]

    kept = {r["source_row"]: r for p in sorted(out.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()}
    dups = pq.read_table(out / "duplicates.parquet")
    assert dups.schema.equals(schemas.DUPLICATES, check_metadata=False)
    near_rows = {r["source_row"]: r for r in dups.to_pylist() if r["kind"] == "near"}
    planted = {copy: orig for orig, copy in want["near_duplicate_pairs"]}
    assert set(near_rows) == set(planted)  # precision = recall = 1 on the planted pairs
    # the manifest's Jaccard is the smaller of two renderings; ours is that of the plain one
    jaccard = dict(zip((c for _, c in want["near_duplicate_pairs"]), want["near_duplicate_jaccard"]))
    lines = sample.read_bytes().split(b"\n")
    for row, r in near_rows.items():
        keeper = kept[planted[row]]  # the original (earlier line) is kept
        assert r["duplicate_of"] == keeper["id"] != r["id"]
        copy = json.loads(lines[row])
        truth = true_jaccard(shingle_text(keeper["instruction"], keeper["input"]),
                             shingle_text(copy["instruction"], copy.get("input")))
        assert r["similarity"] == pytest.approx(truth, abs=1e-6) and truth >= jaccard[row] - 1e-4


def test_robust_corpus_and_partition_invariance(spark, monkeypatch):
    import selectllm.dedup.near as near

    rows = robust_rows()
    removed, m = near_removed(spark, rows, 1)
    old = spark.conf.get("spark.sql.shuffle.partitions")
    old_batch = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    # Arrow batches of 7 rows: a component's rows span many batches of the keeper pass
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
    monkeypatch.setattr(near, "KEYS_PER_PARTITION", 100)  # band keys spread over many tasks
    try:
        again, m2 = near_removed(spark, rows, 3, broadcast_budget=0)  # the plan for big data: shuffle joins only
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old_batch)
    assert again == removed  # identical whatever the partitioning and the join strategy
    same = lambda m: {k: v for k, v in m.items() if "seconds" not in k and k != "broadcast"}  # noqa: E731
    assert same(m2) == same(m)
    assert not any(j["broadcast"] for j in m2["broadcast"]["joins"].values())

    by_src: dict[str, list] = {}
    for r in removed:
        by_src.setdefault(r[0], []).append(r)
    ids = {(r[4], r[5]): r[0] for r in rows}
    # identical rows: one component, the first row kept, similarity 1
    assert len(by_src["a.jsonl"]) == 119 and {r[1] for r in by_src["a.jsonl"]} == set(range(1, 120))
    assert {r[3] for r in by_src["a.jsonl"]} == {ids[("a.jsonl", 0)]} and {r[4] for r in by_src["a.jsonl"]} == {1.0}
    # boilerplate: all near-identical (Jaccard ~0.9) -> one component, kept = row 0; giant buckets capped
    assert len(by_src["b.jsonl"]) == 149 and {r[3] for r in by_src["b.jsonl"]} == {ids[("b.jsonl", 0)]}
    assert m["giant_buckets"] > 0 and m["giant_bucket_rows"] > 0
    assert m["pair_checks"] < 16 * 120 + 16 * 150 + 5000  # linear, not 120^2 + 150^2 pairs
    # 1 MB rows: the edited copy goes, the other megabyte row stays
    assert [(r[1], r[3]) for r in by_src["c.jsonl"]] == [(1, ids[("c.jsonl", 0)])]
    assert 0.99 < by_src["c.jsonl"][0][4] < 1.0
    # empty after normalization: no shingles, never a near duplicate
    assert "d.jsonl" not in by_src and m["rows_without_shingles"] == 3
    assert "e.jsonl" not in by_src
    # planted pairs: the second of each pair goes, pointing at the first
    assert sorted((r[1], r[3]) for r in by_src["f.jsonl"]) == [(2 * i + 1, ids[("f.jsonl", 2 * i)]) for i in range(20)]
    assert all(0.8 <= r[4] < 1.0 for r in by_src["f.jsonl"])
    # conservation
    assert m["rows"] == len(rows) and m["removed"] == len(removed) == 119 + 149 + 1 + 20
    assert m["components"] == 1 + 1 + 1 + 20


def _oracle_removed(rows, threshold: float) -> list[tuple]:
    """Every pair's true Jaccard (no LSH): the components of the pairs at or above ``threshold``,
    keeper = the smallest (source, source_row); ``(source, source_row, id, keeper id, similarity)``."""
    from selectllm.text.minhash import _string_shingles

    rows = sorted(rows, key=lambda r: (r[4], r[5]))
    sets = [_string_shingles(shingle_text(r[1], r[2]), 5, "word") for r in rows]
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def jac(a: set, b: set) -> float:
        return len(a & b) / max(len(a | b), 1)

    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if sets[i] and sets[j] and jac(sets[i], sets[j]) >= threshold:
                parent[max(find(i), find(j))] = min(find(i), find(j))
    return sorted((rows[i][4], rows[i][5], rows[i][0], rows[find(i)][0], round(jac(sets[i], sets[find(i)]), 6))
                  for i in range(len(rows)) if find(i) != i)


def test_tiny_broadcast_budget_gives_the_broadcast_plans_result(spark):
    """A budget of 1 byte: every join shuffles and adaptive execution may broadcast nothing; the
    removed rows are those of the plan that broadcasts (the default budget on these few rows) and
    those of checking every pair."""
    from selectllm.dedup.budget import AQE_KEY, STATIC_KEY

    rows = [r for r in robust_rows() if r[4] != "c.jsonl"]  # no megabyte rows: the oracle checks all pairs
    before = {k: spark.conf.get(k, None) for k in (STATIC_KEY, AQE_KEY)}
    wide, m_wide = near_removed(spark, rows, 2)
    tiny, m_tiny = near_removed(spark, rows, 2, broadcast_budget=1)
    assert {k: spark.conf.get(k, None) for k in (STATIC_KEY, AQE_KEY)} == before  # restored
    oracle = _oracle_removed(rows, 0.7)
    assert tiny == wide and [r[:4] for r in tiny] == [r[:4] for r in oracle]
    assert all(abs(a[4] - b[4]) < 1e-5 for a, b in zip(tiny, oracle))  # similarity to the keeper (float32)
    b_wide, b_tiny = m_wide["broadcast"], m_tiny["broadcast"]
    assert set(b_wide["joins"]) == set(b_tiny["joins"]) == {"files", "bucket_members", "star_pairs", "components"}
    assert all(j["broadcast"] for j in b_wide["joins"].values())  # they fit the 2g test heap
    assert not any(j["broadcast"] for j in b_tiny["joins"].values())
    assert b_tiny["aqe_threshold_bytes"] == -1 and 0 < b_wide["aqe_threshold_bytes"] <= 10 << 20
    assert b_tiny["heap_bytes"] > 1 << 30 and b_wide["budget_bytes"] == int(0.1 * b_wide["heap_bytes"])
    j = b_wide["joins"]["components"]  # measured: the nodes counted, 24-byte rows and the growth factor
    assert j["rows"] == len(wide) + m_wide["components"]  # every node of a component: removed or keeper
    assert j["row_bytes"] == 24 and j["jvm_bytes"] == int(j["rows"] * (24 + 40) * 3.0)


def test_out_of_memory_in_a_phase_says_which_and_the_rerun_resumes(spark, tmp_path, monkeypatch):
    """A JVM out of memory in near dedup's ``components`` phase (injected: the test's own failing
    function): one line naming the phase and the setting; the rerun (same inputs and settings,
    so the same work folder) does not redo the three phases that finished, and writes what a
    fresh run writes."""
    import selectllm.dedup.near as near
    from selectllm.dedup.stage import run_stage
    from selectllm.errors import UserError

    sample = ROOT / "examples" / "sample.jsonl"
    if not sample.is_file():
        pytest.skip("examples/sample.jsonl is not present")
    overrides = [f"input.paths=[{sample}]"]
    failing = near._components_phase

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("An error occurred while calling o1.count: java.lang.OutOfMemoryError: Java heap space")

    monkeypatch.setattr(near, "_components_phase", out_of_memory)
    ctx = stage_ctx(tmp_path / "run", "dedup", *overrides)
    with pytest.raises(UserError) as e:
        run_stage(ctx)
    msg = str(e.value)
    assert "\n" not in msg and "phase 'components'" in msg and "--set spark.conf.spark.driver.memory=" in msg
    assert "resumes after the phases saved (signatures, buckets, verified)" in msg

    ran = []
    monkeypatch.setattr(near, "_components_phase", lambda *a: (ran.append("components"), failing(*a))[1])
    for name in ("_sign_phase", "_bucket_phase", "_verify_phase"):
        monkeypatch.setattr(near, name, lambda *a, _n=name: ran.append(_n))  # must not run again
    again = stage_ctx(tmp_path / "run", "dedup", *overrides)
    assert again.work == ctx.work
    run_stage(again)
    assert ran == ["components"]
    stats = json.loads((Path(again.out) / "stats.json").read_text())
    assert stats["near"]["resumed_phases"] == ["signatures", "buckets", "verified"]

    monkeypatch.undo()
    fresh = stage_ctx(tmp_path / "fresh" / "run", "dedup", *overrides)
    run_stage(fresh)
    want = json.loads((Path(fresh.out) / "stats.json").read_text())
    for key in ("read", "kept", "exact_duplicates", "near_duplicates"):
        assert stats[key] == want[key]
    for name in ("duplicates.parquet", "part-00000.parquet"):
        assert pq.read_table(Path(again.out) / name).equals(pq.read_table(Path(fresh.out) / name))


def test_unverified_and_char_shingles(spark):
    rows = [r for r in robust_rows() if r[4] in ("e.jsonl", "f.jsonl")]
    removed, m = near_removed(spark, rows, 2, ["dedup.near.verify=false"])
    assert sorted(r[1] for r in removed) == [2 * i + 1 for i in range(20)]  # estimated Jaccard still finds them
    removed, m = near_removed(spark, rows, 2, ["dedup.near.shingle=char", "dedup.near.ngram=5",
                                           "dedup.near.bands=20"])
    assert (m["bands"], m["rows_per_band"]) == (20, 6)
    assert sorted(r[1] for r in removed) == [2 * i + 1 for i in range(20)]


def test_dedup_dataframe_removes_near_then_exact(spark, tmp_path):
    from selectllm.dedup.stage import dedup_dataframe

    f = tmp_path / "x.jsonl"
    base = " ".join(f"word{i}" for i in range(80))
    f.write_text("\n".join(json.dumps({"instruction": t}) for t in (
        base, base.replace("word7 ", "other "), "Something else entirely, not similar at all.", base.upper())) + "\n")
    cfg = load_config(None, [f"input.paths=[{f}]", "dedup.near.enabled=true"])
    kept, _, dups = dedup_dataframe(spark, cfg, num_partitions=1)
    assert kept.columns == schemas.DEDUP.names + [schemas.FINDINGS.name] and dups.columns == schemas.DUPLICATES.names
    assert sorted(r["source_row"] for r in kept.collect()) == [0, 2]
    d = sorted((r["source_row"], r["kind"]) for r in dups.collect())
    assert d == [(1, "near"), (3, "exact")]


_CLUSTER_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local-cluster[2,1,2048]").appName("near-local-cluster")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.shuffle.partitions", "6")
         .config("spark.executor.memory", "1536m").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
try:
    from helpers import near_removed, robust_rows
    removed, metrics = near_removed(spark, robust_rows(), 4)
    assert spark.sparkContext.master.startswith("local-cluster")
    json.dump({"removed": removed, "executors": spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1},
              open(sys.argv[2], "w"))
finally:
    spark.stop()
"""


@pytest.mark.slow
def test_local_cluster_gives_the_same_result(spark, tmp_path):
    """The same plan on two executor JVMs (local-cluster[2,1,2048]) as on local[2]."""
    script, result = tmp_path / "run_cluster.py", tmp_path / "result.json"
    script.write_text(_CLUSTER_SCRIPT)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, str(script), str(Path(__file__).parent), str(result)],
                          env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(result.read_text())
    assert got["executors"] == 2
    local, _ = near_removed(spark, robust_rows(), 2)
    assert [tuple(r) for r in got["removed"]] == local
