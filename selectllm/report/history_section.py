"""The report's "Programme history" section: this run beside the earlier runs of its programme
(``history``): picks, rows seen again, spend and cumulative spend, and how well the selections
so far cover each run's pool (mean and worst-case distance of a pool sample to the nearest
selection of that run and every earlier one, measured when the run was recorded)."""

from __future__ import annotations

from typing import Any


def section(ctx, esc, table) -> tuple[str, dict | None]:
    """(html, metrics) of the section; ``esc`` and ``table`` are the page's HTML helpers."""
    cfg = ctx.cfg
    if not cfg.history.path:
        return "", None
    from selectllm.history import History, run_id_for

    h = History(cfg.history.path)
    rid = run_id_for(ctx.run.url)
    commits = h.commits()
    own = next((c for c in commits if c.get("run_id") == rid), None)
    shown = [c for c in commits if own is None or c["seq"] <= own["seq"]]
    runs = [c for c in shown if c["kind"] == "run"]
    imports = [c for c in shown if c["kind"] == "import"]
    rows: list[list[Any]] = []
    total = 0.0
    for c in runs:
        s = c["summary"]
        total += float(s.get("usd") or 0.0)
        name = c["run_id"] + (" (this run)" if c is own else "")
        rows.append([c["seq"], name, c.get("finished_at", "")[:10], s.get("read"), s.get("seen_duplicates"),
                     s.get("selected"), s.get("usd"), round(total, 6), s.get("coverage_mean_cumulative"),
                     s.get("coverage_max_cumulative")])
    parts = ['<h2 id="history">Programme history</h2>',
             f'<p>History <code>{esc(h.url)}</code>: {len(runs)} runs, {len(imports)} imports of annotation '
             f'statuses ({sum(int(c["summary"].get("annotated", 0)) for c in imports):,} annotated, '
             f'{sum(int(c["summary"].get("rejected", 0)) for c in imports):,} rejected).</p>']
    if own is None:
        parts.append('<p class="note">This run is not in the history yet (its selection is not complete).</p>')
    if rows:
        parts.append(table(["#", "run", "finished", "read", "seen before", "selected", "usd", "cumulative usd",
                            "coverage mean", "coverage max"], rows, numeric={0, 3, 4, 5, 6, 7, 8, 9}))
        parts.append('<p class="muted">Coverage: cosine distance of a sample of that run\'s pool to the nearest '
                     'row selected by that run or any earlier one (lower is better).</p>')
    steer = h.annotated(h.view(rid))  # what this run read
    if steer["annotated"]:
        parts.append(f'<p>Annotated rows seen by this run: <b>{steer["annotated"]:,}</b>; '
                     f'{steer["annotated_steering"]:,} steer its clusters (selected by an earlier run: their '
                     f'vectors are prior centers), <b>{steer["annotated_not_steering"]:,} not steering clusters</b> '
                     '(imported as ids only: no vector; still never selected again).</p>')
    cap = cfg.history.max_usd
    parts.append(f'<p>Programme spend <b>${total:.4f}</b>' +
                 (f' of <b>${cap:.2f}</b> (<code>history.max_usd</code>).</p>' if cap is not None else '.</p>'))
    metrics = {"url": h.url, "runs": len(runs), "imports": len(imports), "usd_total": total, **steer,
               "per_run": [{"run_id": c["run_id"], "seq": c["seq"], **c["summary"]} for c in runs]}
    return "\n".join(parts), metrics
