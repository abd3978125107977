"""``selectllm compare``: several selection strategies over the same embeddings, side by side.

dedup, embed and cluster run once (resume-aware, through the pipeline); then each strategy runs
its select logic with ``select.strategy`` set to it and writes ``compare/<strategy>/``
(``selected.jsonl``, ``decisions.parquet``, ``requests.jsonl``) -- the main ``select/`` stage and
``selected.jsonl`` are never touched.  LLM answers share the run's cache (``cache/llm/``), so a
rerun costs nothing; ``llm.max_usd`` caps each strategy separately.

Metrics per strategy (``compare/compare.json``, one object per strategy):

* ``coverage_max`` / ``coverage_p99`` / ``coverage_mean``: cosine distance from every pool row to
  its nearest selected row (a deterministic sample of 200k rows on larger pools: the same rows
  for every strategy); lower is better.
* ``diversity``: mean pairwise cosine distance of the selection.
* ``cluster_coverage``: share of the cluster stage's clusters holding at least one selected row.
* ``mean_length``: mean characters of instruction + input of the selected rows.
* ``requests``, ``input_tokens``, ``output_tokens``, ``usd``: what the selection's LLM answers
  cost (cached answers count at the price they were bought for), ``tokens_per_selected``.
* ``seconds``: wall time of the strategy's select logic (the shared stages are not included).

``compare`` is a stage like the others (declared at the end of this module, run on demand): it
reads the declared outputs of dedup/embed/cluster, resumes (a rerun with the same inputs, settings
and ``compare.strategies`` is skipped), has a manifest entry, and ``--force`` recomputes it.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import time

import numpy as np

from selectllm.console import console
from selectllm.contract import Output, Resources, Settings, Stage, StageContext
from selectllm.errors import UserError
from selectllm.report import metrics as M
from selectllm.select import registry
from selectllm.select.stage import LLM_SPEED_KEYS, STRATEGY_INPUTS
from selectllm.select.tables import assignments, load_embeddings

TABLE_COLUMNS = (
    ("coverage_max", "cov max", "{:.4f}"), ("coverage_p99", "cov p99", "{:.4f}"),
    ("coverage_mean", "cov mean", "{:.4f}"), ("diversity", "diversity", "{:.4f}"),
    ("cluster_coverage", "clusters hit", "{:.3f}"), ("mean_length", "mean len", "{:.0f}"),
    ("requests", "requests", "{:,}"), ("input_tokens", "in tok", "{:,}"), ("output_tokens", "out tok", "{:,}"),
    ("usd", "usd", "{:.4f}"), ("seconds", "seconds", "{:.1f}"),
)


def parse_strategies(spec: str | None) -> list[str]:
    """``--strategies a,b,c`` -> names (all strategies when empty); unknown or repeated: UserError."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip()] or list(registry.NAMES)
    for name in names:
        registry.get(name)  # UserError naming the unknown strategy
    if len(set(names)) != len(names):
        raise UserError(f"--strategies lists a strategy twice: {spec}")
    return names


def _pool(ctx):
    ids, labels, dist = assignments(ctx)
    emb_ids, x = load_embeddings(ctx.input("vectors"))
    if not np.array_equal(emb_ids, ids):
        raise UserError("compare: embed/ and cluster/ disagree on the pool; rerun `selectllm cluster --force`")
    return ids, labels, dist, M.normalize(x)


def spend(decisions: list[dict]) -> dict:
    tin = sum(int(d["input_tokens"]) for d in decisions)
    tout = sum(int(d["output_tokens"]) for d in decisions)
    by_status: dict[str, int] = {}
    for d in decisions:
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    return {"requests": sum(1 for d in decisions if d["input_tokens"] + d["output_tokens"] > 0),
            "input_tokens": tin, "output_tokens": tout, "usd": round(sum(float(d["usd"]) for d in decisions), 6),
            "by_status": by_status}


def selection_metrics(x_cov: np.ndarray, x_sel: np.ndarray, labels_sel: np.ndarray, k: int,
                      lengths_sel: np.ndarray) -> tuple[dict, np.ndarray]:
    """Coverage (from the nearest-selected distance of each coverage row), diversity, cluster
    coverage, mean length; and the distances themselves (for the coverage curves)."""
    d = M.nearest_distance(x_cov, x_sel).astype(np.float64)
    out = {"coverage_max": float(d.max()) if d.size else None,
           "coverage_p99": float(np.percentile(d, 99)) if d.size else None,
           "coverage_mean": float(d.mean()) if d.size else None,
           "diversity": M.diversity(x_sel) if len(x_sel) else None,
           "cluster_coverage": float(len(np.unique(labels_sel)) / k) if k else None,
           "mean_length": float(np.mean(lengths_sel)) if len(lengths_sel) else None}
    return out, d.astype(np.float32)


def run_stage(ctx: StageContext) -> dict:
    """Run every strategy of ``compare.strategies`` over the declared inputs; write ``compare/``."""
    from selectllm.report.compare_html import write_compare_html
    from selectllm.select.stage import write_outputs
    from selectllm.select.tables import row_lengths

    cfg, run, staging = ctx.cfg, ctx.run, ctx.out
    names = list(cfg.compare.strategies)
    ids, labels, dist, x = _pool(ctx)
    n = len(ids)
    k = ctx.input("centers").num_rows()
    cov_idx = M.sample_indices(n, M.COVERAGE_MAX_ROWS, seed=0)
    x_cov = x[cov_idx]
    lengths = row_lengths(ctx, ids)
    pos = {v: i for i, v in enumerate(ids)}
    results: dict[str, dict] = {}
    nearest: dict[str, np.ndarray] = {}
    selections: dict[str, np.ndarray] = {}
    extras: dict[str, dict] = {}
    for name in names:
        cfg_s = cfg.model_copy(deep=True)
        cfg_s.select.strategy = name
        sub = dataclasses.replace(ctx, cfg=cfg_s, out=posixpath.join(staging, name))
        run.fs.makedirs(sub.out, exist_ok=True)
        sub.embeddings = (ids, x)
        sub.row_lengths = lengths
        console.print(f"[bold cyan]▶ compare: {name}[/]")
        t0 = time.perf_counter()
        res = registry.get(name)(sub, ids, labels, dist)
        seconds = time.perf_counter() - t0
        chosen = [i for i, _ in res.selected]
        target = min(cfg.select.budget, n)
        if len(chosen) != target or len(set(chosen)) != target:
            raise RuntimeError(f"compare: strategy {name} chose {len(set(chosen))} distinct rows, not {target}")
        write_outputs(sub, res.selected, res.decisions)
        rows = np.sort(np.asarray([pos[c] for c in chosen], dtype=np.int64))
        m, d = selection_metrics(x_cov, x[rows], labels[rows], k, lengths[rows])
        sp = spend(res.decisions)
        results[name] = {**m, **{key: sp[key] for key in ("requests", "input_tokens", "output_tokens", "usd")},
                         "seconds": round(seconds, 3), "selected": int(target),
                         "tokens_per_selected": round(sp["input_tokens"] / target, 1) if target else None,
                         "groups_by_status": sp["by_status"]}
        nearest[name], selections[name], extras[name] = d, rows, dict(res.extra)
        console.print(f"[green]✔ {name}[/] in {seconds:.1f}s (coverage mean {m['coverage_mean']:.4f}, "
                      f"usd {sp['usd']:.4f})")
    with run.fs.open(posixpath.join(staging, "compare.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    write_compare_html(ctx, posixpath.join(staging, "compare.html"), results, extras, x, cov_idx,
                       nearest, selections, labels, k, ids=ids)
    return {"strategies": len(names), "rows": int(n),
            "usd": round(sum(float(r["usd"]) for r in results.values()), 6)}


def run_compare(cfg, names: list[str], force: bool = False):
    """dedup -> embed -> cluster -> compare (each skipped when complete); the comparison."""
    from selectllm.pipeline import run_pipeline

    cfg = cfg.model_copy(deep=True)
    cfg.compare.strategies = names
    run = run_pipeline(cfg, stages=[*STAGE.upstream, STAGE.name], force=[STAGE.name] if force else [])
    return run, run.read_json(posixpath.join(STAGE.name, STAGE.output("comparison").path))


def format_cell(value, fmt: str) -> str:
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def print_table(results: dict, out=None) -> None:
    """The comparison as a rich table (to stdout by default)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="selectllm compare")
    t.add_column("strategy", style="bold")
    for _, label, _ in TABLE_COLUMNS:
        t.add_column(label, justify="right")
    for name, row in results.items():
        t.add_row(name, *[format_cell(row.get(key), fmt) for key, _, fmt in TABLE_COLUMNS])
    (out or Console(width=200)).print(t)


def markdown_table(results: dict) -> str:
    head = "| strategy | " + " | ".join(label for _, label, _ in TABLE_COLUMNS) + " |"
    sep = "|---" * (len(TABLE_COLUMNS) + 1) + "|"
    body = ["| " + name + " | " + " | ".join(format_cell(row.get(k), f) for k, _, f in TABLE_COLUMNS) + " |"
            for name, row in results.items()]
    return "\n".join([head, sep, *body])


STAGE = Stage(
    name="compare",
    run=run_stage,
    inputs={**STRATEGY_INPUTS, "stats": "dedup.stats"},
    outputs=(Output("comparison", "compare.json"), Output("page", "compare.html")),
    settings=Settings(("select", "llm", "compare"), exclude={"llm": LLM_SPEED_KEYS, "select": {"strategy"}}),
    resources=Resources(engine="ray"),
    doc="Several strategies over the same embeddings: compare/compare.json, compare/compare.html.",
)
