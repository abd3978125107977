"""``compare/compare.html``: the strategies of ``selectllm compare`` side by side, on one page.

Self-contained like ``report.html`` (inline CSS, inline base64 PNGs, no script, nothing external),
so it works offline.  Plots (``<img id=...>``): ``plot-coverage`` (coverage curves),
``plot-quality`` (coverage / diversity / cluster coverage), ``plot-spend`` (LLM requests,
tokens, dollars, seconds per strategy), ``plot-map-<strategy>`` (a 2-D PCA projection of the pool
with that strategy's selection), ``plot-funnel`` (dedup funnel), ``plot-clusters`` (cluster
sizes), ``plot-stages`` (spend per stage: seconds and LLM dollars).
"""

from __future__ import annotations

import posixpath

import numpy as np

from selectllm.report import metrics as M
from selectllm.report import plots as P
from selectllm.report.widgets import CSS, esc, img, kv, num, page, table, trunc

MAP_MAX_ROWS = 8_000
EXAMPLES = 5
# the reference code's prompts over Dolly / cleaned Alpaca: ~1.7-1.9M input tokens for a 1,000-3,000 row
# selection (one prompt per subset; README, "Differences from the reference code")
PAPER_INPUT_TOKENS = (1.7e6, 1.9e6)
PAPER_ROWS = (1000, 3000)
PAPER_TOKENS_PER_ROW = (PAPER_INPUT_TOKENS[0] / PAPER_ROWS[1], PAPER_INPUT_TOKENS[1] / PAPER_ROWS[0])

EXTRA_CSS = """
.maps{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:.6em}
.maps figure{margin:0}.maps figcaption{font-size:.85em;color:#555}
"""

COLUMNS = [
    ("coverage_max", "coverage max"), ("coverage_p99", "coverage p99"), ("coverage_mean", "coverage mean"),
    ("diversity", "diversity"), ("mean_length", "mean length (chars)"),
    ("requests", "LLM requests"), ("input_tokens", "input tokens"), ("output_tokens", "output tokens"),
    ("usd", "USD"), ("tokens_per_selected", "input tokens / selected row"), ("seconds", "seconds"),
]


def _funnel(stats: dict) -> list[tuple[str, int]]:
    read = int(stats.get("read", 0))
    qt = int(stats.get("quarantined_total", sum((stats.get("quarantined") or {}).values())))
    exact = int(stats.get("exact_duplicates", 0))
    near = int(stats.get("near_duplicates", 0))
    kept = int(stats.get("kept", read - qt - exact - near))
    return [("read", read), ("- quarantined", read - qt), ("- exact dups", read - qt - exact),
            ("- near dups", read - qt - exact - near), ("kept", kept)]


def representation_table(results: dict) -> str:
    """How each selection represents the pool (report/quality.py), each figure with what it
    favours and random's band (3 seeds); "–" where a run did not measure it."""
    from selectllm.report.quality import FIGURES

    names = list(results)
    if not any(results[n].get("topic_tvd") is not None for n in names):
        return ""
    band = next((results[n].get("random_band") for n in names if results[n].get("random_band")), None) or {}
    keys = [*FIGURES, "coverage_max", "coverage_mean"]
    favours = {**FIGURES, "coverage_max": "worst-served pool row's distance to the selection (lower favours tail-seeking)",
               "coverage_mean": "mean pool row's distance to the selection (lower favours representing the bulk)"}

    def cell(v):
        return "–" if v is None else f"{v:.3f}"

    rows = [[k, *[results[n].get(k) for n in names],
             "–" if not band.get(k) else f"{cell(band[k][0])} – {cell(band[k][1])}", favours[k]] for k in keys]
    return ('<h3 id="representation">How each selection represents the pool</h3>'
            + table(["figure", *names, "random, 3 seeds", "what it favours"], rows, numeric=set(range(1, len(names) + 1)))
            + '<p class="muted">Measured against a seeded sample of the pool (at most 20,000 rows); a figure '
              'outside random\'s band differs from the pool more than a random selection does.</p>')


def _examples(ctx, ids: np.ndarray, rows: np.ndarray) -> list[dict]:
    from selectllm.select.tables import lookup_rows, tasks_of

    want = [str(ids[r]) for r in rows[:EXAMPLES]]
    found = lookup_rows(ctx.input("rows"), want, ["instruction", "input"], tasks_of(ctx)) if want else {}
    return [found[w] for w in want if w in found]


def build_compare_html(ctx, results: dict, extras: dict, x: np.ndarray, cov_idx: np.ndarray,
                       nearest: dict, selections: dict, labels: np.ndarray | None, k: int,
                       ids: np.ndarray | None = None, n_pool: int | None = None) -> tuple[str, int]:
    """The page and its number of plots.  ``x`` may hold only some pool rows (the coverage sample
    and the selections: ``cov_idx`` and ``selections`` index it); ``n_pool`` is then the pool's size."""
    run, cfg = ctx.run, ctx.cfg
    names = list(results)
    parts: list[str] = []
    plots = 0
    n = len(x) if n_pool is None else n_pool
    parts.append("<h1>SelectLLM strategy comparison</h1>")
    header = [("run dir", run.url), ("pool rows", num(n)), ("budget", num(cfg.select.budget)),
              ("strategies", ", ".join(names)), ("clusters (cluster stage)", num(k)),
              ("LLM", f"{cfg.llm.provider} / {cfg.llm.model}"),
              ("price", f"${cfg.llm.price.input_per_mtok}/M input, ${cfg.llm.price.output_per_mtok}/M output tokens"),
              ("cap", f"llm.max_usd = ${cfg.llm.max_usd:.2f} per strategy")]
    parts.append(kv(header))

    # ---- the table
    parts.append('<h2 id="table">Comparison</h2>')
    rows = [[name, *[results[name].get(key) for key, _ in COLUMNS]] for name in names]
    parts.append(table(["strategy", *[label for _, label in COLUMNS]], rows, numeric=set(range(1, len(COLUMNS) + 1))))
    parts.append(
        '<p class="muted">Coverage: cosine distance from every pool row to its nearest selected row (lower is '
        'better)' + (f", on a deterministic sample of {len(cov_idx):,} rows" if len(cov_idx) < n else "") +
        '. Diversity: mean pairwise cosine distance of the selection. Cluster coverage: share of the cluster '
        'stage\'s clusters with a selected row. Spend: what the selection\'s LLM answers cost (cached answers '
        'at the price they were bought for). Seconds: the strategy\'s own select logic.</p>')
    if "selectllm-paper" in results and results["selectllm-paper"].get("tokens_per_selected") is not None:
        tps = results["selectllm-paper"]["tokens_per_selected"]
        lo, hi = PAPER_TOKENS_PER_ROW
        parts.append(f'<p id="paper-tokens">selectllm-paper used <b>{tps:,.0f}</b> input tokens per selected row; '
                     f'the paper\'s runs used about {PAPER_INPUT_TOKENS[0] / 1e6:.1f}–{PAPER_INPUT_TOKENS[1] / 1e6:.1f}M '
                     f'input tokens for {PAPER_ROWS[0]:,}–{PAPER_ROWS[1]:,} rows, i.e. {lo:,.0f}–{hi:,.0f} per row.</p>')
    parts.append(representation_table(results))
    for name in names:
        e = extras.get(name) or {}
        if e:
            flat = ", ".join(f"{a}={b}" for a, b in e.items() if isinstance(b, (int, float, str)))
            parts.append(f'<p class="muted">{esc(name)}: {esc(flat)}</p>')

    # ---- curves and bars
    parts.append('<h2 id="coverage">Coverage curves</h2>')
    parts.append(img("plot-coverage", "Coverage curves: share of the pool within cosine distance r of each "
                     "strategy's selection", P.coverage_curve_plot(nearest)))
    plots += 1

    def col(key: str) -> list[float]:
        return [float(results[s].get(key) or 0.0) for s in names]

    parts.append(img("plot-quality", "Coverage mean, coverage max, diversity and the share of picks from the sparsest 10% per strategy",
                     P.spend_panels(names, [("Coverage mean (lower is better)", "cosine distance", col("coverage_mean"), "{:.3f}"),
                                            ("Coverage max (lower is better)", "cosine distance", col("coverage_max"), "{:.3f}"),
                                            ("Diversity (higher is more spread)", "mean pairwise distance", col("diversity"), "{:.3f}"),
                                            ("Picks from the sparsest 10% (random ≈ 0.10)", "share", col("sparse_share"), "{:.2f}")])))
    plots += 1
    parts.append('<h2 id="spend">Spend per strategy</h2>')
    parts.append(img("plot-spend", "LLM requests, input tokens, dollars and seconds per strategy",
                     P.spend_panels(names, [("LLM requests", "requests", col("requests"), "{:,.0f}"),
                                            ("Input tokens", "tokens", col("input_tokens"), "{:,.0f}"),
                                            ("LLM spend", "USD", col("usd"), "${:.4f}"),
                                            ("Wall time", "seconds", col("seconds"), "{:.1f}")])))
    plots += 1

    # ---- maps
    parts.append('<h2 id="maps">The pool and each selection (2-D PCA projection)</h2>')
    if len(x) >= 2 and x.shape[1] >= 2:
        from sklearn.decomposition import PCA

        shown = cov_idx[M.sample_indices(len(cov_idx), MAP_MAX_ROWS, seed=1)]
        union = np.unique(np.concatenate([shown, *selections.values()]))
        pca = PCA(n_components=2, random_state=0).fit(x[shown])
        xy = pca.transform(x[union])
        in_shown = np.isin(union, shown)
        parts.append('<div class="maps">')
        for name in names:
            is_sel = np.isin(union, selections[name])
            mask = in_shown | is_sel
            parts.append(f"<figure>{img('plot-map-' + name, f'2-D PCA map of the pool with the rows selected by {name}', P.map_plot(xy[mask], is_sel[mask], name, size=(4.6, 3.9)))}"
                         f"<figcaption>{esc(name)}: {len(selections[name]):,} rows</figcaption></figure>")
            plots += 1
        parts.append("</div>")
        parts.append(f'<p class="muted">Grey: {int(in_shown.sum()):,} pool rows (deterministic sample); red: the '
                     f'selection. Axes: the first two principal components of the pool.</p>')

    # ---- the pool: funnel, clusters, stages
    parts.append('<h2 id="pool">The pool</h2>')
    stats = ctx.input("stats").read_json() if ctx.input("stats").exists() else None
    if stats:
        parts.append(img("plot-funnel", "Dedup funnel: rows read, quarantined, exact and near duplicates removed, kept",
                         P.funnel_plot(_funnel(stats))))
        plots += 1
    if ctx.input("centers").exists():
        sizes = ctx.input("centers").read().column("size").to_numpy()
        parts.append(img("plot-clusters", "Cluster size histogram of the cluster stage",
                         P.histogram_plot(sizes, f"Cluster sizes (k = {len(sizes):,})", "rows in cluster")))
        plots += 1
    stages = (run.manifest().get("stages") or {})
    upstream = set(ctx.spec.upstream) if ctx.spec is not None else set()
    snames = [s for s in stages if s in upstream] + [f"compare: {s}" for s in names]  # in run order
    secs = [float(stages[s].get("seconds") or 0.0) for s in snames if s in stages] + col("seconds")
    usd = [0.0] * (len(snames) - len(names)) + col("usd")
    parts.append(img("plot-stages", "Spend per stage: wall-clock seconds and LLM dollars of the shared stages and "
                     "of each strategy", P.spend_panels(snames, [("Seconds", "seconds", secs, "{:.1f}"),
                                                                   ("LLM spend", "USD", usd, "${:.4f}")])))
    plots += 1

    # ---- examples
    if ids is not None:
        parts.append(f'<h2 id="examples">First {EXAMPLES} selected rows of each strategy (by id)</h2>')
        for name in names:
            ex = _examples(ctx, ids, selections[name])
            parts.append(f"<h3>{esc(name)}</h3>")
            parts.append(table(["instruction", "input"], [[trunc(r["instruction"]), trunc(r["input"])] for r in ex]))

    return page(f"SelectLLM compare – {run.url}", CSS + EXTRA_CSS, parts), plots


def write_compare_html(ctx, path: str, results: dict, extras: dict, x: np.ndarray,
                       cov_idx: np.ndarray, nearest: dict, selections: dict, labels: np.ndarray | None, k: int,
                       ids: np.ndarray | None = None, n_pool: int | None = None) -> int:
    run = ctx.run
    html, plots = build_compare_html(ctx, results, extras, x, cov_idx, nearest, selections, labels, k, ids, n_pool)
    run.fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with run.fs.open(path, "wb") as f:
        f.write(html.encode("utf-8"))
    return plots
