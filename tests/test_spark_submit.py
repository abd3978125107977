"""`spark-submit jobs/dedup.py` (the spark-submit that pyspark ships) in `local` and `local-cluster` modes.

`local[2]` reads and writes a local run dir.  `local-cluster[2,1,1024]` (two executor JVMs, so
the Python tasks run in other processes than the driver, as on a cluster) reads its config,
its inputs and writes its run dir on S3 (moto on 127.0.0.1): inputs through fsspec in the tasks,
outputs through the tasks' fsspec writer because this pyspark has no S3A (hadoop-aws) jar.  Both
must give the same tables.  Under spark-submit its --master wins over the config's.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import s3_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAST_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # short jobs: far less JIT work on 2 cores


def _corpus() -> list[bytes]:
    """60 lines of the bundled sample, plus a planted duplicate and a bad line."""
    lines = (ROOT / "examples" / "sample.jsonl").read_bytes().splitlines()[:60]
    return lines[:40] + [lines[3], b"{not json"] + lines[40:]


def _spark_submit(master: str, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    env = dict(env)
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "SPARK_LOCAL_IP": "127.0.0.1",
                "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable})
    env.pop("PYSPARK_GATEWAY_PORT", None)
    cmd = [str(BIN / "spark-submit"), "--master", master, "--conf", "spark.ui.enabled=false",
           "--conf", "spark.sql.shuffle.partitions=2", "--driver-java-options", FAST_JVM,
           "--conf", f"spark.executor.extraJavaOptions={FAST_JVM}", "jobs/dedup.py", *args]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text(errors="replace")
    assert proc.returncode == 0, out[-4000:]
    return out


def _rows(files: list[str], opener) -> list[dict]:
    rows = []
    for f in sorted(files):
        with opener(f) as fh:
            rows += pq.read_table(io.BytesIO(fh.read())).to_pylist()
    return rows


def _tables(listing: list[str], opener) -> dict:
    """kept (top-level part files), quarantine/, duplicates.parquet/ rows; ``listing``: paths under dedup/."""
    return {
        "kept": _rows([p for p in listing if "/" not in p and p.startswith("part-")], opener),
        "quarantine": _rows([p for p in listing if p.startswith("quarantine/")], opener),
        "duplicates": _rows([p for p in listing if p.startswith("duplicates.parquet/")], opener),
    }


def _annotated(history: str, lines: list[bytes], rows: tuple[int, ...], where: Path) -> list[str]:
    """A programme history holding ``rows`` of the corpus as annotated (``selectllm history import``)."""
    from selectllm.history import History, import_statuses
    from selectllm.text.normalize import content_id

    ids = [content_id(r["instruction"], r.get("input", "")) for r in (json.loads(lines[i]) for i in rows)]
    where.write_text("".join(json.dumps({"id": i, "status": "annotated"}) + "\n" for i in ids))
    import_statuses(History(history), str(where))
    return ids


def test_local_and_local_cluster_on_s3_agree(s3_env, tmp_path):
    """... with a programme history each (local, and on S3 for the cluster): the rows it holds are
    dropped as ``seen`` by both, and the history's lock is released when the job ends."""
    s3 = s3_env  # this process a client too: it writes the S3 history
    lines = _corpus()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b"\n".join(lines[:30]) + b"\n")
    (tmp_path / "in" / "b.jsonl").write_bytes(b"\n".join(lines[30:]) + b"\n")
    bucket = s3.bucket()
    fs = s3.fs()
    seen = _annotated(str(tmp_path / "hist"), lines, (5, 6), tmp_path / "annotated.jsonl")
    assert _annotated(f"s3://{bucket}/hist", lines, (5, 6), tmp_path / "annotated.jsonl") == seen
    cfg = {"input": {"paths": [str(tmp_path / "in")]}, "spark": {"master": "local[1]"},
           "history": str(tmp_path / "hist")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))

    fs.pipe(f"{bucket}/in/a.jsonl", (tmp_path / "in" / "a.jsonl").read_bytes())
    fs.pipe(f"{bucket}/in/b.jsonl", (tmp_path / "in" / "b.jsonl").read_bytes())
    cfg_s3 = {"run_dir": f"s3://{bucket}/run", "input": {"paths": [f"s3://{bucket}/in/*.jsonl"]},
              "history": f"s3://{bucket}/hist"}
    fs.pipe(f"{bucket}/c.yaml", yaml.safe_dump(cfg_s3).encode())

    # both at once: local[2] on local files; local-cluster (executors are separate JVMs) with its
    # config, inputs and run dir on S3
    local_run = tmp_path / "run"
    local = _spark_submit("local[2]", ["--config", str(tmp_path / "c.yaml"), "--run-dir", str(local_run)],
                          dict(os.environ), tmp_path / "local.log")
    remote = _spark_submit("local-cluster[2,1,1024]", ["--config", f"s3://{bucket}/c.yaml"],
                           s3_server.client_env(s3), tmp_path / "cluster.log")
    _finish(local, tmp_path / "local.log")
    out = _finish(remote, tmp_path / "cluster.log")

    manifest = json.loads((local_run / "manifest.json").read_text())
    assert manifest["stages"]["dedup"]["status"] == "complete"
    stats = json.loads((local_run / "dedup" / "stats.json").read_text())
    assert stats["read"] == 62 and stats["files"] == 2
    assert stats["exact_duplicates"] >= 1 and stats["quarantined"]["malformed"] >= 1
    assert stats["seen_duplicates"] == 2  # the history's annotated rows, not selectable again
    assert not (tmp_path / "hist" / "lock.json").exists() and not fs.exists(f"{bucket}/hist/lock.json")
    assert not list((local_run / "dedup").glob("**/_SUCCESS"))

    assert s3_server.SECRET not in out
    s3_stats = json.loads(fs.cat(f"{bucket}/run/dedup/stats.json"))

    def counts(st: dict) -> dict:  # what the two runs must agree on: every count and join decision, no timings
        near = {k: v for k, v in st.get("near", {}).items() if "seconds" not in k and k != "broadcast"}
        # the join sides' byte sizes follow the `source` paths (local vs s3://), the decisions must not
        near["broadcast"] = {j: d["broadcast"] for j, d in st.get("near", {}).get("broadcast", {}).get("joins", {}).items()}
        return {**{k: v for k, v in st.items() if k not in ("files", "near")}, "near": near}

    assert counts(s3_stats) == counts(stats)
    assert json.loads(fs.cat(f"{bucket}/run/manifest.json"))["stages"]["dedup"]["status"] == "complete"
    assert s3_server.SECRET not in fs.cat(f"{bucket}/run/config.yaml").decode()

    # the same rows in the same order; sources differ only by their URL
    dedup = local_run / "dedup"
    local = _tables([str(p.relative_to(dedup)) for p in dedup.rglob("*.parquet")],
                    lambda f: open(dedup / f, "rb"))
    remote = _tables([p.split("/dedup/", 1)[1] for p in fs.find(f"{bucket}/run/dedup") if p.endswith(".parquet")],
                     lambda f: fs.open(f"{bucket}/run/dedup/{f}", "rb"))
    assert len(local["kept"]) == stats["kept"]
    assert len(local["duplicates"]) == stats["exact_duplicates"] + stats["near_duplicates"] + stats["seen_duplicates"]
    assert sorted(r["id"] for r in remote["duplicates"] if r["kind"] == "seen") == sorted(seen)
    strip = str(tmp_path / "in") + "/"
    for name in ("kept", "quarantine", "duplicates"):
        a = [{**row, "source": row["source"].replace(strip, "")} for row in local[name]]
        b = [{**row, "source": row["source"].replace(f"s3://{bucket}/in/", "")} for row in remote[name]]
        assert a == b, name
