"""Quiet by default: the terminal shows the project's lines; Spark's and Ray's go to run_dir/logs/."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from selectllm import logs

from helpers import config, small_corpus


SELECTLLM = [sys.executable, "-m", "selectllm.cli"]
# what engine output looks like on a terminal: log4j, Spark's console progress, Ray's log lines,
# forwarded worker output, C++ log lines, links into engine documentation and issue trackers
NOISE = re.compile(r"log4j|\bWARN\b|WARNING|\bINFO\b|\[Stage \d+|\(pid=|core_worker|raylet|gcs_server|"
                   r"https?://|Traceback|it/s\]")


def test_warnings_that_matter_are_said_in_the_projects_words():
    # lines as Ray and Spark print them (ray/_private/services.py, log4j's format)
    shm = ("2026-12-02 16:04:10,123\tWARNING services.py:2247 -- WARNING: The object store is using /tmp "
           "instead of /dev/shm because /dev/shm has only 67108864 bytes available. This will harm performance!")
    oom = "26/12/02 16:05:01 ERROR Executor: Exception in task 0.0 in stage 3.0\njava.lang.OutOfMemoryError: Java heap space"
    lost = "26/12/02 16:05:02 WARN TaskSetManager: Lost task 1.0 in stage 4.0 (TID 9) (192.0.2.2 executor driver)"
    assert logs.findings(shm) == [logs.PATTERNS[0][1]] and "/dev/shm" in logs.findings(shm)[0]
    assert [m.split(":")[0] for m in logs.findings(oom + "\n" + lost)] == ["spark", "spark"]
    assert logs.findings("26/12/02 16:01:05 WARN Utils: Your hostname, vm, resolves to a loopback address") == []


def test_engine_output_goes_to_the_log_and_findings_are_shown_once(tmp_path, capfd):
    with logs.engine_output(str(tmp_path / "run")):
        assert logs.quiet() and logs.folder() == str(tmp_path / "run" / "logs")
        os.write(2, b"26/12/02 WARN TaskSetManager: Lost task 1.0 in stage 4.0\n")  # a child's stderr, say
        os.write(1, b"engine chatter on stdout\n")
        assert logs.check() == ["spark: tasks failed and were retried"]
        os.write(2, b"26/12/02 WARN TaskSetManager: Lost task 2.0 in stage 4.0\n")
        assert logs.check() == []  # told once
        from selectllm.console import console

        console.print("▶ a project line")
    out, err = capfd.readouterr()
    assert "engine chatter" not in out and "Lost task" not in err
    assert "▶ a project line" in err and "warning: spark: tasks failed and were retried" in err
    log = (tmp_path / "run" / "logs" / logs.ENGINE_LOG).read_text()
    assert "engine chatter on stdout" in log and log.count("Lost task") == 2
    assert logs.mode() is None and not logs.quiet()  # library use afterwards: nothing redirected


def test_an_object_store_run_dir_gets_its_logs_when_the_command_ends(s3_env, capfd):
    bucket = s3_env.bucket()
    with logs.engine_output(f"s3://{bucket}/runs/q"):
        local = logs.folder()
        assert os.path.isdir(local)  # a local temporary folder while the command runs
        os.write(2, b"an engine line\n")
    assert b"an engine line" in s3_env.fs().cat_file(f"{bucket}/runs/q/logs/{logs.ENGINE_LOG}")
    assert not os.path.exists(local)


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_terminal_has_the_projects_lines_and_the_engines_log_to_the_run_dir(tmp_path):
    corpus = small_corpus(tmp_path / "corpus.jsonl", good=60)
    cfg = config(tmp_path, corpus, budget=5, ray={"num_cpus": 2}, spark={"master": "local[2]"})
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SELECTLLM_VERBOSE": ""}
    r = subprocess.run(SELECTLLM + ["run", str(cfg)], capture_output=True, text=True, env=env, timeout=900)
    terminal = r.stdout + r.stderr
    print(terminal)  # the demo-like output, in the test log
    assert r.returncode == 0, terminal
    for stage in ("dedup", "embed", "cluster", "select", "report"):
        assert re.search(rf"^✔ {stage} in [\d.]+s \(", r.stderr, re.M), f"no line for stage {stage}"
    noise = [line for line in terminal.splitlines() if NOISE.search(line)]
    assert noise == [], noise
    assert f"engine logs: {run / 'logs'}/" in r.stdout
    folder = run / "logs"
    assert (folder / logs.ENGINE_LOG).stat().st_size > 0 and (folder / logs.SPARK_LOG).exists()
    assert any(p.name.startswith("raylet") for p in (folder / logs.RAY_LOGS).rglob("*"))  # the Ray session's logs

    # --verbose: the engines' own output is on the terminal again (Spark's start-up lines here)
    v = subprocess.run(SELECTLLM + ["dedup", str(cfg), "--force", "--verbose"], capture_output=True, text=True,
                       env=env, timeout=900)
    assert v.returncode == 0, v.stderr
    assert re.search(r"log4j|WARN", v.stderr) and "engine logs:" not in v.stdout
