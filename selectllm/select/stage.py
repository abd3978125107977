"""The ``select`` stage: turn clusters into exactly ``budget`` chosen rows with one strategy.

Writes ``select/decisions.parquet`` (one row per LLM group; empty for LLM-free strategies),
``select/requests.jsonl`` (one line per LLM request) and ``selected.jsonl`` (moved to the run
root on commit).  Answers are cached under ``cache/llm/`` in the run directory, outside the
stage's staging folder, so a killed run pays for no request twice.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from selectllm.errors import BudgetExceeded, UserError
from selectllm.schemas import DECISIONS
from selectllm.select import strategies
from selectllm.tables import dataset, read_table


def lookup_rows(run, ids: list[str], columns: list[str]) -> dict[str, dict]:
    """The dedup rows of some ids, streamed with a filter: the pool never lands on the driver."""
    table = dataset(run, "dedup").to_table(columns=["id", *columns], filter=pc.field("id").isin(pa.array(ids, pa.string())))
    return {row["id"]: row for row in table.to_pylist()}


def write_outputs(ctx, selected: list[tuple[str, int]], decisions: list[dict]) -> None:
    fs = ctx.run.fs
    rows = lookup_rows(ctx.run, [i for i, _ in selected], ["instruction", "input", "source"])
    ordered = sorted(selected, key=lambda t: (t[1], t[0]))
    with fs.open(ctx.out_path("selected.jsonl"), "w") as f:
        for ident, cluster_id in ordered:
            r = rows[ident]
            f.write(json.dumps({"id": ident, "instruction": r["instruction"], "input": r["input"],
                                "source": r["source"], "cluster_id": int(cluster_id),
                                "strategy": ctx.cfg.select.strategy}, ensure_ascii=False) + "\n")
    table = pa.Table.from_pylist(decisions, schema=DECISIONS) if decisions else DECISIONS.empty_table()
    with fs.open(ctx.out_path("decisions.parquet"), "wb") as f:
        pq.write_table(table, f)
    if not fs.exists(ctx.out_path("requests.jsonl")):
        with fs.open(ctx.out_path("requests.jsonl"), "w"):
            pass


def run_stage(ctx) -> dict:
    cfg = ctx.cfg
    assignments = read_table(ctx.run, "cluster/assignments.parquet").sort_by("id")
    ids = np.asarray(assignments.column("id").to_pylist(), dtype=object)
    labels = assignments.column("cluster_id").to_numpy()
    dist = assignments.column("distance").to_numpy()
    if cfg.select.budget > len(ids):
        ctx.log.print(f"[yellow]select: budget {cfg.select.budget} > pool {len(ids)}; selecting the whole pool[/]")
    strategy = strategies.get(cfg.select.strategy)
    result = strategy(ctx, ids, labels, dist)
    target = min(cfg.select.budget, len(ids))
    chosen = [i for i, _ in result.selected]
    if len(chosen) != target or len(set(chosen)) != target:
        raise RuntimeError(f"select: strategy {cfg.select.strategy} chose {len(set(chosen))} distinct rows, not {target}")
    write_outputs(ctx, result.selected, result.decisions)
    by_status: dict[str, int] = {}
    for d in result.decisions:
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    counts = {"selected": target, "groups": len(result.decisions), **{f"groups_{k}": v for k, v in by_status.items()},
              "input_tokens": sum(d["input_tokens"] for d in result.decisions),
              "output_tokens": sum(d["output_tokens"] for d in result.decisions),
              "usd": round(sum(d["usd"] for d in result.decisions), 6), **result.extra}
    if cfg.select.strict_budget and by_status.get("budget_stopped"):
        raise BudgetExceeded(f"llm.max_usd={cfg.llm.max_usd} reached with {by_status['budget_stopped']} groups "
                             "undecided (select.strict_budget is true); answers so far are cached")
    return counts


__all__ = ["run_stage", "UserError"]
