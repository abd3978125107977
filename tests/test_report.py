"""The report stage on a small synthetic run directory (no Spark, no Ray), and its maths."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm.config import load_config
from selectllm.report import metrics as M
from selectllm.report.stage import run_stage

from helpers import EVIL, make_report_run, run_report, stage_ctx

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOT_IDS = ("plot-funnel", "plot-clusters", "plot-map", "plot-spend", "plot-stages")

# ----------------------------------------------------------------------------- maths
def _unit(angles_deg):
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def test_coverage_hand_made():
    pool = _unit([0, 90, 180, 270, 45])
    sel = _unit([0])
    # cosine distances to (1, 0): 0, 1, 2, 1, 1 - cos 45
    expect = np.array([0.0, 1.0, 2.0, 1.0, 1 - np.cos(np.pi / 4)])
    np.testing.assert_allclose(M.nearest_distance(pool, sel), expect, atol=1e-6)
    cov = M.coverage(pool, sel)
    assert cov["max"] == pytest.approx(2.0, abs=1e-6)
    assert cov["mean"] == pytest.approx(expect.mean(), abs=1e-6)
    assert cov["p99"] == pytest.approx(np.percentile(expect, 99), abs=1e-6)
    assert cov["sampled"] is False and cov["rows"] == 5
    # two selected rows: every pool row is at most 1 - cos 45 from one of them... except 270
    cov2 = M.coverage(pool, _unit([0, 180]))
    assert cov2["max"] == pytest.approx(1.0, abs=1e-6)  # 90 and 270 are orthogonal to both
    # selecting the whole pool covers it perfectly; not-normalized input is normalized
    assert M.coverage(pool * 3.0, pool)["max"] == pytest.approx(0.0, abs=1e-6)


def test_coverage_blockwise_matches_brute_force_and_samples():
    rng = np.random.default_rng(1)
    pool = M.normalize(rng.normal(size=(1000, 16)))
    sel = pool[rng.choice(1000, 37, replace=False)]
    brute = np.clip(1 - (pool @ sel.T).max(axis=1), 0, 2)
    np.testing.assert_allclose(M.nearest_distance(pool, sel, chunk=7), brute, atol=1e-5)
    full = M.coverage(pool, sel, chunk=64)
    assert full["mean"] == pytest.approx(float(brute.mean()), abs=1e-5)
    sampled = M.coverage(pool, sel, chunk=64, max_rows=300, seed=3)
    assert sampled["sampled"] is True and sampled["rows"] == 300 and sampled["pool_rows"] == 1000
    assert sampled == M.coverage(pool, sel, chunk=64, max_rows=300, seed=3)  # deterministic
    assert abs(sampled["mean"] - full["mean"]) < 0.05
    empty = M.coverage(pool, np.zeros((0, 16), np.float32))
    assert empty["max"] is None


def test_diversity():
    assert M.diversity(_unit([0, 90])) == pytest.approx(1.0, abs=1e-6)
    # pairs: (0,180)=2, (0,90)=1, (180,90)=1
    assert M.diversity(_unit([0, 180, 90])) == pytest.approx(4 / 3, abs=1e-6)
    assert M.diversity(_unit([10, 10, 10])) == pytest.approx(0.0, abs=1e-6)
    assert M.diversity(_unit([0])) is None
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    assert M.diversity(x) == pytest.approx(M.diversity_sampled(x), abs=1e-5)
    assert M.diversity_sampled(x, max_rows=100) == M.diversity_sampled(x, max_rows=100)


# ----------------------------------------------------------------------------- synthetic run

def _png_of(page: str, plot_id: str) -> bytes:
    m = re.search(r'<img id="%s" alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"' % plot_id, page)
    assert m, f"no <img id={plot_id}> in the report"
    assert len(m.group(1)) > 10  # a distinctive alt text
    return base64.b64decode(m.group(2), validate=True)


def explorer_data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page, re.S)
    assert m, "no explorer data in the report"
    assert "<" not in m.group(1)  # nothing in the blob can end the script element
    data = json.loads(m.group(1))
    ids = [r["id"] for r in data["rows"]]  # groups name rows by index: back to ids for the asserts
    assert len(set(ids)) == len(ids)
    data["rows"] = {r.pop("id"): r for r in data["rows"]}
    for g in data["groups"]:
        g["cand"], g["chosen"] = [ids[k] for k in g["cand"]], [ids[k] for k in g["chosen"]]
    return data


def test_report_full_run(tmp_path):
    emb, chosen = make_report_run(tmp_path)
    counts, page, metrics = run_report(tmp_path, "select.budget=6")
    for pid in PLOT_IDS:
        assert _png_of(page, pid).startswith(PNG_MAGIC), pid
    assert counts == {"selected": 6, "plots": 5, "bytes": len(page.encode("utf-8"))}
    assert len(page) < 2_000_000

    # escaping: instruction and quarantine text never become markup; the only scripts are the
    # explorer's data blob and its code, and the data cannot close its script element
    assert re.findall(r"<script[^>]*>", page, re.I) == ['<script type="application/json" id="explorer-data">', "<script>"]
    assert EVIL not in page and "alert('x')</script>" not in page
    assert EVIL in json.dumps(explorer_data(page), ensure_ascii=False)  # the text itself is there, as data
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "&lt;script&gt;bad json" in page
    assert "x" * 200 + "…" in page and "x" * 201 not in page  # truncated to 200 chars
    assert "http://" not in page and "https://" not in page  # nothing external
    assert str(tmp_path) in page and "selectllm" in page

    assert metrics["dedup"]["kept"] == 60 and metrics["dedup"]["read"] == 70
    assert metrics["clusters"] == {"k": 4, "size_min": 15, "size_median": 15.0, "size_max": 15,
                                   "radius_max": pytest.approx(0.8)}
    sel = metrics["selection"]
    assert sel["strategy"] == "selectllm" and sel["selected"] == 6
    assert sel["by_status"] == {"ok": 3, "fallback": 1, "budget_stopped": 1, "error": 1}
    assert sel["requests"] == 4
    assert sel["input_tokens"] == 1205 and sel["output_tokens"] == 23
    assert sel["usd"] == pytest.approx(1205e-6 + 23 * 4e-6)
    assert sel["max_usd"] == 5.0

    expect = M.coverage(emb, emb[chosen])
    cov = metrics["coverage"]
    assert cov["sampled"] is False and cov["rows"] == cov["pool_rows"] == 60
    for key in ("max", "p99", "mean"):
        assert cov[key] == pytest.approx(expect[key], abs=1e-5)
    assert metrics["diversity"] == pytest.approx(M.diversity(emb[chosen]), abs=1e-6)
    assert metrics["stages"] == {"dedup": 12.5, "embed": 30.0, "cluster": 4.2, "select": 8.0}
    assert metrics["not_run"] == []

    # how the selection represents the pool: one source and no input anywhere, so those mixes match
    rep = metrics["representation"]
    assert rep["source_tvd"] == 0 and rep["input_tvd"] == 0 and rep["reference_rows"] == 60
    assert 0 <= rep["sparse_share"] <= 1 and rep["random_band"]["sparse_share"][0] <= rep["random_band"]["sparse_share"][1]
    assert rep["low_quality_rate"] == 0 and rep["duplicate_rate"] == 0
    assert 'id="representation"' in page and "what it favours" in page
    assert metrics["picks_by"] == {"unknown": 6}  # this selected.jsonl has no status column


def test_report_empty_decisions(tmp_path):
    emb, chosen = make_report_run(tmp_path, with_decisions=False)
    counts, page, metrics = run_report(tmp_path, "select.strategy=random")
    assert counts["selected"] == 6 and counts["plots"] == 4
    assert 'id="plot-spend"' not in page and "does not call an LLM" in page
    for pid in ("plot-funnel", "plot-clusters", "plot-map", "plot-stages"):
        assert _png_of(page, pid).startswith(PNG_MAGIC)
    sel = metrics["selection"]
    assert sel["strategy"] == "random" and sel["requests"] == 0 and sel["usd"] == 0.0
    assert sel["by_status"] == {"ok": 0, "fallback": 0, "budget_stopped": 0, "error": 0}
    assert metrics["coverage"]["max"] == pytest.approx(M.coverage(emb, emb[chosen])["max"], abs=1e-5)


def test_report_missing_stages(tmp_path):
    make_report_run(tmp_path)
    import shutil

    for stage in ("embed", "cluster", "select"):
        shutil.rmtree(tmp_path / stage)
    (tmp_path / "selected.jsonl").unlink()
    counts, page, metrics = run_report(tmp_path)
    assert counts["selected"] == 0
    for stage in ("embed", "cluster", "select"):
        assert f'id="missing-{stage}"' in page
    assert "not run" in page
    assert metrics["coverage"] is None and metrics["clusters"] is None and metrics["diversity"] is None
    assert set(metrics["not_run"]) == {"embed", "cluster", "select", "selected.jsonl"}
    assert _png_of(page, "plot-funnel").startswith(PNG_MAGIC)


def test_report_empty_run_dir(tmp_path):
    counts, page, metrics = run_report(tmp_path)
    assert counts["plots"] == 0 and counts["selected"] == 0
    assert 'id="missing-dedup"' in page and metrics["dedup"] is None


# ----------------------------------------------------------------------------- the selection explorer
def _decisions(tmp) -> list[dict]:
    return pq.read_table(tmp / "select" / "decisions.parquet").to_pylist()


def test_explorer_lists_every_group_with_its_candidates_texts(tmp_path):
    make_report_run(tmp_path)
    _, page, _ = run_report(tmp_path, "select.budget=6")
    data = explorer_data(page)
    dedup = {r["id"]: r for r in pq.read_table(tmp_path / "dedup" / "part-00000.parquet").to_pylist()}
    want = _decisions(tmp_path)
    assert data["llm"] is True and data["total_groups"] == len(want) == len(data["groups"])
    for g, d in zip(data["groups"], want):
        assert (g["g"], g["c"], g["st"], g["why"]) == (d["group_id"], d["cluster_id"], d["status"], d["reason"])
        assert g["cand"] == d["candidate_ids"] and g["chosen"] == d["chosen_ids"]
    named = {i for d in want for i in d["candidate_ids"]}
    assert set(data["rows"]) == named  # the candidates' rows, nothing else of the pool
    for ident in named:
        row = data["rows"][ident]
        assert (row["i"], row["x"], row["src"], row["r"]) == (dedup[ident]["instruction"], dedup[ident]["input"],
                                                             dedup[ident]["source"], dedup[ident]["source_row"])
    assert 'id="ex-capped"' not in page
    # the map: one ring per cluster (centers are pool rows) and one point per selected row, each a link
    rings = re.findall(r'<a href="#cluster-(\d+)" class="cl" data-cluster="\1">', page)
    assert sorted(map(int, rings)) == [0, 1, 2, 3]
    points = re.findall(r'<a href="#cluster-(\d+)" class="sel" data-cluster="\1">', page)
    selected = [json.loads(line) for line in (tmp_path / "selected.jsonl").read_text().splitlines()]
    assert sorted(map(int, points)) == sorted(r["cluster_id"] for r in selected)
    assert '<a href="#cluster-0">0</a>' in page  # the largest-clusters table links to the explorer too


def test_explorer_shows_who_chose_a_row_and_why_when_the_select_stage_says(tmp_path):
    make_report_run(tmp_path)
    rows = _decisions(tmp_path)
    for d in rows:
        d["chosen_by"] = ["llm" if d["status"] == "ok" else "fallback"] * len(d["chosen_ids"])
        d["chosen_reasons"] = [f"reason for {c}" for c in d["chosen_ids"]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "select" / "decisions.parquet")
    lines = [json.loads(line) for line in (tmp_path / "selected.jsonl").read_text().splitlines()]
    with open(tmp_path / "selected.jsonl", "w") as f:
        for r in lines:
            f.write(json.dumps({**r, "source_row": 7, "status": "llm", "reason": "clear and complex"}) + "\n")
    _, page, _ = run_report(tmp_path, "select.budget=6")
    data = explorer_data(page)
    for g, d in zip(data["groups"], rows):
        assert g["by"] == d["chosen_by"] and g["cw"] == d["chosen_reasons"]
    for r in lines:  # selected.jsonl's own columns win for the selected rows
        assert data["rows"][r["id"]]["st"] == "llm" and data["rows"][r["id"]]["why"] == "clear and complex"
        assert data["rows"][r["id"]]["r"] == 7


def test_explorer_reads_only_the_candidates_of_the_embedded_groups(tmp_path, monkeypatch):
    from selectllm.contract import StageInput
    from selectllm.select import distributed as D

    make_report_run(tmp_path)
    reads, lookups = [], []
    original, original_lookup = StageInput.read, D.lookup_table

    def spy(self, columns=None, filter=None):
        reads.append((self.stage, self.output.name, columns, filter))
        return original(self, columns=columns, filter=filter)

    def spy_lookup(fs, files, ids, columns, tasks):
        lookups.append((files, list(ids), list(columns), tasks))
        return original_lookup(fs, files, ids, columns, tasks)

    monkeypatch.setattr(StageInput, "read", spy)
    monkeypatch.setattr(D, "lookup_table", spy_lookup)
    _, page, _ = run_report(tmp_path, "select.budget=6")
    assert not [r for r in reads if (r[0], r[1]) == ("dedup", "rows")]  # never a whole read of the pool
    candidates = {i for d in _decisions(tmp_path) for i in d["candidate_ids"]}
    dedup_parts = {str(p) for p in (tmp_path / "dedup").glob("part-*.parquet")}
    rows_lookups = [(ids, columns, tasks) for files, ids, columns, tasks in lookups
                    if {str(f) for f in files} <= dedup_parts]
    assert rows_lookups and all(tasks is None for *_, tasks in rows_lookups)  # a local stage: in this process
    explorer = [ids for ids, columns, _ in rows_lookups if "source_row" in columns]  # the quality sample's has none
    assert explorer and all(set(ids) <= candidates for ids in explorer)
    # the decisions' id lists are read for the embedded groups only
    lists = [r for r in reads if r[1] == "decisions" and r[2] and "candidate_ids" in r[2]]
    assert lists and all(f is not None for *_, f in lists)


def test_explorer_caps_the_groups_it_embeds_and_says_so(tmp_path, monkeypatch):
    from selectllm.report import explorer as X

    make_report_run(tmp_path)
    monkeypatch.setattr(X, "MAX_GROUPS", 4)
    _, page, metrics = run_report(tmp_path, "select.budget=6")
    data = explorer_data(page)
    statuses = {d["group_id"]: d["status"] for d in _decisions(tmp_path)}
    not_ok = sorted(g for g, s in statuses.items() if s != "ok")[:2]
    ok = sorted(g for g, s in statuses.items() if s == "ok")[:2]
    assert [g["g"] for g in data["groups"]] == sorted(not_ok + ok)
    assert data["total_groups"] == 6
    assert 'id="ex-capped"' in page and "embeds 4 of 6" in page
    assert metrics["selection"]["by_status"]["ok"] == 3  # the counts still cover every group


def test_explorer_for_an_llm_free_strategy_lists_the_selected_rows_by_cluster(tmp_path):
    make_report_run(tmp_path, with_decisions=False)
    _, page, _ = run_report(tmp_path, "select.strategy=random")
    data = explorer_data(page)
    selected = [json.loads(line) for line in (tmp_path / "selected.jsonl").read_text().splitlines()]
    by_cluster: dict[int, list[str]] = {}
    for r in selected:
        by_cluster.setdefault(r["cluster_id"], []).append(r["id"])
    assert data["llm"] is False
    assert [(g["c"], g["cand"], g["chosen"]) for g in data["groups"]] == [(c, by_cluster[c], by_cluster[c])
                                                                         for c in sorted(by_cluster)]
    assert {i: data["rows"][i]["i"] for i in data["rows"]} == {r["id"]: r["instruction"] for r in selected}


def test_report_reads_its_inputs_wherever_the_pipeline_resolves_them(tmp_path):
    """No stage folder name in the report's code: move every upstream stage to another folder (and
    name), resolve the report's inputs there, and the report is the same."""
    from selectllm import pipeline
    from selectllm.contract import Stage

    make_report_run(tmp_path)
    _, page, metrics = run_report(tmp_path, "select.budget=6")
    moved = {name: f"{name}_elsewhere" for name in ("dedup", "embed", "cluster", "select")}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for old, new in moved.items():
        (tmp_path / old).rename(tmp_path / new)
        manifest["stages"][new] = manifest["stages"].pop(old)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    specs = {new: Stage(name=new, run=None, outputs=pipeline.BY_NAME[old].outputs) for old, new in moved.items()}

    def resolve(ref):
        stage, _, output = ref.partition(".")
        return moved[stage], specs[moved[stage]].output(output)

    cfg = load_config(None, ["select.budget=6"])
    ctx = stage_ctx(tmp_path, "report", cfg=cfg)
    ctx.resolve = resolve
    run_stage(ctx)
    page2 = (Path(ctx.out) / "report.html").read_text(encoding="utf-8")
    metrics2 = json.loads((Path(ctx.out) / "metrics.json").read_text())
    assert explorer_data(page2) == explorer_data(page)
    strip = lambda m: {k: v for k, v in m.items() if k != "stages"}  # noqa: E731 (stage names differ)
    assert strip(metrics2) == strip(metrics) and metrics2["not_run"] == []
