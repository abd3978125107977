"""The stage contract: a new stage is one declaration; inputs resolve, schemas are checked at commit."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from selectllm import pipeline
from selectllm.contract import Output, Resources, Settings, Stage
from selectllm.rundir import RunDir
from selectllm.schemas import DEDUP

from helpers import make_pool_run, pool_config, stage_ctx


def _short_filter(ctx):  # the README's example stage
    rows = ctx.input("rows").read()
    kept = rows.filter(pc.greater_equal(pc.utf8_length(rows["text"]), 20))
    with ctx.run.fs.open(ctx.out_path("part-00000.parquet"), "wb") as f:
        pq.write_table(kept, f)
    return {"kept": kept.num_rows, "dropped": rows.num_rows - kept.num_rows}


SHORT = Stage(name="shortfilter", run=_short_filter, inputs={"rows": "dedup.rows"},
              outputs=(Output("rows", "", schema=DEDUP),), settings=Settings(version="v1"),
              resources=Resources(engine="local"))


def test_a_new_stage_is_one_declaration(tmp_path, monkeypatch):
    make_pool_run(tmp_path)
    monkeypatch.setitem(pipeline.BY_NAME, "shortfilter", SHORT)
    cfg, run = pool_config(tmp_path), RunDir(str(tmp_path))
    entry = pipeline.run_stage(cfg, run, SHORT)
    rows = pq.read_table(tmp_path / "dedup" / "part-00000.parquet")
    want = sum(1 for t in rows.column("text").to_pylist() if len(t) >= 20)
    assert 0 < want < rows.num_rows and entry["counts"] == {"kept": want, "dropped": rows.num_rows - want}
    assert pq.read_table(tmp_path / "shortfilter" / "part-00000.parquet").num_rows == want
    assert run.stage_entry("shortfilter")["resources"] == {"engine": "local"}
    # resume: same inputs and settings -> skipped (same entry); a new dedup commit -> rerun
    assert pipeline.run_stage(cfg, run, SHORT)["output_token"] == entry["output_token"]
    run.record_stage("dedup", {**run.stage_entry("dedup"), "output_token": "new-commit"})
    assert pipeline.run_stage(cfg, run, SHORT)["output_token"] != entry["output_token"]


def test_an_output_that_breaks_its_schema_is_never_committed(tmp_path, monkeypatch):
    make_pool_run(tmp_path)

    def bad(ctx):
        with ctx.run.fs.open(ctx.out_path("part-00000.parquet"), "wb") as f:
            pq.write_table(pa.table({"id": ["a"], "text": [1]}), f)  # no instruction, text not a string
        return {}

    stage = Stage(name="bad", run=bad, inputs={"rows": "dedup.rows"}, outputs=(Output("rows", "", schema=DEDUP),))
    monkeypatch.setitem(pipeline.BY_NAME, "bad", stage)
    cfg, run = pool_config(tmp_path), RunDir(str(tmp_path))
    with pytest.raises(RuntimeError, match="lacks column 'instruction'"):
        pipeline.run_stage(cfg, run, stage)
    assert not (tmp_path / "bad").exists() and (run.stage_entry("bad") or {}).get("status") != "complete"


def test_undeclared_inputs_are_refused(tmp_path):
    make_pool_run(tmp_path)
    ctx = stage_ctx(tmp_path, "embed", cfg=pool_config(tmp_path), out=str(tmp_path / "o"))
    assert ctx.input("rows").files()[0].endswith("dedup/part-00000.parquet")
    with pytest.raises(KeyError, match="declares no input 'assignments'"):
        ctx.input("assignments")


def test_every_declared_input_names_an_earlier_output():
    names = [s.name for s in pipeline.STAGES]
    for s in pipeline.STAGES + pipeline.ON_DEMAND:
        for ref in s.inputs.values():
            up, out = pipeline.resolve(ref)
            assert out in pipeline.BY_NAME[up].outputs
            if s in pipeline.STAGES:
                assert names.index(up) < names.index(s.name)


def test_an_optional_input_is_never_waited_for_and_counts_once_committed(tmp_path):
    from selectllm.config import load_config

    cfg, run = load_config(None, []), RunDir(str(tmp_path))
    report = pipeline.BY_NAME["report"]
    for s in report.upstream:
        run.record_stage(s, {"status": "complete", "output_token": f"{s}-1"})
    before = pipeline.input_fingerprint(cfg, run, report)  # compare never ran: no error
    run.record_stage("compare", {"status": "invalidated", "output_token": "compare-1"})
    assert pipeline.input_fingerprint(cfg, run, report) == before
    run.record_stage("compare", {"status": "complete", "output_token": "compare-1"})
    assert pipeline.input_fingerprint(cfg, run, report) != before  # a new comparison reruns the report
    ctx = stage_ctx(run, "report", cfg=cfg, out=str(tmp_path / "o"))
    assert ctx.input("comparison").path == str(tmp_path / "compare" / "compare.json")
    assert not ctx.has_input("comparison")  # committed in the manifest, but no file: not there


def test_a_stage_whose_output_is_empty_stops_the_run_with_its_reason(tmp_path, monkeypatch):
    """dedup's rule: every row quarantined -> one line with the top reasons, after the commit (the
    quarantine stays to be read), and again when the complete stage is skipped."""
    from selectllm.dedup.stage import nothing_kept
    from selectllm.errors import UserError

    counts = {"read": 376, "kept": 0, "quarantined_total": 376, "quarantined_bad_encoding": 300,
              "quarantined_malformed": 76, "quarantined_empty": 0, "files": 3}
    stage = Stage(name="allbad", run=lambda ctx: dict(counts), empty=nothing_kept)
    monkeypatch.setitem(pipeline.BY_NAME, "allbad", stage)
    cfg, run = pool_config(tmp_path), RunDir(str(tmp_path))
    for _ in range(2):  # ran and committed, then skipped: the same line
        with pytest.raises(UserError) as e:
            pipeline.run_stage(cfg, run, stage)
        assert str(e.value) == ("allbad: kept no row: all 376 rows read were quarantined (bad_encoding 300, "
                                "malformed 76); their reasons and text are in dedup/quarantine/ (input.format, "
                                "input.preset or input.fields may not fit the files)")
        assert run.stage_entry("allbad")["status"] == "complete"
    assert nothing_kept({**counts, "kept": 1}) is None
    assert nothing_kept({"read": 0, "kept": 0, "filtered_rows": 9, "files": 2}) == \
        "kept no row: all 9 rows failed input.filter"
    assert nothing_kept({"read": 0, "kept": 0, "files": 2}) == "kept no row: the 2 files of input.paths hold no record"


def test_declared_workers_are_the_ones_started_and_recorded():
    """The cluster stage's declaration sizes its shards, GPU included on CUDA (it once declared no
    GPU and started shards with one); the embed stage's sizes its actors from the backend plan."""
    from selectllm.cluster.stage import STAGE as CLUSTER
    from selectllm.config import load_config
    from selectllm.embed.stage import STAGE as EMBED

    cpu = {"CPU": 8.0}
    gpu = {"CPU": 8.0, "GPU": 2.0}
    cfg = load_config(None, ["cluster.min_shard_rows=10"])
    assert CLUSTER.resources.workers(cfg, cpu, rows=1000, row_bytes=100) == {
        "workers": 8, "cpus_per_worker": 1.0, "gpus_per_worker": 0, "device": "cpu"}
    assert CLUSTER.resources.workers(cfg, gpu, rows=1000, row_bytes=100) == {
        "workers": 2, "cpus_per_worker": 1.0, "gpus_per_worker": 1, "device": "cuda"}
    on_gpu = EMBED.resources.workers(load_config(None, ["embed.backend=torch"]), gpu)
    assert (on_gpu["workers"], on_gpu["gpus_per_worker"], on_gpu["cpus_per_worker"]) == (2, 1.0, None)
    onnx = EMBED.resources.workers(load_config(None, ["embed.backend=onnx"]), cpu)
    assert (onnx["workers"], onnx["gpus_per_worker"], onnx["cpus_per_worker"], onnx["threads"]) == (8, 0.0, 1, 1)


def test_select_declares_its_tasks_and_llm_pool():
    """select (and compare, evaluate: they run the same strategies) size the part tasks and the LLM
    actor pool through their declaration: min(llm.concurrency, CPUs, requests / 8) actors, no CPU."""
    from selectllm.compare.stage import STAGE as COMPARE
    from selectllm.config import load_config
    from selectllm.evaluate.stage import STAGE as EVALUATE
    from selectllm.llm.ray_pool import share
    from selectllm.select.stage import STAGE as SELECT

    cfg = load_config(None, ["llm.concurrency=6"])
    sized = SELECT.resources.workers
    assert COMPARE.resources.workers is sized
    assert sized(cfg, {"CPU": 4.0}) == {"task_cpus": 1}  # no LLM request: no pool
    assert sized(cfg, {"CPU": 4.0}, requests=9) == {"task_cpus": 1, "llm_actors": 2, "llm_cpus_per_actor": 0}
    assert sized(cfg, {"CPU": 4.0}, requests=1000)["llm_actors"] == 4  # the cluster's CPUs
    assert sized(cfg, {"CPU": 64.0}, requests=1000)["llm_actors"] == 6  # llm.concurrency
    assert sized(cfg, {"CPU": 4.0}, requests=1)["llm_actors"] == 1
    assert share(6, 4) == [2, 2, 1, 1] and share(6, 9) == [1] * 6  # the actors split llm.concurrency
    ev = EVALUATE.resources.workers(load_config(None, ["llm.concurrency=6", "evaluate.device=cpu"]), {"CPU": 4.0},
                                    requests=9)
    assert (ev["device"], ev["task_cpus"], ev["llm_actors"]) == ("cpu", 1, 2)
