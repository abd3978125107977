"""`ray job submit` against a real Ray head on loopback, with inputs, config and run dir on S3.

The test starts its own head (`ray start --head --block`, own ports, own --temp-dir, its own
auth token passed through RAY_AUTH_TOKEN so nobody's ~/.ray is touched), submits the jobs the
README shows through the Jobs API (`--working-dir .` uploads this repository), and stops the head
by signalling its process group.  The S3 server is moto on 127.0.0.1 (tests/s3_server.py); the
head gets its endpoint and dummy credentials from the environment, as a cluster node gets them
from its provider chain.  The dedup stage runs on Spark local inside the job driver.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import s3_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNTIME_ENV = {
    # what the README's command passes: no secrets (a runtime env is stored with the job)
    "excludes": [".git", "runs", "benchmarks", "**/__pycache__"],
    "env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "SPARK_LOCAL_IP": "127.0.0.1"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    address: str  # the Jobs API (dashboard) URL
    env: dict  # a client's environment: token auth on, this head's token
    token: str
    log: Path


@pytest.fixture(scope="module")
def ray_head(s3):
    tmp = Path(tempfile.mkdtemp(prefix="slrh", dir="/tmp"))  # short: Ray's socket paths must fit
    token = secrets.token_hex(32)
    env = s3_server.client_env(s3)
    env.pop("RAY_ADDRESS", None)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` in a job = this venv's
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "NO_PROXY": "127.0.0.1,localhost",
        # a one-node head: Ray then keeps every address on 127.0.0.1 (it otherwise swaps the
        # loopback for the machine's routable IP so that other nodes could join)
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    })
    port, dash, client, agent = (_free_port() for _ in range(4))
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", "--min-worker-port=0", "--max-worker-port=0",
           "--num-cpus=2", "--num-gpus=0", "--object-store-memory=400000000",
           f"--temp-dir={tmp}", "--disable-usage-stats"]
    log = tmp / "head.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp,
                                start_new_session=True)
    head = Head(address=f"http://127.0.0.1:{dash}", env=env, token=token, log=log)
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited {proc.returncode}: {log.read_text()[-3000:]}")
            r = _ray(head, "job", "list", "--address", head.address, timeout=60)
            if r.returncode == 0:
                break
            if time.time() > deadline:
                pytest.fail(f"Ray head's Jobs API not up: {r.stdout[-2000:]}\n{log.read_text()[-2000:]}")
            time.sleep(2)
        yield head
    finally:
        _stop_group(proc, tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _stop_group(proc: subprocess.Popen, tmp: Path) -> None:
    """Stop the head: its process group (everything `ray start --block` started), then any
    straggler whose command line names this head's temp dir.  Never by process name."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(tmp).encode() in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def _ray(head: Head, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env or head.env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _submit(head: Head, *entrypoint: str) -> subprocess.CompletedProcess:
    """The README's command: `ray job submit --working-dir . --runtime-env-json ... -- python jobs/...`."""
    return _ray(head, "job", "submit", "--address", head.address,
                "--submission-id", f"selectllm-test-{uuid.uuid4().hex[:8]}",
                "--working-dir", ".", "--runtime-env-json", json.dumps(RUNTIME_ENV),
                "--", *entrypoint, timeout=540)


@pytest.fixture(scope="module")
def s3_run(s3):
    """A tiny corpus and its config, both on S3."""
    bucket = s3.bucket()
    fs = s3.fs()
    lines = (ROOT / "examples" / "sample.jsonl").read_bytes().splitlines()[:60]
    fs.pipe(f"{bucket}/corpus/part-0.jsonl", b"\n".join(lines[:40]) + b"\n")
    fs.pipe(f"{bucket}/corpus/part-1.jsonl", b"\n".join(lines[40:]) + b"\n")
    cfg = {
        "run_dir": f"s3://{bucket}/runs/r1",
        "history": f"s3://{bucket}/programme",  # the programme's history on object storage too
        "input": {"paths": [f"s3://{bucket}/corpus/"], "format": "jsonl"},
        "embed": {"batch_size": 32},
        "select": {"budget": 5, "candidates_per_prompt": 4},
        "llm": {"provider": "simulator", "rpm": 100000, "concurrency": 4},
        "spark": {"master": "local[1]", "conf": {"spark.sql.shuffle.partitions": "2",
                                                 # a short job: far less JIT work on 2 cores
                                                 "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}},
    }
    fs.pipe(f"{bucket}/config.yaml", yaml.safe_dump(cfg).encode())
    return bucket, f"s3://{bucket}/config.yaml"


@pytest.mark.slow
def test_jobs_api_needs_the_token(ray_head, tmp_path):
    env = {k: v for k, v in ray_head.env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    r = _ray(ray_head, "job", "list", "--address", ray_head.address, env=env, timeout=120)
    assert r.returncode != 0
    assert "uthentication" in r.stdout + r.stderr


@pytest.mark.slow
def test_pipeline_then_stage_job_on_s3(ray_head, s3, s3_run):
    bucket, config_url = s3_run
    fs = s3.fs()
    t0 = time.perf_counter()
    r = _submit(ray_head, "python", "jobs/pipeline.py", "--config", config_url)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "succeeded" in out.lower(), out[-3000:]
    pipeline_s = time.perf_counter() - t0

    run = f"{bucket}/runs/r1"
    manifest = json.loads(fs.cat(f"{run}/manifest.json"))
    for stage in ("dedup", "embed", "cluster", "select", "report"):
        assert manifest["stages"][stage]["status"] == "complete", manifest["stages"].get(stage)
    stats = json.loads(fs.cat(f"{run}/dedup/stats.json"))
    assert stats["read"] == 60 and stats["files"] == 2
    assert stats["read"] == (stats["kept"] + stats["exact_duplicates"] + stats["near_duplicates"]
                             + stats["quarantined_total"])
    assert manifest["stages"]["embed"]["counts"]["rows"] == stats["kept"]
    selected = [json.loads(x) for x in fs.cat(f"{run}/selected.jsonl").decode().splitlines()]
    assert len(selected) == 5
    assert fs.find(f"{run}/embed") and fs.exists(f"{run}/report.html")
    # the run joined its history on S3 once (ids, selection, MinHash rows), the lock released
    index = json.loads(fs.cat(f"{bucket}/programme/history.json"))
    assert [c["kind"] for c in index["commits"]] == ["run"] and stats["seen_duplicates"] == 0
    assert set(index["commits"][0]["files"]) == {"seen", "selected", "minhash"}
    assert index["commits"][0]["summary"]["selected"] == 5 and not fs.exists(f"{bucket}/programme/lock.json")
    assert not fs.exists(f"{run}/_staging") or not fs.find(f"{run}/_staging")

    # one stage alone, as its own job, on the same run dir
    before = manifest["stages"]["report"]["finished_at"], manifest["stages"]["report"]["output_token"]
    r2 = _submit(ray_head, "python", "jobs/report.py", "--config", config_url, "--force")
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-4000:]
    after = json.loads(fs.cat(f"{run}/manifest.json"))["stages"]["report"]
    assert after["status"] == "complete" and after["output_token"] != before[1]
    assert json.loads(fs.cat(f"{run}/manifest.json"))["stages"]["embed"] == manifest["stages"]["embed"]
    assert json.loads(fs.cat(f"{bucket}/programme/history.json"))["commits"] == index["commits"]  # once

    # no secret anywhere: job output, head logs, run dir
    logs = out + r2.stdout + r2.stderr + ray_head.log.read_text(errors="replace")
    assert s3_server.SECRET not in logs and ray_head.token not in logs
    for path in fs.find(run):
        if path.endswith((".json", ".yaml", ".jsonl", ".html")):
            text = fs.cat(path).decode("utf-8", "replace")
            assert s3_server.SECRET not in text and ray_head.token not in text, path
    print(f"pipeline job {pipeline_s:.0f}s")


def test_job_options_map_to_the_cli(monkeypatch, tmp_path):
    """jobs/*.py take the CLI's options: --force STAGE for the pipeline, a bare --force for a stage."""
    import selectllm.cli
    from selectllm.launch import job_main

    seen = []
    monkeypatch.setattr(selectllm.cli, "main", lambda args: seen.append(args))
    cfg = str(tmp_path / "c.yaml")
    job_main(None, ["--config", cfg, "--force", "embed", "--set", "select.budget=3", "--run-dir", "s3://b/r"])
    job_main("report", ["--config", f"file://{cfg}", "--force", "--debug"])
    job_main("dedup", ["--config", cfg])
    assert seen == [["run", cfg, "--run-dir", "s3://b/r", "--set", "select.budget=3", "--force", "embed"],
                    ["report", cfg, "--force", "--debug"],
                    ["dedup", cfg]]
