"""The report page: one self-contained HTML page and the metrics of a run (written by ``report/stage.py``).

Reads only the report stage's declared inputs once (:func:`read`; ``ctx.input(name)``; any that is
not committed gets a "not run" note) into a :class:`Report`; the page is :data:`SECTIONS`, one
function per section (a new section: one function and one entry), built from the widgets of
``widgets.py``.  Computes coverage/diversity (``metrics.py``), draws plots (``plots.py``,
inline base64 PNGs), adds the selection explorer (``explorer.py``: every LLM group with its
candidates, filters, search and a clickable map; inline JSON + plain JS) and writes
``report.html`` + ``metrics.json`` into the staging folder; the pipeline moves them to the run
directory's root.  The page works offline: inline CSS and script, no external resources.
Embeddings are streamed file by file and only a deterministic sample (plus every selected row and
the cluster centers) is kept in memory, so this stays cheap on pools of hundreds of millions of rows.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from selectllm.contract import StageInput
from selectllm.io import release_arrow_memory
from selectllm.report import explorer as X
from selectllm.report import metrics as M
from selectllm.report import plots as P
from selectllm.report.widgets import CSS, cluster_link, esc, img, kv, not_run, num, page, table, trunc
from selectllm.schemas import DECISION_STATUSES

MAP_MAX_ROWS = 20_000
SAMPLE_TABLE_ROWS = 20
QUARANTINE_EXAMPLES_PER_REASON = 3
QUARANTINE_SCAN_MAX_ROWS = 200_000  # examples only; counts come from stats.json
SEED = 0
SPEND_COLUMNS = ["group_id", "status", "input_tokens", "output_tokens", "usd"]  # decisions, without the id lists


# ----------------------------------------------------------------------------- reading
class Inputs:
    """The report's declared inputs that are committed; ``get(name)`` is None for the others."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        names = [*ctx.spec.inputs, *ctx.spec.optional_inputs]
        self.present = {n: ctx.has_input(n) for n in names}

    def get(self, name: str) -> StageInput | None:
        return self.ctx.input(name) if self.present.get(name) else None

    def stage(self, name: str) -> str:
        """The stage that writes an input (for "not run" notes)."""
        return self.ctx.input(name).stage

    def missing(self) -> list[str]:
        """Stages none of whose declared inputs is committed, then missing root files (selected.jsonl)."""
        out: list[str] = []
        for name in self.ctx.spec.inputs:
            if self.present[name]:
                continue
            inp = self.ctx.input(name)
            label = inp.output.path if inp.output.root else inp.stage
            if label not in out:
                out.append(label)
        return out


def _read_selected(inp: StageInput | None) -> list[dict] | None:
    if inp is None:
        return None
    rows = []
    with inp.run.fs.open(inp.path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def _masked(selected: list[dict], rows: StageInput | None, cfg) -> list[dict]:
    """selected.jsonl's rows with the masked text of the dedup rows (``privacy.output: original``
    puts the source text in selected.jsonl only: the report shows what the LLM saw)."""
    from selectllm.select.tables import lookup_rows

    if rows is None:  # no masked text to show: none at all
        return [{k: v for k, v in r.items() if k not in ("instruction", "input", *cfg.input.keep)} for r in selected]
    text = [c for c in ("instruction", "input", *cfg.input.keep) if c in rows.dataset().schema.names]
    found = lookup_rows(rows, [str(r["id"]) for r in selected], text, tasks=None)  # a local stage: in this process
    return [{**r, **{c: (found.get(str(r["id"])) or {}).get(c) for c in text}} for r in selected]


def _quarantine_examples(inp: StageInput | None) -> dict[str, list[dict]]:
    """A few quarantined rows per reason (scans at most QUARANTINE_SCAN_MAX_ROWS rows)."""
    out: dict[str, list[dict]] = {}
    if inp is None:
        return out
    scanned = 0
    for path in inp.files():
        with inp.run.fs.open(path, "rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=8192, columns=["raw", "source", "source_row", "reason"]):
                for row in batch.to_pylist():
                    ex = out.setdefault(str(row["reason"]), [])
                    if len(ex) < QUARANTINE_EXAMPLES_PER_REASON:
                        ex.append(row)
                scanned += batch.num_rows
                if scanned >= QUARANTINE_SCAN_MAX_ROWS:
                    return out
    return out


def _fixed_size_to_numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    d = arr.type.list_size
    values = arr.flatten().to_numpy(zero_copy_only=False)  # flatten honours slice offsets
    return values.astype(np.float32, copy=False).reshape(len(arr), d)


@dataclass
class Embeddings:
    """The kept rows of the pool: a deterministic coverage sample, a map sample and the selection;
    and the vectors of the cluster centers asked for (for the explorer's map)."""

    pool_rows: int = 0
    dim: int = 0
    ids: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    in_cov: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    in_map: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    is_sel: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    centers: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def cov_sampled(self) -> bool:
        return int(self.in_cov.sum()) < self.pool_rows


def _in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if sorted_set.size == 0:
        return np.zeros(values.shape, bool)
    pos = np.searchsorted(sorted_set, values).clip(0, sorted_set.size - 1)
    return sorted_set[pos] == values


def _concat_release(parts: list[np.ndarray]) -> np.ndarray:
    """One array of ``parts``, emptying the list as it goes (one copy of the sample at a time)."""
    out = np.concatenate(parts)
    parts.clear()
    return out


def _read_embeddings(inp: StageInput | None, selected_ids: list[str], center_ids: list[str] = ()) -> Embeddings | None:
    files = inp.files() if inp is not None else []
    if not files:
        return None
    fs = inp.run.fs
    sizes = []
    for path in files:
        with fs.open(path, "rb") as fh:
            sizes.append(pq.ParquetFile(fh).metadata.num_rows)
    n = int(sum(sizes))
    cov_idx = M.sample_indices(n, M.COVERAGE_MAX_ROWS, SEED)
    map_idx = cov_idx[M.sample_indices(len(cov_idx), MAP_MAX_ROWS, SEED + 1)]
    value_set = pa.array(sorted(set(selected_ids)), type=pa.string())
    center_set = pa.array(sorted(set(center_ids)), type=pa.string())
    seen_sel: set[str] = set()
    centers: dict[str, np.ndarray] = {}
    ids: list[str] = []
    vecs, covs, maps, sels = [], [], [], []
    dim = 0
    offset = 0
    for path in files:
        with fs.open(path, "rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=65536, columns=["id", "embedding"],
                                                         use_threads=False):
                m = batch.num_rows
                gidx = np.arange(offset, offset + m, dtype=np.int64)
                offset += m
                dim = batch.schema.field("embedding").type.list_size
                in_cov = _in_sorted(gidx, cov_idx)
                in_map = _in_sorted(gidx, map_idx)
                id_col = batch.column("id")
                is_sel = pc.fill_null(pc.is_in(id_col, value_set=value_set.cast(id_col.type)), False)
                is_sel = is_sel.to_numpy(zero_copy_only=False)
                if len(center_set):
                    is_center = pc.fill_null(pc.is_in(id_col, value_set=center_set.cast(id_col.type)), False)
                    if pc.any(is_center).as_py():
                        hit = batch.filter(is_center)
                        for rid, vec in zip(hit.column("id").to_pylist(), _fixed_size_to_numpy(hit.column("embedding"))):
                            centers.setdefault(rid, vec)
                keep = in_cov | is_sel
                if not keep.any():
                    continue
                kept = batch.filter(pa.array(keep))
                kept_ids = kept.column("id").to_pylist()
                sel_k = is_sel[keep].copy()
                for i, rid in enumerate(kept_ids):  # a selected id counts once even if repeated
                    if sel_k[i]:
                        if rid in seen_sel:
                            sel_k[i] = False
                        else:
                            seen_sel.add(rid)
                ids.extend(kept_ids)
                vecs.append(_fixed_size_to_numpy(kept.column("embedding")))
                covs.append(in_cov[keep])
                maps.append(in_map[keep])
                sels.append(sel_k)
        release_arrow_memory()  # what the file's batches left in Arrow's pool: only the sample stays
    if not vecs:
        return Embeddings(pool_rows=n, dim=dim, vectors=np.zeros((0, dim), np.float32), centers=centers)
    return Embeddings(
        pool_rows=n,
        dim=dim,
        ids=ids,
        vectors=M.normalize(_concat_release(vecs), inplace=True),
        in_cov=np.concatenate(covs),
        in_map=np.concatenate(maps),
        is_sel=np.concatenate(sels),
        centers=centers,
    )


def _cluster_sizes(centers: StageInput | None, assignments: StageInput | None) -> pa.Table | None:
    """The centers output (cluster_id, id, size, radius), or sizes rebuilt from the assignments."""
    if centers is not None:
        return centers.read()
    if assignments is None:
        return None
    assign = assignments.read(columns=["cluster_id", "distance"])
    g = assign.group_by("cluster_id").aggregate([("distance", "count"), ("distance", "max")])
    return pa.table({
        "cluster_id": g.column("cluster_id"),
        "id": pa.nulls(g.num_rows, pa.string()),
        "size": g.column("distance_count").cast(pa.int64()),
        "radius": g.column("distance_max"),
    })


# ----------------------------------------------------------------------------- metrics
def _selection_metrics(decisions: pa.Table | None, selected: list[dict] | None, cfg) -> dict:
    strategy = cfg.select.strategy
    if selected:
        strategy = selected[0].get("strategy") or strategy
    out: dict[str, Any] = {
        "strategy": strategy,
        "budget": cfg.select.budget,
        "selected": len(selected) if selected is not None else None,
        "decisions": 0,
        "by_status": {s: 0 for s in DECISION_STATUSES},
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "usd": 0.0,
        "max_usd": cfg.llm.max_usd,
        "by_status_spend": {},
    }
    if decisions is None or decisions.num_rows == 0:
        return out
    status = np.asarray(decisions.column("status").to_pylist(), dtype=object)
    tin = pc.fill_null(decisions.column("input_tokens"), 0).to_numpy().astype(np.int64)
    tout = pc.fill_null(decisions.column("output_tokens"), 0).to_numpy().astype(np.int64)
    usd = pc.fill_null(decisions.column("usd"), 0.0).to_numpy().astype(np.float64)
    req = (tin + tout) > 0
    spend = {}
    for s in list(DECISION_STATUSES) + sorted(set(status) - set(DECISION_STATUSES)):
        m = status == s
        out["by_status"][s] = int(m.sum())
        spend[s] = {
            "decisions": int(m.sum()),
            "requests": int((m & req).sum()),
            "input_tokens": int(tin[m].sum()),
            "output_tokens": int(tout[m].sum()),
            "usd": float(usd[m].sum()),
        }
    out.update(
        decisions=int(decisions.num_rows),
        requests=int(req.sum()),
        input_tokens=int(tin.sum()),
        output_tokens=int(tout.sum()),
        usd=float(usd.sum()),
        by_status_spend=spend,
    )
    return out


# ----------------------------------------------------------------------------- the sections
@dataclass
class Report:
    """What the sections read (each input read once, in :func:`read`) and what they add up: the
    metrics and the number of plots.  A section is a function of a Report returning its HTML."""

    ctx: Any
    inputs: Inputs
    manifest: dict
    stats: dict | None
    selected: list[dict] | None
    decisions: StageInput | None
    spend_table: pa.Table | None
    clusters: pa.Table | None
    map_clusters: pa.Table | None  # the largest clusters with a center row: rings on the explorer's map
    emb: Embeddings | None
    sel_metrics: dict
    explorer: X.Explorer | None
    per_cluster: dict[int, int]  # selected rows per cluster
    metrics: dict
    plots: int = 0
    explorer_map: str = ""  # the explorer's SVG map, drawn by the pool map section

    @property
    def run(self):
        return self.ctx.run

    @property
    def cfg(self):
        return self.ctx.cfg

    @property
    def stages(self) -> dict:
        return self.manifest.get("stages", {}) or {}

    def plot(self, plot_id: str, alt: str, b64: str) -> str:
        """An inline plot, counted."""
        self.plots += 1
        return img(plot_id, alt, b64)


def read(ctx) -> Report:
    """Read the report stage's declared inputs once, for every section."""
    run, cfg = ctx.run, ctx.cfg
    manifest = run.manifest()
    inputs = Inputs(ctx)
    stats = inputs.get("stats").read_json() if inputs.get("stats") else None
    selected = _read_selected(inputs.get("selected"))
    if selected and cfg.privacy.mode != "off" and cfg.privacy.output == "original":
        selected = _masked(selected, inputs.get("rows"), cfg)  # selected.jsonl has the source text
    decisions = inputs.get("decisions")
    spend_table = decisions.read(columns=SPEND_COLUMNS) if decisions is not None else None
    clusters = _cluster_sizes(inputs.get("centers"), inputs.get("assignments"))
    map_clusters = None
    if clusters is not None and clusters.num_rows:
        with_center = clusters.filter(pc.is_valid(clusters.column("id")))
        order = np.lexsort((with_center.column("cluster_id").to_numpy(), -with_center.column("size").to_numpy()))
        map_clusters = with_center.take(pa.array(order[: X.MAP_MAX_CLUSTERS], pa.int64()))
    center_ids = map_clusters.column("id").to_pylist() if map_clusters is not None else []
    emb = _read_embeddings(inputs.get("vectors"), [str(r.get("id")) for r in selected or []], center_ids)
    sel_metrics = _selection_metrics(spend_table, selected, cfg)
    per_cluster: dict[int, int] = {}
    for r in selected or []:
        if r.get("cluster_id") is not None:
            per_cluster[int(r["cluster_id"])] = per_cluster.get(int(r["cluster_id"]), 0) + 1
    metrics: dict[str, Any] = {
        "dedup": stats,
        "clusters": None,
        "selection": {k: v for k, v in sel_metrics.items() if k != "by_status_spend"},
        "coverage": None,
        "diversity": None,
        "stages": {name: e.get("seconds") for name, e in (manifest.get("stages", {}) or {}).items()},
        "not_run": inputs.missing(),
    }
    return Report(ctx=ctx, inputs=inputs, manifest=manifest, stats=stats, selected=selected, decisions=decisions,
                  spend_table=spend_table, clusters=clusters, map_clusters=map_clusters, emb=emb,
                  sel_metrics=sel_metrics,
                  explorer=X.collect(decisions, inputs.get("rows"), selected, sel_metrics["strategy"]),
                  per_cluster=per_cluster, metrics=metrics)


def header_section(r: Report) -> str:
    cfg = r.cfg
    parts = ["<h1>SelectLLM run report</h1>", kv([
        ("run dir", r.run.url),
        ("strategy", r.sel_metrics["strategy"]),
        ("budget", num(cfg.select.budget)),
        ("selected", num(r.sel_metrics["selected"]) if r.selected is not None else "not run"),
        ("LLM", f"{cfg.llm.provider} / {cfg.llm.model}"),
        ("updated", r.manifest.get("updated_at", "–")),
    ])]
    if r.metrics["not_run"]:
        parts.append(f'<p class="note">Not run yet: {esc(", ".join(r.metrics["not_run"]))}.</p>')
    parts.append('<p><a href="#explorer">Selection explorer</a>: every group with its candidates, filters and search.</p>')
    return "\n".join(parts)


def dedup_section(r: Report) -> str:
    parts = ['<h2 id="dedup">Dedup</h2>']
    stats = r.stats
    if stats is None:
        parts.append(not_run(r.inputs.stage("stats"), "Dedup funnel"))
        return "\n".join(parts)
    read_ = int(stats.get("read", 0))
    qt = int(stats.get("quarantined_total", sum((stats.get("quarantined") or {}).values())))
    exact = int(stats.get("exact_duplicates", 0))
    near = int(stats.get("near_duplicates", 0))
    seen = int(stats.get("seen_duplicates", 0))  # seen by earlier runs of the programme (history)
    kept = int(stats.get("kept", read_ - qt - exact - near - seen))
    steps = [("read", read_), ("- quarantined", read_ - qt), ("- exact dups", read_ - qt - exact),
             *([("- seen before", read_ - qt - exact - seen)] if seen else []),
             ("- near dups", read_ - qt - exact - seen - near), ("kept", kept)]
    parts.append(r.plot("plot-funnel", "Dedup funnel: rows read, quarantined, exact and near duplicates removed, kept",
                        P.funnel_plot(steps)))
    parts.append(table(["step", "rows"], [[s, v] for s, v in steps], numeric={1}))
    if read_ != kept + qt + exact + near + seen:
        parts.append(f'<p class="note">Counts do not add up: read {read_:,} ≠ kept + duplicates + quarantined '
                     f'({kept + qt + exact + near + seen:,}).</p>')
    by_reason = stats.get("quarantined") or {}
    examples = _quarantine_examples(r.inputs.get("quarantine"))
    parts.append("<h3>Quarantine</h3>")
    if not by_reason and not examples:
        parts.append('<p class="muted">No row was quarantined.</p>')
    else:
        rows = []
        for reason in sorted(set(by_reason) | set(examples)):
            for i, ex in enumerate(examples.get(reason, []) or [None]):
                rows.append([
                    reason if i == 0 else "",
                    by_reason.get(reason, 0) if i == 0 else "",
                    trunc(ex["raw"]) if ex else "",
                    f'{ex["source"]}:{ex["source_row"]}' if ex else "",
                ])
        parts.append(table(["reason", "rows", "example (first 200 chars)", "source:row"], rows, numeric=set()))
    return "\n".join(parts)


def privacy_section(r: Report) -> str:
    """What privacy masked before anything was written (counts only: values never reach the report)."""
    p = (r.stats or {}).get("privacy")
    if p is None:
        return ""
    q = (r.stats or {}).get("quarantined") or {}
    parts = ['<h2 id="privacy">Privacy</h2>', kv([
        ("mode", p.get("mode")), ("entities", ", ".join(p.get("entities") or [])),
        ("rows with findings", num(p.get("rows_with_findings", 0))),
        ("quarantined: secret", num(q.get("secret", 0))),
        ("quarantined: detector timeout", num(q.get("privacy_timeout", 0))),
        ("selected.jsonl", r.cfg.privacy.output),
    ])]
    values, rows = p.get("values") or {}, p.get("rows") or {}
    if values:
        parts.append(table(["entity", "values masked", "rows"], [[t, values[t], rows.get(t, 0)] for t in sorted(values)],
                           numeric={1, 2}))
    else:
        parts.append('<p class="muted">Nothing was found to mask.</p>')
    parts.append('<p class="muted">Every row was masked in dedup\'s reading tasks: the LLM, the answer cache, this '
                 'report and every file of the run directory see placeholders such as &lt;EMAIL_1&gt;.</p>')
    return "\n".join(parts)


def clusters_section(r: Report) -> str:
    parts = ['<h2 id="clusters">Clusters</h2>']
    clusters = r.clusters
    if clusters is None or clusters.num_rows == 0:
        parts.append(not_run(r.inputs.stage("centers"), "Clusters"))
        return "\n".join(parts)
    sizes = clusters.column("size").to_numpy().astype(np.int64)
    radius = pc.fill_null(clusters.column("radius"), np.nan).to_numpy().astype(np.float64)
    c = r.metrics["clusters"] = {
        "k": int(clusters.num_rows),
        **M.size_stats(sizes),
        "radius_max": M.finite_or_none(np.nanmax(radius) if np.isfinite(radius).any() else None),
    }
    parts.append(r.plot("plot-clusters", "Cluster size histogram: number of clusters by size",
                        P.histogram_plot(sizes, f"Cluster sizes (k = {len(sizes):,})", "rows in cluster")))
    parts.append(table(["k", "size min", "size median", "size max", "radius max"],
                       [[c["k"], c["size_min"], c["size_median"], c["size_max"], c["radius_max"]]],
                       numeric={0, 1, 2, 3, 4}))
    order = np.lexsort((clusters.column("cluster_id").to_numpy(), -sizes))[:10]
    cid = clusters.column("cluster_id").to_pylist()
    center = clusters.column("id").to_pylist()
    parts.append("<h3>Top 10 largest clusters</h3>")
    parts.append(table(
        ["cluster_id", "center id", "size", "radius", "selected"],
        [[cluster_link(cid[i]), center[i] or "–", int(sizes[i]), M.finite_or_none(radius[i]),
          r.per_cluster.get(cid[i], 0)] for i in order],
        numeric={2, 3, 4},
    ))
    return "\n".join(parts)


def map_section(r: Report) -> str:
    """The pool map, coverage and diversity (and the explorer's map, in the same projection)."""
    parts = ['<h2 id="map">Pool map and coverage</h2>']
    emb, selected, metrics = r.emb, r.selected, r.metrics
    if emb is None:
        parts.append(not_run(r.inputs.stage("vectors"), "Pool map and coverage"))
        return "\n".join(parts)
    sel_vecs = emb.vectors[emb.is_sel]
    if selected is not None and sel_vecs.shape[0] < len({str(s.get("id")) for s in selected}):
        parts.append(f'<p class="note">{len(selected) - sel_vecs.shape[0]:,} selected ids have no embedding.</p>')
    nearest = None
    if emb.in_cov.any() and sel_vecs.shape[0]:
        # once, over the sample's rows in place (no copy of the sample): the metrics and the curve
        nearest = M.nearest_distance(emb.vectors, sel_vecs, rows=np.flatnonzero(emb.in_cov))
        metrics["coverage"] = {**M.distance_summary(nearest), "rows": int(emb.in_cov.sum()),
                               "pool_rows": emb.pool_rows, "sampled": emb.cov_sampled}
    metrics["diversity"] = M.diversity(sel_vecs) if sel_vecs.shape[0] else None
    map_mask = emb.in_map | emb.is_sel
    if map_mask.sum() >= 2 and emb.dim >= 2:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=SEED).fit(emb.vectors[map_mask])
        xy = pca.transform(emb.vectors[map_mask])
        shown = int((emb.in_map & ~emb.is_sel).sum())
        parts.append(r.plot("plot-map", "2-D PCA map of the pool with the selected instructions highlighted, "
                            "and the coverage curve: share of the pool within distance r of the selection",
                            P.map_coverage_plot(xy, emb.is_sel[map_mask],
                                                f"Pool (PCA of {shown:,} of {emb.pool_rows:,} rows) and selection",
                                                nearest)))
        r.explorer_map = _explorer_map(pca, emb, selected or [], r.map_clusters, r.per_cluster)
    cov = metrics["coverage"]
    rows = [
        ["pool rows", emb.pool_rows], ["embedding dim", emb.dim], ["selected with embedding", int(sel_vecs.shape[0])],
        ["coverage max (cosine distance to nearest selected)", cov and cov["max"]],
        ["coverage p99", cov and cov["p99"]], ["coverage mean", cov and cov["mean"]],
        ["diversity (mean pairwise cosine distance of the selection)", metrics["diversity"]],
    ]
    parts.append(table(["metric", "value"], rows, numeric={1}))
    if cov and cov["sampled"]:
        parts.append(f'<p class="muted">Coverage computed on a deterministic sample of {cov["rows"]:,} of '
                     f'{emb.pool_rows:,} pool rows (seed {SEED}).</p>')
    return "\n".join(parts)


def _representation(r: Report) -> dict | None:
    """The quality figures of the selection against a seeded sample of the coverage rows (at most
    ``quality.REF_ROWS``, their texts looked up by id) and random's band (report/quality.py)."""
    from selectllm.report import quality as Q
    from selectllm.select.tables import lookup_rows

    emb, rows_input = r.emb, r.inputs.get("rows")
    if emb is None or not r.selected or rows_input is None:
        return None
    cov = np.flatnonzero(emb.in_cov)
    sel = np.flatnonzero(emb.is_sel)
    if len(cov) < 2 or not len(sel):
        return None
    ref_rows = cov[M.sample_indices(len(cov), Q.REF_ROWS, SEED)]
    ids = [emb.ids[i] for i in ref_rows]
    names = set(rows_input.dataset().schema.names)
    texts = lookup_rows(rows_input, ids, [c for c in ("instruction", "input", "source") if c in names], tasks=None)
    rules = r.cfg.dedup.quality.rules_object()
    ref = Q.Reference(Q.rows_of(emb.vectors[ref_rows], [texts.get(i, {}) for i in ids], rules))
    by_id = {str(s.get("id")): s for s in r.selected}
    out = ref.profile(Q.rows_of(emb.vectors[sel], [by_id.get(emb.ids[i], {}) for i in sel], rules))
    return {**out, "random_band": ref.random_band(len(sel)), "reference_rows": len(ref_rows)}


def representation_section(r: Report) -> str:
    """How the selection represents the pool, each figure with what it favours and random's band;
    and who chose the selected rows (``selected.jsonl``'s status)."""
    from selectllm.report.quality import FIGURES

    parts = ['<h2 id="representation">How the selection represents the pool</h2>']
    rep = r.metrics["representation"] = _representation(r)
    if rep is None:
        parts.append('<p class="muted">Needs the embeddings, the dedup rows and a selection.</p>')
    else:
        band = rep["random_band"] or {}

        def span(k):
            return "–" if not band.get(k) else f"{band[k][0]:.3f} – {band[k][1]:.3f}"

        parts.append(table(["figure", "selection", "random, 3 seeds", "what it favours"],
                           [[k, rep[k], span(k), FIGURES[k]] for k in FIGURES], numeric={1}))
        parts.append(f'<p class="muted">Measured against a seeded sample of {rep["reference_rows"]:,} pool rows; a '
                     'figure outside random\'s band differs from the pool more than a random selection of the same '
                     'size does.</p>')
    status: dict[str, int] = {}
    for s in r.selected or []:
        status[str(s.get("status") or "unknown")] = status.get(str(s.get("status") or "unknown"), 0) + 1
    r.metrics["picks_by"] = status or None  # the LLM's health: the positions section (select stage counts)
    if status:
        total = sum(status.values())
        parts.append("<h3>Who chose the selected rows</h3>")
        parts.append(table(["chosen by", "rows", "share"], [[k, v, v / total] for k, v in sorted(status.items())],
                           numeric={1, 2}))
    return "\n".join(parts)


def spend_section(r: Report) -> str:
    parts = ['<h2 id="spend">Selection and LLM spend</h2>']
    sel, spend_table = r.sel_metrics, r.spend_table
    if spend_table is None:
        parts.append(not_run(r.inputs.stage("decisions"), "Selection decisions"))
        return "\n".join(parts)
    if spend_table.num_rows == 0:
        parts.append(f'<p class="muted">No LLM decisions: strategy <b>{esc(sel["strategy"])}</b> '
                     f'does not call an LLM.</p>')
    else:
        by = sel["by_status"]
        labels = [s for s in by if by[s] or s in DECISION_STATUSES]
        parts.append(r.plot("plot-spend", "Bar plot of selection decisions by status (ok, fallback, budget_stopped, error)",
                            P.bar_plot(labels, [by[s] for s in labels], "Decisions by status", "groups",
                                       [P.STATUS_COLORS.get(s, P.BAR_COLOR) for s in labels])))
    spend_rows = [[s, v["decisions"], v["requests"], v["input_tokens"], v["output_tokens"], v["usd"]]
                  for s, v in sel["by_status_spend"].items()]
    spend_rows.append(["total", sel["decisions"], sel["requests"], sel["input_tokens"], sel["output_tokens"], sel["usd"]])
    parts.append(table(["status", "decisions", "requests", "input tokens", "output tokens", "usd"],
                       spend_rows, numeric={1, 2, 3, 4, 5}))
    parts.append(f'<p>Spent <b>${sel["usd"]:.4f}</b> of the <b>${r.cfg.llm.max_usd:.2f}</b> cap '
                 f'(<code>llm.max_usd</code>).</p>')
    return "\n".join(parts)

def history_section(r: Report) -> str:
    """The programme's history (config key ``history``): this run beside the earlier ones."""
    from selectllm.report import history_section as H

    html_, r.metrics["history"] = H.section(r.ctx, esc, table)
    return html_


def positions_section(r: Report) -> str:
    """Where the LLM's picks stood in the shown order (the select stage's ``llm_health`` counts),
    against the uniform share; the run's health line.  Left out when the LLM was not asked."""
    from selectllm.select.health import health_line

    counts = (r.stages.get(r.inputs.stage("decisions")) or {}).get("counts") or {}
    h = counts.get("llm_health")
    if not h or not h.get("llm_groups"):
        return ""
    r.metrics["llm_health"] = h
    parts = ['<h2 id="positions">Where picks stood in the shown order</h2>',
             f"<p>{esc(health_line(h, counts.get('structured_output')))}</p>"]
    positions = {int(k): int(v) for k, v in (h.get("pick_positions") or {}).items()}
    picks = sum(positions.values())
    shown = int(h.get("shown") or max(positions, default=1))
    if not picks:
        parts.append('<p class="note">The LLM made no usable pick.</p>')
        return "\n".join(parts)
    labels = [str(p) for p in range(1, max(shown, max(positions)) + 1)]
    parts.append(r.plot("plot-positions", "Bar plot of the LLM's picks by their position in the shown order",
                        P.bar_plot(labels, [positions.get(int(p), 0) for p in labels],
                                   f"LLM picks by shown position (uniform: {picks / shown:.1f} each)", "picks")))
    parts.append(table(["shown position", "picks", "share", "uniform share"],
                       [[p, positions.get(int(p), 0), f"{positions.get(int(p), 0) / picks:.1%}", f"{1 / shown:.1%}"]
                        for p in labels], numeric={1}))
    parts.append('<p class="note">Candidates are shown in a seeded random order per prompt, so a model that '
                 'favours a position picks at random among the candidates, not the cluster center; a share far '
                 'above uniform at one position says the model reads positions more than content '
                 '(<code>select.permutations: 2</code> keeps only picks two orders agree on).</p>')
    return "\n".join(parts)


def explorer_section(r: Report) -> str:
    return X.section(r.explorer, r.explorer_map,
                     not_run(r.inputs.stage("selected"), "Selection explorer", anchor=False))


def stages_section(r: Report) -> str:
    parts = ['<h2 id="stages">Stage timings</h2>']
    stages = r.stages
    if not stages:
        parts.append('<p class="note">manifest.json lists no stage.</p>')
        return "\n".join(parts)
    upstream = list(r.ctx.spec.upstream)
    names = [n for n in upstream if n in stages] + sorted(n for n in stages if n not in upstream)
    secs = [float(stages[n].get("seconds") or 0.0) for n in names]
    usd = [float(r.sel_metrics["usd"]) if n == r.inputs.stage("decisions") else 0.0 for n in names]
    parts.append(r.plot("plot-stages", "Spend per pipeline stage: wall-clock seconds and LLM dollars",
                        P.spend_panels(names, [("Seconds per stage", "seconds", secs, "{:.1f}"),
                                               ("LLM spend per stage", "USD", usd, "${:.4f}")])))
    rows = []
    for n in names:
        e = stages[n]
        counts = e.get("counts") or {}
        flat = ", ".join(f"{k}={v}" for k, v in counts.items() if isinstance(v, (int, float, str)))
        rows.append([n, e.get("status", "?"), e.get("seconds"), trunc(flat, 300), e.get("finished_at", "")])
    parts.append(table(["stage", "status", "seconds", "counts", "finished"], rows, numeric={2}))
    return "\n".join(parts)


def compare_section(r: Report) -> str:
    """``selectllm compare``'s table, when it ran (optional inputs); nothing otherwise."""
    comparison = r.inputs.get("comparison")
    compared = comparison.read_json() if comparison is not None else None
    if not compared:
        return ""
    page_input = r.inputs.get("comparison_page")
    link = posixpath.relpath(page_input.path, r.run.path()) if page_input is not None else None
    parts = ['<h2 id="compare">Strategy comparison</h2>',
             '<p>From <code>selectllm compare</code>: every strategy over the same embeddings'
             + (f'; plots in <a href="{esc(link)}">{esc(link)}</a>' if link else "") + '.</p>']
    keys = ["coverage_max", "coverage_p99", "coverage_mean", "diversity", "sparse_share", "dense_share", "topic_tvd",
            "source_tvd", "duplicate_rate", "requests", "input_tokens", "usd", "seconds"]
    parts.append(table(["strategy", *keys], [[name, *[row.get(k) for k in keys]] for name, row in compared.items()],
                       numeric=set(range(1, len(keys) + 1))))
    return "\n".join(parts)


def evaluation_section(r: Report) -> str:
    """``selectllm evaluate``'s figures, when it ran (optional inputs): per strategy the mean ± spread
    over the seeds of each metric and the verdict against ``random``; a link to its page."""
    from selectllm.evaluate.figures import METRICS, format_stat, verdict

    results = r.inputs.get("evaluation")
    doc = results.read_json() if results is not None else None
    if not doc or not doc.get("strategies"):
        return ""
    page_input = r.inputs.get("evaluation_page")
    link = posixpath.relpath(page_input.path, r.run.path()) if page_input is not None else None
    st = doc.get("settings") or {}
    r.metrics["evaluation"] = {name: {key: row.get(key) for key, _, _ in METRICS} | {"vs_random": row.get("vs_random")}
                               for name, row in doc["strategies"].items()}
    parts = ['<h2 id="evaluation">Fine-tune evaluation</h2>',
             f'<p>From <code>selectllm evaluate</code>: {esc(st.get("model"))} fine-tuned with LoRA on each'
             f' strategy\'s picks, one run per seed ({esc(len(st.get("seeds") or []))}), scored on'
             f' {esc(st.get("test_rows"))} held-out rows (mean ± standard deviation over the seeds; "beyond the'
             ' spread": the two mean ± 1 sd bands do not overlap)'
             + (f'; plot and example answers in <a href="{esc(link)}">{esc(link)}</a>' if link else "") + '.</p>']
    rows = [[name, row.get("train_rows"), *[format_stat(row.get(key) or {}) for key, _, _ in METRICS], verdict(row)]
            for name, row in doc["strategies"].items()]
    parts.append(table(["strategy", "training rows", *[label for _, label, _ in METRICS], "against random"], rows,
                       numeric={1}))
    return "\n".join(parts)


def selected_section(r: Report) -> str:
    """The first selected rows (also without JavaScript)."""
    parts = ['<h2 id="selected">Selected instructions (first 20)</h2>']
    if r.selected is None:
        parts.append(not_run(r.inputs.stage("selected"), "Selected instructions"))
    elif not r.selected:
        parts.append('<p class="muted">Nothing was selected.</p>')
    else:
        rows = [[s.get("id"), s.get("cluster_id"), trunc(s.get("instruction")), trunc(s.get("input")), s.get("source")]
                for s in r.selected[:SAMPLE_TABLE_ROWS]]
        parts.append(table(["id", "cluster", "instruction", "input", "source"], rows, numeric={1}))
    return "\n".join(parts)


def config_section(r: Report) -> str:
    if not r.run.exists("config.yaml"):
        return ""
    with r.run.open("config.yaml", "r") as f:
        return f"<details><summary>config.yaml</summary><pre>{esc(f.read())}</pre></details>"


# the page, top to bottom; a section returns "" to be left out.  The pool map comes before the
# explorer (it draws the explorer's map in its projection).
SECTIONS = (header_section, dedup_section, privacy_section, clusters_section, map_section, representation_section,
            spend_section, positions_section, history_section, explorer_section,
            stages_section, compare_section, evaluation_section, selected_section, config_section)


def build(ctx) -> tuple[str, dict, int]:
    """Read the report stage's declared inputs; return (html, metrics, number of plots)."""
    r = read(ctx)
    parts = [html_ for html_ in (section(r) for section in SECTIONS) if html_]
    return page(f"SelectLLM report – {r.run.url}", CSS + X.CSS, parts), r.metrics, r.plots


def _explorer_map(pca, emb: Embeddings, selected: list[dict], map_clusters: pa.Table | None,
                  per_cluster: dict[int, int]) -> str:
    """The explorer's clickable SVG map, in the same PCA projection as the pool map."""
    pool = np.flatnonzero(emb.in_map & ~emb.is_sel)
    pool = pool[M.sample_indices(len(pool), X.MAP_MAX_POOL_POINTS, SEED + 2)] if len(pool) else pool
    pool_xy = pca.transform(emb.vectors[pool]) if len(pool) else np.zeros((0, 2))
    by_id = {str(r.get("id")): r for r in selected}
    sel_rows = [i for i in np.flatnonzero(emb.is_sel)][: X.MAP_MAX_SELECTED_POINTS]
    sel_xy = pca.transform(emb.vectors[sel_rows]) if sel_rows else np.zeros((0, 2))
    sel_cluster, sel_label = [], []
    for i in sel_rows:
        r = by_id.get(emb.ids[i], {})
        sel_cluster.append(r.get("cluster_id"))
        sel_label.append(f"cluster {r.get('cluster_id')}: {trunc(r.get('instruction'), 60)}")
    c_xy, c_id, c_size, c_sel = [], [], [], []
    if map_clusters is not None:
        for cid, center, size in zip(map_clusters.column("cluster_id").to_pylist(), map_clusters.column("id").to_pylist(),
                                     map_clusters.column("size").to_pylist()):
            vec = emb.centers.get(center)
            if vec is None:
                continue
            c_xy.append(M.normalize(vec[None, :])[0])
            c_id.append(int(cid))
            c_size.append(int(size))
            c_sel.append(per_cluster.get(int(cid), 0))
    center_xy = pca.transform(np.asarray(c_xy)) if c_xy else np.zeros((0, 2))
    return X.map_svg(pool_xy, sel_xy, sel_cluster, sel_label, center_xy, c_id, c_size, c_sel)


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return M.finite_or_none(o)
    return o
