"""Run dirs, inputs and configs on s3:// (moto on 127.0.0.1), and the Spark <-> fsspec Parquet path.

End-to-end runs on S3 are in test_spark_submit.py (dedup, executors in other JVMs) and
test_jobs_ray.py (every stage under Ray Jobs); these are the fast, in-process checks.
"""

from __future__ import annotations

import gzip
import os
import pyarrow.parquet as pq
import pytest

import s3_server
from selectllm import schemas
from selectllm.errors import UserError


def test_rundir_on_s3_commits_and_sees_other_writers(s3_env):
    from selectllm.rundir import RunDir

    bucket = s3_env.bucket()
    run = RunDir(f"s3://{bucket}/runs/one")
    assert run.uri("dedup") == f"s3://{bucket}/runs/one/dedup"
    run.write_json_atomic("manifest.json", {"stages": {}})
    assert run.read_json("manifest.json") == {"stages": {}}
    assert not [p for p in s3_env.fs().find(f"{bucket}/runs/one") if ".tmp-" in p]

    out = run.new_staging("select")
    assert run.staging_uri(out).startswith(f"s3://{bucket}/runs/one/_staging/select-")
    other = s3_env.fs()  # another process's view: Spark executors and Ray workers write like this
    for rel in ("part-00000.parquet", "sub/part-00000.parquet", "selected.jsonl"):
        other.pipe(f"{out}/{rel}", b"x")
    assert sorted(run.fs.ls(out, detail=False)) == sorted(  # listed afresh, not from a cache
        [f"{out}/part-00000.parquet", f"{out}/sub", f"{out}/selected.jsonl"])
    run.commit("select", out, root_files=("selected.jsonl",))
    assert run.exists("selected.jsonl") and run.exists("select/sub/part-00000.parquet")
    assert sorted(run.fs.find(run.path("select"))) == [run.path("select/part-00000.parquet"),
                                                        run.path("select/sub/part-00000.parquet")]
    assert not run.fs.find(run.path("_staging"))

    # recommit over an existing stage: the old files go
    out2 = run.new_staging("select")
    other.pipe(f"{out2}/part-00000.parquet", b"y")
    run.commit("select", out2)
    assert run.fs.find(run.path("select")) == [run.path("select/part-00000.parquet")]
    assert run.fs.cat(run.path("select/part-00000.parquet")) == b"y"

    run.record_stage("select", {"status": "complete"})
    run.invalidate("select")
    assert run.stage_entry("select")["status"] == "invalidated"
    other.pipe(f"{run.path('_staging')}/dead-1/x", b"z")
    run.clean_staging()
    assert not run.fs.exists(run.path("_staging"))


def test_inputs_on_s3(s3_env):
    from selectllm.io import expand_inputs
    from selectllm.text.formats import iter_records

    bucket = s3_env.bucket()
    fs = s3_env.fs()
    fs.pipe(f"{bucket}/raw/a.jsonl", b'{"instruction": "Say hi.", "input": ""}\n')
    fs.pipe(f"{bucket}/raw/nested/b.jsonl.gz", gzip.compress(b'{"instruction": "Add 2 and 3.", "input": ""}\n'))
    fs.pipe(f"{bucket}/raw/README.md", b"not data")
    files = expand_inputs([f"s3://{bucket}/raw/"])
    assert [f.url for f in files] == [f"s3://{bucket}/raw/a.jsonl", f"s3://{bucket}/raw/nested/b.jsonl.gz"]
    assert all(f.version and f.size > 0 for f in files)  # ETags: a changed object is a new input
    assert [f.url for f in expand_inputs([f"s3://{bucket}/raw/*.jsonl"])] == [f"s3://{bucket}/raw/a.jsonl"]
    rows = list(iter_records(files[1].url, "auto", "alpaca", None, 1000))
    assert rows[0][2] == "Add 2 and 3." and rows[0][4] is None
    with pytest.raises(UserError, match="matches no file"):
        expand_inputs([f"s3://{bucket}/nothing/*.jsonl"])


def test_missing_credentials_and_objects_are_one_line_errors(s3_env, monkeypatch, tmp_path):
    from selectllm.io import expand_inputs
    from selectllm.launch import fetch_config

    bucket = s3_env.bucket()
    s3_env.fs().pipe(f"{bucket}/c.yaml", b"select: {budget: 3}\n")
    local = fetch_config(f"s3://{bucket}/c.yaml")
    assert open(local).read() == "select: {budget: 3}\n"
    os.unlink(local)
    with pytest.raises(UserError, match=r"cannot read config s3://.*/missing.yaml") as e:
        fetch_config(f"s3://{bucket}/missing.yaml")
    assert "\n" not in str(e.value) and s3_server.SECRET not in str(e.value)

    # no credentials anywhere (no variables, no ~/.aws, no instance metadata): one line, exit 2
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("HOME", str(tmp_path))
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(UserError, match="cannot read input") as e:
        expand_inputs([f"s3://{bucket}/c.yaml"])
    assert "\n" not in str(e.value) and "redential" in str(e.value)
    from selectllm.rundir import RunDir

    with pytest.raises(UserError, match=r"cannot open run_dir s3://.*redential"):
        RunDir(f"s3://{bucket}/runs/x")


def test_job_entry_reads_a_config_url(s3_env, tmp_path, capsys):
    """jobs/*.py --config s3://...: a missing object is exit 2 with one line."""
    from selectllm.launch import job_main

    bucket = s3_env.bucket()
    with pytest.raises(SystemExit) as e:
        job_main("report", ["--config", f"s3://{bucket}/nope.yaml"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read config") and "\n" not in err


# ----------------------------------------------------------------------------- Spark <-> fsspec
def _dedup_rows(n: int) -> list[tuple]:
    return [(f"{i:04x}", f"instruction {i}", "", f"text {i}", f"file{i % 3}.jsonl", i) for i in range(n)]


def test_fsspec_writer_matches_sparks_writer(spark, tmp_path):
    """The tasks' writer (used where Spark has no connector for the run dir) = Spark's own, row for row."""
    from selectllm.io import spark_handles, spark_read_parquet, spark_write_parquet

    ddl = "id string, instruction string, input string, text string, source string, source_row bigint"
    df = spark.createDataFrame(_dedup_rows(200), ddl).repartition(3).orderBy("id")
    spark_write_parquet(df, str(tmp_path / "native"), schemas.DEDUP, how="spark")
    n = spark_write_parquet(df, str(tmp_path / "tasks"), schemas.DEDUP, how="fsspec")
    assert n >= 1
    parts = sorted((tmp_path / "tasks").glob("*"))
    assert all(p.name.startswith("part-") and p.suffix == ".parquet" for p in parts)
    native = sorted((tmp_path / "native").glob("part-*.parquet"))
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert rows == [r for p in native for r in pq.read_table(p).to_pylist()]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)  # partition order kept
    assert all(pq.read_schema(p).equals(schemas.DEDUP, check_metadata=False) for p in parts)

    back = spark_read_parquet(spark, str(tmp_path / "tasks"), schemas.DEDUP, how="fsspec")
    assert back.count() == 200 and back.columns == schemas.DEDUP.names
    kinds = spark_read_parquet(spark, str(tmp_path / "tasks" / "part-*.parquet"), schemas.DEDUP, ["source"],
                               how="fsspec").groupBy("source").count().collect()
    assert sorted((r["source"], r["count"]) for r in kinds) == [("file0.jsonl", 67), ("file1.jsonl", 67),
                                                                ("file2.jsonl", 66)]

    # an empty result is one empty part file with the schema (as Spark's writer leaves it)
    spark_write_parquet(df.limit(0), str(tmp_path / "empty"), schemas.DEDUP, how="fsspec")
    (only,) = (tmp_path / "empty").glob("*")
    assert pq.read_table(only).num_rows == 0 and pq.read_schema(only).equals(schemas.DEDUP, check_metadata=False)
    assert spark_read_parquet(spark, str(tmp_path / "nothing-here"), schemas.DEDUP, how="fsspec").count() == 0

    # which writer `auto` picks: Spark's for paths it has a Hadoop filesystem for
    assert spark_handles(spark, str(tmp_path)) and spark_handles(spark, "hdfs://namenode:8020/x")
    assert not spark_handles(spark, "memory://x")


def test_this_pyspark_has_no_s3a(spark):
    """Why the fsspec writer exists: pip's pyspark ships no hadoop-aws, so S3A is not testable here."""
    from pathlib import Path

    import pyspark

    from selectllm.io import spark_handles

    jars = {p.name for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    if any(j.startswith("hadoop-aws") for j in jars):  # pragma: no cover - an image with S3A
        assert spark_handles(spark, "s3://bucket/x")
    else:
        assert not spark_handles(spark, "s3://bucket/x") and not spark_handles(spark, "s3a://bucket/x")
