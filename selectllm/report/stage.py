"""The ``report`` stage: ``report.html`` + ``metrics.json`` (built by ``html.py``) into the staging folder."""

from __future__ import annotations

import json
import posixpath

from selectllm.contract import Output, Resources, Settings, Stage


def run_stage(ctx) -> dict:
    from selectllm.report.html import _jsonable, build  # matplotlib: only when the report is made

    page, metrics, plots = build(ctx)
    data = page.encode("utf-8")
    fs = ctx.run.fs
    with fs.open(posixpath.join(ctx.out, "report.html"), "wb") as f:
        f.write(data)
    with fs.open(posixpath.join(ctx.out, "metrics.json"), "w") as f:
        json.dump(_jsonable(metrics), f, indent=2, sort_keys=True)
        f.write("\n")
    selected = metrics["selection"]["selected"]
    return {"selected": int(selected or 0), "plots": plots, "bytes": len(data)}


STAGE = Stage(
    name="report",
    run=run_stage,
    inputs={"stats": "dedup.stats", "quarantine": "dedup.quarantine", "rows": "dedup.rows",
            "vectors": "embed.vectors", "assignments": "cluster.assignments", "centers": "cluster.centers",
            "decisions": "select.decisions", "selected": "select.selected"},
    # `selectllm compare` and `selectllm evaluate` run on demand: their tables and links to their pages when they ran
    optional_inputs={"comparison": "compare.comparison", "comparison_page": "compare.page",
                     "evaluation": "evaluate.results", "evaluation_page": "evaluate.page"},
    outputs=(Output("page", "report.html", root=True), Output("metrics", "metrics.json", root=True)),
    settings=Settings(version="report-v3"),
    resources=Resources(engine="local"),
    reads_history=True,
    doc="Write report.html and metrics.json.",
)
