"""``selectllm compare``: several selection strategies over the same embeddings, side by side.

dedup, embed and cluster run once (resume-aware, through the pipeline); then each strategy runs
its select logic with ``select.strategy`` set to it and writes ``compare/<strategy>/``
(``selected.jsonl``, ``decisions.parquet``, ``requests.jsonl``) -- the main ``select/`` stage and
``selected.jsonl`` are never touched.  LLM answers share the run's cache (``cache/llm/``), so a
rerun costs nothing; ``llm.max_usd`` caps each strategy separately.

Metrics per strategy (``compare/compare.json``, one object per strategy):

* ``coverage_max`` / ``coverage_p99`` / ``coverage_mean``: cosine distance from every pool row to
  its nearest selected row; lower is better.  On a pool larger than ``compare.sample_rows``
  (200k), a seeded uniform sample of that many rows (the smallest keyed hashes of the ids, seed
  0: the same rows for every strategy and every split of the pool); ``coverage_rows`` says how many.
* ``diversity``: mean pairwise cosine distance of the selection.
* ``clusters_hit``: share of the cluster stage's clusters holding at least one selected row -- not
  a quality figure (it is 1.0 by construction for ``kcenter`` and for ``selectllm`` with equal
  quotas), so no table shows it.
* ``mean_length``: mean characters of instruction + input of the selected rows.
* how well the selection represents the pool (:mod:`selectllm.report.quality`, each labelled there
  with what it favours): ``sparse_share``, ``dense_share``, ``topic_tvd``, ``source_tvd``,
  ``input_tvd``, ``length_tvd``, ``length_ratio``, ``duplicate_rate``, ``low_quality_rate``,
  measured against a seeded sample of at most ``quality.REF_ROWS`` of the coverage rows; and
  ``random_band``: the [min, max] of each of them and of the coverage figures over 3 seeded random
  selections of the same size from that sample (the spread a random pick has).
* ``requests``, ``input_tokens``, ``output_tokens``, ``usd``: what the selection's LLM answers
  cost (cached answers count at the price they were bought for), ``tokens_per_selected``.
* ``seconds``: wall time of the strategy's select logic (the shared stages are not included).

``compare`` is a stage like the others (declared at the end of this module, run on demand): it
reads the declared outputs of dedup/embed/cluster, resumes (a rerun with the same inputs, settings
and ``compare.strategies`` is skipped), has a manifest entry, and ``--force`` recomputes it.

Nothing here holds the pool: the sample's and the selections' vectors and texts are read by id
(:mod:`selectllm.select.distributed`); strategies that need every row in one process are checked
against their limits (:func:`registry.check_scale`) before any strategy runs.
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
from selectllm.select.stage import LLM_SPEED_KEYS, SELECT_LIMIT_KEYS, STRATEGY_INPUTS, privacy_output, select_workers
from selectllm.select.tables import Pool, hash_sample, lookup, vectors_of

# the terminal table (every representation figure is in compare.json and compare.html)
TABLE_COLUMNS = (
    ("coverage_max", "cov max", "{:.4f}"), ("coverage_p99", "cov p99", "{:.4f}"),
    ("coverage_mean", "cov mean", "{:.4f}"), ("diversity", "diversity", "{:.4f}"),
    ("sparse_share", "sparse 10%", "{:.3f}"), ("topic_tvd", "topic TVD", "{:.3f}"),
    ("mean_length", "mean len", "{:.0f}"),
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
           "clusters_hit": float(len(np.unique(labels_sel)) / k) if k else None,
           "mean_length": float(np.mean(lengths_sel)) if len(lengths_sel) else None}
    return out, d.astype(np.float32)


def quality_rows(cfg, vectors: np.ndarray, rows: list[dict]):
    """:func:`selectllm.report.quality.rows_of` with ``dedup.quality``'s rules."""
    from selectllm.report.quality import rows_of

    return rows_of(vectors, rows, cfg.dedup.quality.rules_object())


def reference(ctx, cfg, sample: list[str], x_sample: np.ndarray, target: int):
    """The pool as the quality figures measure it (a seeded sample of at most ``quality.REF_ROWS``
    coverage rows, their texts looked up by id) and random's band: each figure's [min, max] over
    3 seeded random selections of ``target`` of those rows, coverage included."""
    from selectllm.report import quality as Q

    pick = M.sample_indices(len(sample), Q.REF_ROWS, seed=0)
    ids = [sample[i] for i in pick]
    texts = lookup(ctx, ids, ["instruction", "input", "source"])
    ref = Q.Reference(quality_rows(cfg, x_sample[pick], [texts.get(i, {}) for i in ids]))
    band = ref.random_band(target)
    covs = [M.distance_summary(M.nearest_distance(x_sample, ref.rows.vectors[draw])) for draw in ref.draws(target)]
    for key in ("max", "p99", "mean"):
        band[f"coverage_{key}"] = [min(c[key] for c in covs), max(c[key] for c in covs)] if covs else None
    return ref, band


def run_stage(ctx: StageContext) -> dict:
    """Run every strategy of ``compare.strategies`` over the declared inputs; write ``compare/``."""
    from selectllm.engines import ray_init
    from selectllm.report.compare_html import write_compare_html
    from selectllm.select.stage import write_outputs

    cfg, run, staging = ctx.cfg, ctx.run, ctx.out
    names = list(cfg.compare.strategies)
    pool = Pool(ctx, remote=True)
    for name in names:  # every limit before any work
        registry.check_scale(cfg, name, pool.n, pool.k)
    ray_init(cfg)
    n, k = pool.n, pool.k
    target = min(cfg.select.budget, n)
    sample = hash_sample(pool, cfg.compare.sample_rows, seed=0)
    results: dict[str, dict] = {}
    chosen: dict[str, list[tuple[str, int]]] = {}
    extras: dict[str, dict] = {}
    lengths: dict[str, int] = {}
    row_info: dict[str, dict] = {}  # id -> instruction, input, source of every selected row
    for name in names:
        cfg_s = cfg.model_copy(deep=True)
        cfg_s.select.strategy = name
        sub = dataclasses.replace(ctx, cfg=cfg_s, out=posixpath.join(staging, name))
        run.fs.makedirs(sub.out, exist_ok=True)
        console.print(f"[bold cyan]▶ compare: {name}[/]")
        t0 = time.perf_counter()
        res = registry.get(name)(sub, pool)
        seconds = time.perf_counter() - t0
        ids = [i for i, _ in res.selected]
        if len(ids) != target or len(set(ids)) != target:
            raise RuntimeError(f"compare: strategy {name} chose {len(set(ids))} distinct rows, not {target}")
        write_outputs(sub, res.selected, res.decisions)
        texts = lookup(sub, [i for i in ids if i not in lengths], ["instruction", "input", "source"])
        lengths.update({i: len(r["instruction"] or "") + len(r["input"] or "") for i, r in texts.items()})
        row_info.update(texts)
        sp = spend(res.decisions)
        results[name] = {**{key: sp[key] for key in ("requests", "input_tokens", "output_tokens", "usd")},
                         "seconds": round(seconds, 3), "selected": int(target),
                         "tokens_per_selected": round(sp["input_tokens"] / target, 1) if target else None,
                         "groups_by_status": sp["by_status"], "coverage_rows": len(sample)}
        chosen[name], extras[name] = sorted(res.selected), dict(res.extra)
    # the vectors of the sample and of every selection, once: rows of ``union`` (sorted ids)
    union = sorted(set(sample).union(*[(i for i, _ in sel) for sel in chosen.values()]))
    x = M.normalize(vectors_of(ctx, union, pool.tasks))
    cov_idx = np.searchsorted(union, sample)
    x_cov = x[cov_idx]
    ref, band = reference(ctx, cfg, sample, x_cov, target)
    nearest: dict[str, np.ndarray] = {}
    selections: dict[str, np.ndarray] = {}
    for name in names:
        rows = np.searchsorted(union, [i for i, _ in chosen[name]])
        labels_sel = np.asarray([c for _, c in chosen[name]], dtype=np.int64)
        length_sel = np.asarray([lengths[i] for i, _ in chosen[name]], dtype=np.int64)
        m, d = selection_metrics(x_cov, x[rows], labels_sel, k, length_sel)
        results[name].update(m)
        results[name].update(ref.profile(quality_rows(cfg, x[rows], [row_info[i] for i, _ in chosen[name]])))
        results[name]["random_band"] = band
        nearest[name], selections[name] = d, rows
        console.print(f"[green]✔ {name}[/] in {results[name]['seconds']:.1f}s (coverage mean "
                      f"{m['coverage_mean']:.4f}, usd {results[name]['usd']:.4f})")
    with run.fs.open(posixpath.join(staging, "compare.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    write_compare_html(ctx, posixpath.join(staging, "compare.html"), results, extras, x, cov_idx,
                       nearest, selections, None, k, ids=np.asarray(union, dtype=object), n_pool=n)
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
    settings=Settings(("select", "llm", "compare"),
                      exclude={"llm": LLM_SPEED_KEYS, "select": {"strategy", *SELECT_LIMIT_KEYS}},
                      extra=privacy_output),
    resources=Resources(engine="ray", workers=select_workers),
    doc="Several strategies over the same embeddings: compare/compare.json, compare/compare.html.",
)
