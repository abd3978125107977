"""The ``select`` stage: turn clusters into exactly ``budget`` chosen rows with one strategy.

Writes ``select/decisions.parquet`` (one row per LLM group; empty for LLM-free strategies),
``select/requests.jsonl`` (one line per LLM request), ``select/repairs.jsonl`` (one line per
repair request, see decide.py) and ``selected.jsonl`` (moved to the run root on commit).  The
LLM's health (:mod:`selectllm.select.health`) goes into the stage's counts and one printed line;
the stage fails when the LLM decided fewer than ``select.min_llm_share`` of its groups.  Answers are cached under ``cache/llm/`` in the run directory, outside the
stage's staging folder, so a killed run pays for no request twice.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq

from selectllm.contract import Output, Resources, Settings, Stage
from selectllm.errors import BudgetExceeded
from selectllm.schemas import DECISIONS
from selectllm.select import registry
from selectllm.select.health import check_share, health, health_line
from selectllm.select.tables import Pool, lookup

# llm settings that change speed, never answers: changing them must not invalidate a selection
LLM_SPEED_KEYS = {"rpm", "tpm", "concurrency", "timeout_s", "max_retries", "mode", "api_key_env"}
# select settings that only stop a run early, never change a selection
SELECT_LIMIT_KEYS = {key for key, _, _ in registry.IN_ONE_PROCESS.values()}
# what every strategy may read (the compare stage declares the same names)
STRATEGY_INPUTS = {"rows": "dedup.rows", "assignments": "cluster.assignments", "centers": "cluster.centers",
                   "vectors": "embed.vectors"}


LLM_REQUESTS_PER_ACTOR = 8  # an LLM pool actor is started for at least this many requests


def select_workers(cfg, cluster: dict, requests: int = 0) -> dict:
    """The ``Resources.workers`` of a stage that runs selection strategies (select, compare; evaluate
    adds its cells): ``task_cpus``, the CPUs of each part task (planning, lookups, samples: one per
    part, Ray runs as many at once as the cluster has CPUs); and, for ``requests`` unique LLM
    requests on Ray, the LLM pool: ``llm_actors`` = ``min(llm.concurrency, cluster CPUs, requests /
    8)`` (at least 1; they share ``llm.concurrency`` evenly) of ``llm_cpus_per_actor`` 0 CPUs (they
    wait on the network)."""
    sized: dict = {"task_cpus": 1}
    if requests:
        cpus = max(1, int(cluster.get("CPU", 1)))
        actors = min(cfg.llm.concurrency, cpus, math.ceil(requests / LLM_REQUESTS_PER_ACTOR))
        sized.update(llm_actors=max(1, actors), llm_cpus_per_actor=0)
    return sized


def privacy_output(cfg) -> tuple:
    """The setting that changes selected.jsonl but no decision: masked or source text."""
    return (cfg.privacy.output,) if cfg.privacy.mode != "off" else ()


def row_statuses(selected: list[tuple[str, int]], decisions: list[dict]) -> dict[str, str]:
    """selected.jsonl's ``status`` of every selected id, from the decisions' ``chosen_by``
    (llm | fallback | no_llm); a strategy without decisions (LLM-free) gives ``no_llm`` to all."""
    if not decisions:
        return {ident: "no_llm" for ident, _ in selected}
    by = {c: who for d in decisions for c, who in zip(d["chosen_ids"], d["chosen_by"], strict=True)}
    missing = [ident for ident, _ in selected if ident not in by]
    if missing:
        raise RuntimeError(f"select: {len(missing)} selected rows are in no decision (e.g. {missing[0]})")
    return by


def write_outputs(ctx, selected: list[tuple[str, int]], decisions: list[dict]) -> None:
    fs = ctx.run.fs
    # the chat row's user_turn and the input.keep columns, where dedup wrote them (a kept
    # column missing from a record is null)
    written = set(ctx.input("rows").dataset().schema.names)
    extra = [c for c in ("user_turn", *ctx.cfg.input.keep) if c in written]
    rows = lookup(ctx, [i for i, _ in selected], ["instruction", "input", "source", "source_row", *extra])
    if ctx.cfg.privacy.mode != "off" and ctx.cfg.privacy.output == "original":  # the source text, here only
        from selectllm.privacy.original import original_rows

        keep = [c for c in ctx.cfg.input.keep if c in written]
        for ident, values in original_rows(ctx.cfg, rows, keep).items():
            rows[ident] = {**rows[ident], **values}
    status = row_statuses(selected, decisions)
    ordered = sorted(selected, key=lambda t: (t[1], t[0]))
    # select.reasons: the LLM's one-line reason for each row it chose (null for rows it did not choose)
    reasons = {i: why or None for d in decisions for i, why in zip(d["chosen_ids"], d.get("chosen_reasons") or [])
               if d["status"] == "ok"} if ctx.cfg.select.reasons else None
    with fs.open(ctx.out_path("selected.jsonl"), "w") as f:
        for ident, cluster_id in ordered:
            r = rows[ident]
            rec = {"id": ident, "instruction": r["instruction"], "input": r["input"], "source": r["source"],
                   "cluster_id": int(cluster_id), "strategy": ctx.cfg.select.strategy,
                   "source_row": int(r["source_row"]), "status": status[ident]}
            if reasons is not None:
                rec["reason"] = reasons.get(ident)
            rec.update({c: r[c] for c in extra})
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    table = pa.Table.from_pylist(decisions, schema=DECISIONS) if decisions else DECISIONS.empty_table()
    with fs.open(ctx.out_path("decisions.parquet"), "wb") as f:
        pq.write_table(table, f)
    for log in ("requests.jsonl", "repairs.jsonl"):
        if not fs.exists(ctx.out_path(log)):
            with fs.open(ctx.out_path(log), "w"):
                pass


def run_stage(ctx) -> dict:
    from selectllm.engines import ray_init

    cfg = ctx.cfg
    strategy = registry.get(cfg.select.strategy)
    pool = Pool(ctx, remote=True)  # its size, from the Parquet footers
    registry.check_scale(cfg, cfg.select.strategy, pool.n, pool.k)  # before any work
    ray_init(cfg)  # the part tasks (planning, lookups) and the LLM actor pool
    if cfg.select.budget > pool.n:
        ctx.log.print(f"[yellow]select: budget {cfg.select.budget} > pool {pool.n}; selecting the whole pool[/]")
    result = strategy(ctx, pool)
    target = min(cfg.select.budget, pool.n)
    chosen = [i for i, _ in result.selected]
    if len(chosen) != target or len(set(chosen)) != target:
        raise RuntimeError(f"select: strategy {cfg.select.strategy} chose {len(set(chosen))} distinct rows, not {target}")
    llm = getattr(ctx, "llm_counts", {})
    h = health(result.decisions) if result.decisions else None
    if h is not None:
        ctx.log.print(health_line(h, llm.get("structured_output")))
        check_share(h, cfg.select.min_llm_share)
    write_outputs(ctx, result.selected, result.decisions)
    by_status: dict[str, int] = {}
    for d in result.decisions:
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    counts = {"selected": target, "groups": len(result.decisions), **{f"groups_{k}": v for k, v in by_status.items()},
              "input_tokens": sum(d["input_tokens"] for d in result.decisions),
              "output_tokens": sum(d["output_tokens"] for d in result.decisions),
              "usd": round(sum(d["usd"] for d in result.decisions), 6), **result.extra, **llm,
              **({"llm_health": h} if h is not None else {})}
    if cfg.select.strict_budget and by_status.get("budget_stopped"):
        raise BudgetExceeded(f"llm.max_usd={cfg.llm.max_usd} reached with {by_status['budget_stopped']} groups "
                             "undecided (select.strict_budget is true); answers so far are cached")
    return counts


STAGE = Stage(
    name="select",
    run=run_stage,
    inputs=STRATEGY_INPUTS,
    outputs=(
        Output("decisions", "decisions.parquet", schema=DECISIONS),
        Output("requests", "requests.jsonl"),
        Output("repairs", "repairs.jsonl"),
        Output("selected", "selected.jsonl", root=True),
    ),
    settings=Settings(("select", "llm"), exclude={"llm": LLM_SPEED_KEYS, "select": SELECT_LIMIT_KEYS},
                      extra=privacy_output),
    resources=Resources(engine="ray", workers=select_workers),
    doc="Choose exactly select.budget rows (LLM calls for the selectllm strategies).",
)
