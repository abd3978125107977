"""``selectllm compare``: every strategy over the same embeddings, compare.json / compare.html.

``make_pool_run`` (a small synthetic run directory with committed dedup/embed/cluster outputs,
no Spark or Ray) is shared with test_paper.py, test_baselines.py and test_report_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm import schemas
from selectllm.cluster.kcenter import assign, farthest_first
from selectllm.config import load_config
from selectllm.errors import UserError
from selectllm.report import metrics as M
from selectllm.rundir import RunDir

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
         "tau upsilon phi chi psi omega").split()
DESIGN_KEYS = {"coverage_max", "coverage_p99", "coverage_mean", "diversity", "requests", "input_tokens",
               "output_tokens", "usd", "seconds"}
ALL = ["selectllm", "selectllm-paper", "random", "kcenter", "kmeans-closest", "length", "alpagasus"]


def make_pool_run(root: Path, n: int = 240, dim: int = 16, blobs: int = 8, k: int = 12, seed: int = 0):
    """A run directory whose dedup, embed and cluster stages are complete: ``n`` rows in ``blobs``
    Gaussian blobs of unequal size, texts of varied length, k-center clusters.  Returns (ids, X, labels)."""
    rng = np.random.default_rng(seed)
    weights = np.linspace(1, 3, blobs)
    sizes = rng.multinomial(n - blobs, weights / weights.sum()) + 1
    centers = M.normalize(rng.normal(size=(blobs, dim)))
    x = M.normalize(np.concatenate([centers[b] + 0.25 * rng.normal(size=(s, dim)) for b, s in enumerate(sizes)]))
    x = x[rng.permutation(n)].astype(np.float32)
    ids = np.asarray([f"{i:04x}" + "0" * 60 for i in range(n)], dtype=object)  # sorted, like content hashes
    instr = [" ".join(rng.choice(WORDS, size=3 + int(rng.integers(0, 25)))) for _ in range(n)]
    inp = ["" if i % 3 else "context " + WORDS[i % len(WORDS)] for i in range(n)]
    (root / "dedup").mkdir(parents=True)
    pq.write_table(pa.table({"id": list(ids), "instruction": instr, "input": inp, "text": instr,
                             "source": ["s.jsonl"] * n, "source_row": list(range(n))}, schema=schemas.DEDUP),
                   str(root / "dedup" / "part-00000.parquet"))
    (root / "dedup" / "stats.json").write_text(json.dumps(
        {"read": n + 7, "quarantined": {"malformed": 2}, "quarantined_total": 2, "exact_duplicates": 4,
         "near_duplicates": 1, "kept": n}))
    (root / "embed").mkdir()
    arr = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), dim)
    pq.write_table(pa.table({"id": list(ids), "embedding": arr}, schema=schemas.embed_schema(dim)),
                   str(root / "embed" / "part-00000.parquet"))
    (root / "cluster").mkdir()
    cidx, _ = farthest_first(x, k)
    labels, dist = assign(x, cidx)
    is_center = np.zeros(n, bool)
    is_center[cidx] = True
    pq.write_table(pa.table({"id": list(ids), "cluster_id": labels.astype(np.int64), "distance": dist,
                             "is_center": is_center}, schema=schemas.ASSIGNMENTS),
                   str(root / "cluster" / "assignments.parquet"))
    radius = np.zeros(k, np.float32)
    np.maximum.at(radius, labels, dist)
    pq.write_table(pa.table({"cluster_id": np.arange(k, dtype=np.int64), "id": [ids[i] for i in cidx],
                             "size": np.bincount(labels, minlength=k).astype(np.int64), "radius": radius},
                            schema=schemas.CENTERS), str(root / "cluster" / "centers.parquet"))
    (root / "manifest.json").write_text(json.dumps({"stages": {
        s: {"status": "complete", "seconds": sec, "counts": {}, "output_token": f"tok-{s}",
            "input_fingerprint": "synthetic", "settings_hash": "synthetic"}
        for s, sec in [("dedup", 3.0), ("embed", 5.0), ("cluster", 1.0)]}}))
    return ids, x, labels


def compare_run(cfg, run: RunDir, names: list[str]) -> dict:
    """The compare stage through the pipeline's machinery (manifest entry, schema checks, commit)."""
    from selectllm.pipeline import BY_NAME, run_stage

    cfg = cfg.model_copy(deep=True)
    cfg.compare.strategies = list(names)
    run_stage(cfg, run, BY_NAME["compare"])
    return run.read_json("compare/compare.json")


def pool_config(root: Path, *extra: str):
    return load_config(None, [f"run_dir={root}", "select.budget=12", "select.paper_subsets=6",
                              "llm.simulator.latency_ms=1", "llm.rpm=100000", "llm.tpm=100000000",
                              "llm.engine=local", *extra])


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
        assert DESIGN_KEYS | {"cluster_coverage", "mean_length"} <= set(row), name
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
        assert row["cluster_coverage"] == pytest.approx(len(set(labels[rows])) / 12)
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
    from selectllm import pipeline
    from selectllm.cli import main

    make_pool_run(tmp_path / "run")

    def compare_only(cfg, stages, force):  # the synthetic upstream stages stand as they are
        assert stages[-1] == "compare"
        run = RunDir(cfg.run_dir)
        pipeline.run_stage(cfg, run, pipeline.BY_NAME["compare"], force=bool(force))
        return run

    monkeypatch.setattr(pipeline, "run_pipeline", compare_only)
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
