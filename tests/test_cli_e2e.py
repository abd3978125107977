"""The whole CLI, end to end: every stage on a small corpus, resume, --force, kills, and errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from selectllm.cli import main

from helpers import cli, config, small_corpus

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample.jsonl"
SELECTLLM = [sys.executable, "-m", "selectllm.cli"]


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@pytest.mark.slow
def test_run_resume_force(tmp_path, spark, ray_local, capsys):
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    cfg = config(tmp_path, corpus)
    run = tmp_path / "run"
    cli("run", str(cfg))
    out = capsys.readouterr().out
    assert f"selected.jsonl: {run / 'selected.jsonl'}" in out and "report.html:" in out
    tail = out[out.index("report.html:"):].splitlines()  # the LLM's health closes the run's output
    assert any(line.startswith("LLM health: decided ") for line in tail)

    m = manifest(run)
    assert [s for s in ("dedup", "embed", "cluster", "select", "report") if m["stages"][s]["status"] == "complete"] \
        == ["dedup", "embed", "cluster", "select", "report"]
    used = m["stages"]["select"]["resources"]  # what its declaration sized: the part tasks and the LLM pool
    assert (used["engine"], used["task_cpus"], used["llm_cpus_per_actor"]) == ("ray", 1, 0) and used["llm_actors"] >= 1
    stats = json.loads((run / "dedup" / "stats.json").read_text())
    assert stats["read"] == stats["kept"] + stats["exact_duplicates"] + stats["near_duplicates"] + stats["quarantined_total"]
    assert {r: n for r, n in stats["quarantined"].items() if n} == {  # every other reason: 0
        "malformed": 2, "empty": 1, "too_long": 1, "bad_encoding": 1, "missing_field": 1}
    assert stats["exact_duplicates"] >= 1

    selected = [json.loads(line) for line in (run / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == 12 and len({s["id"] for s in selected}) == 12
    assert list(selected[0]) == ["id", "instruction", "input", "source", "cluster_id", "strategy", "source_row", "status"]
    corpus_lines = corpus.read_bytes().split(b"\n")
    for s in selected:  # source_row is the record's line; its text comes back unchanged
        rec = json.loads(corpus_lines[s["source_row"]])
        assert s["source"] == str(corpus) and (s["instruction"], s["input"]) == (rec["instruction"], rec.get("input", ""))
    decisions = pq.read_table(run / "select" / "decisions.parquet").to_pylist()
    assert len(decisions) == 12 and all(d["status"] == "ok" for d in decisions)
    by = {c: who for d in decisions for c, who in zip(d["chosen_ids"], d["chosen_by"])}
    assert [s["status"] for s in selected] == [by[s["id"]] for s in selected] and "llm" in by.values()
    for d in decisions:
        assert set(d["chosen_ids"]) <= set(d["candidate_ids"])
    requests = (run / "select" / "requests.jsonl").read_text().splitlines()
    asked = [d for d in decisions if "no LLM call" not in d["reason"]]
    assert len(requests) == len(asked) >= 8 and all(d["input_tokens"] > 0 for d in asked)
    assert "sk-" not in (run / "config.yaml").read_text()
    html = (run / "report.html").read_text()
    assert 'id="plot-funnel"' in html and 'id="plot-clusters"' in html
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["selection"]["selected"] == 12

    # same command again: everything skipped, byte-identical selection
    before = (run / "selected.jsonl").read_bytes()
    tokens = {s: e["output_token"] for s, e in manifest(run)["stages"].items()}
    cli("run", str(cfg))
    assert (run / "selected.jsonl").read_bytes() == before
    assert {s: e["output_token"] for s, e in manifest(run)["stages"].items()} == tokens

    # --force select recomputes select and report only; answers come from the cache
    cli("run", str(cfg), "--force", "select")
    after = {s: e["output_token"] for s, e in manifest(run)["stages"].items()}
    assert sorted(s for s in tokens if tokens[s] != after[s]) == ["report", "select"]
    assert (run / "selected.jsonl").read_bytes() == before
    log = [json.loads(x) for x in (run / "select" / "requests.jsonl").read_text().splitlines()]
    assert all(r["cached"] for r in log)

    # a changed setting reruns what depends on it
    cli("run", str(cfg), "--set", "select.strategy=random")
    after2 = manifest(run)["stages"]
    assert after2["embed"]["output_token"] == after["embed"]
    assert after2["select"]["output_token"] != after["select"]
    assert all(json.loads(x)["strategy"] == "random" for x in (run / "selected.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_killed_stage_is_never_complete(tmp_path, spark, ray_local, monkeypatch):
    """A failure inside a stage leaves it incomplete and no staging leftovers count; a rerun finishes."""
    corpus = small_corpus(tmp_path / "corpus.jsonl", good=60)
    cfg = config(tmp_path, corpus, budget=5)
    run = tmp_path / "run"
    import selectllm.select.stage as select_stage

    real = select_stage.write_outputs

    def dies_half_way(ctx, selected, decisions):
        (Path(ctx.out) / "selected.jsonl").write_text("half\n")
        raise KeyboardInterrupt  # what a kill looks like from inside

    monkeypatch.setattr(select_stage, "write_outputs", dies_half_way)
    with pytest.raises(SystemExit):
        main(["run", str(cfg)])
    m = manifest(run)
    assert m["stages"]["embed"]["status"] == "complete"
    assert "select" not in m["stages"] or m["stages"]["select"]["status"] != "complete"
    assert not (run / "selected.jsonl").exists()
    monkeypatch.setattr(select_stage, "write_outputs", real)
    cli("run", str(cfg))
    assert manifest(run)["stages"]["select"]["status"] == "complete"
    assert len((run / "selected.jsonl").read_text().splitlines()) == 5


def _run_cli(*args, env_extra=None, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(SELECTLLM + list(args), capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.parametrize("sets,needle", [
    (["select.budgett=3"], "unknown key 'select.budgett'"),
    (["llm.rpm=lots"], "llm.rpm"),
    (["input.paths=[/nonexistent/file.jsonl]"], "matches no file"),
])
@pytest.mark.subprocess
def test_cli_errors_are_one_line(tmp_path, sets, needle):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"instruction": "a"}\n')
    cfg = config(tmp_path, corpus)
    args = ["run", str(cfg)]
    for s in sets:
        args += ["--set", s]
    r = _run_cli(*args)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines[-1].startswith("error: ") and needle in lines[-1]
    assert "Traceback" not in r.stderr


SPARK_WORKER_ERROR = """[PYTHON_EXCEPTION] An exception was thrown from the Python worker: Traceback (most recent call last):
  File "/x/selectllm/dedup/stage.py", line 134, in read_files
    redact = _redact(privacy, keep) if privacy is not None else None
             ^^^^^^^^^^^^^^^^^^^^^^
  File "/x/selectllm/privacy/detect.py", line 87, in _import_presidio
    for m in hidden:
ModuleNotFoundError: No module named 'presidio_analyzer'
 SQLSTATE: 38000"""
RAY_WORKER_ERROR = """\x1b[36mray::f()\x1b[39m (pid=6475, ip=192.0.2.2)
  File "<string>", line 6, in f
ModuleNotFoundError: No module named 'nothere_mod'"""


@pytest.mark.parametrize("text,line", [
    (SPARK_WORKER_ERROR, "ModuleNotFoundError: No module named 'presidio_analyzer'"),
    (RAY_WORKER_ERROR, "ModuleNotFoundError: No module named 'nothere_mod'"),
    ("Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n"
     "selectllm.errors.UserError: dedup.near.bands must be between 1 and num_perm (128)\n",
     "dedup.near.bands must be between 1 and num_perm (128)"),
    ("An error occurred while calling o701.localCheckpoint.", None),
    ("An error occurred while calling o9.collect.\n: org.apache.spark.SparkException: Job aborted due to stage "
     "failure: ... org.apache.spark.api.python.PythonException: Traceback (most recent call last):\n"
     "  File \"/x/selectllm/dedup/near.py\", line 120, in sign\n    raise ValueError('bad')\nValueError: bad\n"
     "\n\tat org.apache.spark.api.python.BasePythonRunner.handlePythonException(PythonRunner.scala:1097)\n"
     "org.apache.spark.SparkException: Job 3 cancelled\n", "ValueError: bad"),
])
def test_a_worker_exception_is_named_in_one_line(monkeypatch, capsys, text, line):
    """An exception inside a Spark or Ray worker reaches the driver wrapped (PythonException,
    RayTaskError): the one error line names the worker's exception, not only the wrapper."""
    import selectllm.cli as cli_module

    class PythonException(Exception):
        pass

    def boom(**_):
        raise PythonException(text)

    monkeypatch.setattr(cli_module, "app", boom)
    with pytest.raises(SystemExit) as exit_:
        main(["dedup", "x.yaml"])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert exit_.value.code == 1 and len(err) == 1
    if line is None:
        assert err[0].startswith("error: PythonException: An error occurred while calling o701")
    else:
        assert err[0] == f"error: {line} (in a PythonException; run with --debug for the traceback)"


@pytest.mark.subprocess
def test_missing_config_file_and_credentials(tmp_path):
    r = _run_cli("run", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "config file not found" in r.stderr and "Traceback" not in r.stderr
    from selectllm.config import load_config
    from selectllm.errors import UserError
    from selectllm.llm.records import resolve_api_key

    cfg = load_config(None, ["llm.provider=openai", "llm.api_key_env=SELECTLLM_TEST_NO_SUCH_KEY"])
    with pytest.raises(UserError, match="SELECTLLM_TEST_NO_SUCH_KEY"):
        resolve_api_key(cfg.llm)


# `selectllm embed` whose actors wait for a gate file after each unit (the subclass travels to the
# Ray workers by value, being defined in __main__)
GATED_EMBED = """
import os, sys, time
from selectllm.embed import stage
from selectllm.cli import main

class GatedWorker(stage.EmbedWorker):
    def embed(self, unit):
        rows = super().embed(unit)
        deadline = time.time() + 300
        while not os.path.exists(sys.argv[2]) and time.time() < deadline:
            time.sleep(0.05)
        return rows

stage.EmbedWorker = GatedWorker
main(["embed", sys.argv[1]])
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "static"])
def test_real_kill_during_embed_then_resume(tmp_path, spark, ray_local, backend):
    """SIGKILL the whole CLI process group while it embeds; the rerun embeds only what is missing.
    The units and their files are the same whatever the backend: the default (onnx) and the fastest
    (static) are killed here; torch's resume is test_embed's (a torch actor's start-up alone, its
    imports and model, costs a minute on 2 cores)."""
    corpus = small_corpus(tmp_path / "corpus.jsonl", good=700)
    # units are planned from the input alone (at least 256 rows each): the 700 rows make 3 output files
    cfg = config(tmp_path, corpus, budget=5, embed={"backend": backend}, ray={"num_cpus": 2},
                 spark={"master": "local[1]"})
    run = tmp_path / "run"
    cli("dedup", str(cfg))  # in-process, shared Spark: the subprocess below only embeds
    # every actor holds after its first output file until the gate file exists, which the test never
    # creates: the kill lands between two files, however fast the backend
    gate = tmp_path / "gate"
    proc = subprocess.Popen([sys.executable, "-c", GATED_EMBED, str(cfg), str(gate)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            start_new_session=True)
    deadline = time.time() + 240
    work = None
    while time.time() < deadline and proc.poll() is None and work is None:
        for f in (run / "_work").glob("embed-*/**/*.parquet") if (run / "_work").exists() else []:
            try:
                pq.read_metadata(f)  # a finished file (a half-written one has no footer yet)
                work = f.parent
                break
            except Exception:
                pass
        time.sleep(0.1)
    assert proc.poll() is None, "embedding finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert work is not None, "embedding never wrote a file before the deadline"
    m = manifest(run)
    assert m["stages"].get("embed", {}).get("status") != "complete"
    cli("embed", str(cfg))
    counts = manifest(run)["stages"]["embed"]["counts"]
    kept = json.loads((run / "dedup" / "stats.json").read_text())["kept"]
    ids = pq.read_table(run / "embed", columns=["id"]).column("id").to_pylist()
    assert len(ids) == kept == counts["rows"] and len(set(ids)) == kept
    assert counts["resumed_rows"] > 0 and counts["backend"] == backend
