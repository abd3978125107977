"""``selectllm compare``: every strategy over the same embeddings, compare.json / compare.html.

Over ``helpers.make_pool_run``: a synthetic run directory with committed dedup/embed/cluster
outputs, no Spark or Ray.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from selectllm.errors import UserError
from selectllm.report import metrics as M
from selectllm.rundir import RunDir

from helpers import compare_run, make_pool_run, only_stage, pool_config

DESIGN_KEYS = {"coverage_max", "coverage_p99", "coverage_mean", "diversity", "requests", "input_tokens",
               "output_tokens", "usd", "seconds"}
ALL = ["selectllm", "selectllm-paper", "random", "kcenter", "kmeans-closest", "length", "alpagasus"]


def test_compare_all_strategies(tmp_path, capsys, ray_local):
    from selectllm.compare.stage import markdown_table, print_table

    ids, x, labels = make_pool_run(tmp_path)
    cfg = pool_config(tmp_path)
    run = RunDir(str(tmp_path))
    results = compare_run(cfg, run, ALL)

    data = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert list(data) == sorted(ALL) and set(results) == set(ALL)
    pos = {v: i for i, v in enumerate(ids)}
    for name in ALL:
        row = data[name]
        assert DESIGN_KEYS | {"clusters_hit", "mean_length", "sparse_share", "topic_tvd", "source_tvd",
                              "duplicate_rate", "low_quality_rate", "random_band"} <= set(row), name
        sel = [json.loads(line) for line in (tmp_path / "compare" / name / "selected.jsonl").read_text().splitlines()]
        assert len(sel) == 12 and len({r["id"] for r in sel}) == 12 and {r["strategy"] for r in sel} == {name}
        assert all(r["source_row"] == pos[r["id"]] for r in sel)  # make_pool_run: source_row = row index
        statuses = {r["status"] for r in sel}
        if name in ("random", "kcenter", "kmeans-closest", "length"):
            assert statuses == {"no_llm"}, name
        else:  # the simulator answers every prompt: the LLM chose
            assert statuses == {"llm"}, (name, statuses)
        rows = np.asarray(sorted(pos[r["id"]] for r in sel))
        expect = M.coverage(x, x[rows])
        for key in ("max", "p99", "mean"):
            assert row[f"coverage_{key}"] == pytest.approx(expect[key], abs=1e-5), (name, key)
        assert row["diversity"] == pytest.approx(M.diversity(x[rows]), abs=1e-6)
        assert row["clusters_hit"] == pytest.approx(len(set(labels[rows])) / 12)
        assert 0 <= row["sparse_share"] <= 1 and 0 <= row["topic_tvd"] <= 1
        lo, hi = row["random_band"]["source_tvd"]
        assert lo <= hi
        assert (tmp_path / "compare" / name / "decisions.parquet").exists()
    # LLM strategies pay, the others do not; alpagasus pays one request per pool row
    for name in ("random", "kcenter", "kmeans-closest", "length"):
        assert data[name]["requests"] == 0 and data[name]["usd"] == 0
    assert data["selectllm"]["requests"] == 12
    assert data["selectllm-paper"]["requests"] == 6
    assert data["alpagasus"]["requests"] == 240
    assert data["alpagasus"]["input_tokens"] > data["selectllm-paper"]["input_tokens"]
    # farthest-first minimizes the largest gap; the longest rows are the longest
    assert data["kcenter"]["coverage_max"] <= data["random"]["coverage_max"]
    assert data["length"]["mean_length"] == max(r["mean_length"] for r in data.values())
    # the main select stage is untouched
    assert not (tmp_path / "select").exists() and not (tmp_path / "selected.jsonl").exists()
    assert not list(tmp_path.glob("_staging/compare-*"))  # committed, nothing half-written left

    page = (tmp_path / "compare" / "compare.html").read_text(encoding="utf-8")
    for pid in ["plot-coverage", "plot-quality", "plot-spend", "plot-funnel", "plot-clusters", "plot-stages",
                *[f"plot-map-{s}" for s in ALL]]:
        assert re.search(r'<img id="%s" alt="[^"]{10,}" src="data:image/png;base64,iVBOR' % pid, page), pid
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert 'id="paper-tokens"' in page

    print_table(results)
    out = capsys.readouterr().out
    assert "selectllm-paper" in out and "cov mean" in out
    assert markdown_table(results).count("\n") == len(ALL) + 1


def test_compare_rejects_unknown_strategy():
    from selectllm.compare.stage import parse_strategies

    with pytest.raises(UserError, match="nope"):
        parse_strategies("random,nope")
    with pytest.raises(UserError, match="twice"):
        parse_strategies("random,random")
    assert parse_strategies(None)[:2] == ["selectllm", "selectllm-paper"]


@pytest.mark.ray
def test_compare_cli(tmp_path, monkeypatch, capsys):
    """The command's wiring: options, the table on stdout, exit code 0, one-line errors.  (The shared
    stages are the pipeline's, tested in test_cli_e2e.py; benchmarks/bench_compare.py runs it all.)"""
    from selectllm.cli import main

    make_pool_run(tmp_path / "run")
    only_stage(monkeypatch, "compare")
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps({"run_dir": str(tmp_path / "run"), "select": {"budget": 8},
                                "llm": {"provider": "simulator", "engine": "local"}}))
    try:
        main(["compare", str(path), "--strategies", "random,kcenter,length", "--set", "select.budget=10"])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "compare.html" in out and "kcenter" in out and "cov mean" in out
    data = json.loads((tmp_path / "run" / "compare" / "compare.json").read_text())
    assert set(data) == {"random", "kcenter", "length"} and data["random"]["selected"] == 10
    with pytest.raises(SystemExit) as e:
        main(["compare", str(path), "--strategies", "random,bogus"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: select.strategy 'bogus' is not available")
