"""``selectllm evaluate``: does a selection help the model it is for?

For each strategy of ``evaluate.strategies`` the stage runs its select logic over the shared
embeddings (as ``compare`` does; LLM answers come from the run's cache), takes the picks with
their reference responses (``evaluate.response``, a column carried with ``input.keep``), then for
each seed of ``evaluate.seeds`` fine-tunes a small causal LM with LoRA on them and scores a
held-out set (:mod:`selectllm.evaluate.finetune`): the loss on the reference responses, and
ROUGE-L and all-MiniLM-L6-v2 cosine of generated answers on a sample.  With ``evaluate.base``
the untuned model is scored once too: the floor.

Writes ``evaluate/evaluate.json`` (per strategy: each seed's figures, their mean, standard
deviation, min and max; the difference to ``random`` and whether it is beyond the spread),
``evaluate/evaluate.html`` (the table and a plot) and ``evaluate/<strategy>/selected.jsonl``
(the rows trained on).

Resume: every finished strategy×seed cell and every strategy's picks are kept in the stage's
work folder (``_work/evaluate-<hash>/``, which outlives a killed attempt with the same inputs and
settings), so a rerun redoes only the unfinished cells; a complete stage is skipped.

Where it runs: on the driver's CPUs (float32, ``evaluate.threads``), or, when the Ray cluster has
a GPU (``evaluate.device: auto``) or ``evaluate.device: cuda``, each cell is a Ray task with one
GPU in ``evaluate.gpu_dtype`` (bfloat16); several GPUs run several cells at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import posixpath
import time

import numpy as np

from selectllm.config import EVALUATE_SPEED_KEYS
from selectllm.console import console
from selectllm.contract import Output, Resources, Settings, Stage, StageContext
from selectllm.errors import UserError
from selectllm.evaluate.figures import BASE, METRICS, aggregate, format_stat, verdict
from selectllm.select import registry
from selectllm.select.stage import LLM_SPEED_KEYS, SELECT_LIMIT_KEYS, STRATEGY_INPUTS, select_workers
from selectllm.select.tables import Pool, lookup

TEST_SAMPLE_SEED = 0  # the scored test rows: the same for every strategy and seed
CELL_KEYS = ("model", "gguf_file", "epochs", "max_steps", "batch_size", "lr", "max_length", "lora_r",
             "lora_alpha", "lora_dropout", "generate_rows", "max_new_tokens", "template", "template_no_input")


def parse_list(spec: str | None, kind=str) -> list:
    return [kind(s.strip()) for s in (spec or "").split(",") if s.strip()]


# ----------------------------------------------------------------------------- the held-out set
def read_test(cfg) -> tuple[list[dict], int]:
    """The scored test rows ({instruction, input, response}; a seeded sample of ``test_rows``) and
    how many rows of the file were skipped for an empty instruction or response."""
    import fsspec
    import pandas as pd

    from selectllm.text.formats import detect_format, field_names

    ev = cfg.evaluate
    if not ev.test_path:
        raise UserError("evaluate.test_path is not set: the held-out rows to score "
                        "(JSONL/JSON/Parquet/CSV with the pool's columns and the response column)")
    instr, inp = field_names(cfg.input.preset, cfg.input.fields)
    try:
        fmt = detect_format(ev.test_path, ev.test_format)
        with fsspec.open(ev.test_path, "rb", compression="infer") as f:
            if fmt in ("jsonl", "json"):
                df = pd.read_json(f, lines=fmt == "jsonl", dtype=False)
            elif fmt == "parquet":
                df = pd.read_parquet(f)
            elif fmt == "csv":
                df = pd.read_csv(f, dtype=str, keep_default_na=False)
            else:
                raise UserError(f"evaluate.test_path: format {fmt} has no response column (use jsonl, json, parquet or csv)")
    except FileNotFoundError:
        raise UserError(f"evaluate.test_path {ev.test_path} does not exist") from None
    except ValueError as e:
        raise UserError(f"evaluate.test_path {ev.test_path} cannot be read as {ev.test_format}: {str(e).splitlines()[0]}") from None
    for col in (instr, ev.response):
        if col not in df.columns:
            raise UserError(f"evaluate.test_path {ev.test_path} has no column '{col}' (columns: {', '.join(map(str, df.columns))})")

    def text(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    rows, skipped = [], 0
    inputs = df[inp] if inp and inp in df.columns else [None] * len(df)
    for i, a, r in zip(df[instr], inputs, df[ev.response]):
        row = {"instruction": text(i).strip(), "input": text(a).strip(), "response": text(r).strip()}
        if row["instruction"] and row["response"]:
            rows.append(row)
        else:
            skipped += 1
    if not rows:
        raise UserError(f"evaluate.test_path {ev.test_path}: no row has both an instruction and a '{ev.response}'")
    if len(rows) > ev.test_rows:
        keep = np.sort(np.random.default_rng(TEST_SAMPLE_SEED).choice(len(rows), ev.test_rows, replace=False))
        rows = [rows[i] for i in keep]
    return rows, skipped


def test_fingerprint(cfg) -> str:
    """The held-out file as a raw input: path, size and modification time (or ETag)."""
    import fsspec

    from selectllm.contract import stable_hash

    path = cfg.evaluate.test_path
    if not path:
        return stable_hash(None)
    try:
        fs, p = fsspec.core.url_to_fs(path)
        info = fs.info(p)
    except (FileNotFoundError, OSError):
        return stable_hash(path, "missing")
    return stable_hash(path, info.get("size"), str(info.get("mtime") or info.get("ETag") or info.get("LastModified")))


# ----------------------------------------------------------------------------- the work folder
def _read_json(fs, path: str):
    with fs.open(path, "r") as f:
        return json.load(f)


def _write_json(fs, path: str, obj) -> None:
    """Atomically: a cell file exists only when complete."""
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with fs.open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, ensure_ascii=False)
    fs.mv(tmp, path)


def picks_of(ctx: StageContext, pool: Pool, name: str) -> tuple[list[dict], dict]:
    """A strategy's picks as training rows (id, cluster_id, instruction, input, response), and
    counts; from the work folder when an earlier attempt made them."""
    fs, ev = ctx.run.fs, ctx.cfg.evaluate
    saved = posixpath.join(ctx.work, "picks", f"{name}.json")
    if fs.exists(saved):
        console.print(f"[dim]· evaluate: {name}: picks from the earlier attempt[/]")
        got = _read_json(fs, saved)
        return got["rows"], got["counts"]
    cfg_s = ctx.cfg.model_copy(deep=True)
    cfg_s.select.strategy = name
    sub = dataclasses.replace(ctx, cfg=cfg_s, out=posixpath.join(ctx.out, name))
    fs.makedirs(sub.out, exist_ok=True)
    console.print(f"[bold cyan]▶ evaluate: selecting with {name}[/]")
    t0 = time.perf_counter()
    res = registry.get(name)(sub, pool)
    ids = [i for i, _ in res.selected]
    found = lookup(sub, ids, ["instruction", "input", ev.response])
    rows, no_response = [], 0
    for ident, cluster_id in sorted(res.selected, key=lambda t: t[0]):
        r = found[ident]
        response = (r.get(ev.response) or "").strip()
        if not response:
            no_response += 1
            continue
        rows.append({"id": ident, "cluster_id": int(cluster_id), "instruction": r["instruction"] or "",
                     "input": r["input"] or "", "response": response})
    if not rows:
        raise UserError(f"evaluate: none of the {len(ids)} rows {name} picked has a '{ev.response}' "
                        f"(evaluate.response): nothing to fine-tune on")
    counts = {"selected": len(ids), "no_response": no_response, "select_seconds": round(time.perf_counter() - t0, 2)}
    _write_json(fs, saved, {"rows": rows, "counts": counts})
    return rows, counts


# ----------------------------------------------------------------------------- where cells run
def evaluate_workers(cfg, cluster: dict, requests: int = 0) -> dict:
    """``Resources.workers``: one GPU per cell, as many cells at once as the cluster has GPUs, when
    it has one (``evaluate.device: auto``) or ``cuda`` is asked for; else one cell at a time in the
    driver with ``evaluate.threads`` CPU threads.  The strategies' part tasks and LLM pool as the
    select stage sizes them (``select_workers``)."""
    from selectllm.evaluate.finetune import cpu_threads

    ev = cfg.evaluate
    strategies = select_workers(cfg, cluster, requests)
    gpus = int(float(cluster.get("GPU", 0)))
    if ev.device == "cuda" and gpus < 1:
        raise UserError("evaluate.device is cuda but the Ray cluster has no GPU")
    if ev.device == "cuda" or (ev.device == "auto" and gpus >= 1):
        return {"workers": gpus, "cpus_per_worker": 1, "gpus_per_worker": 1, "device": "cuda", "dtype": ev.gpu_dtype,
                **strategies}
    threads = cpu_threads(ev.threads)
    return {"workers": 1, "cpus_per_worker": threads, "gpus_per_worker": 0, "device": "cpu", "dtype": "float32",
            "threads": threads, **strategies}


def _gpu_cell(spec: dict) -> dict:  # a Ray task: its own process, its own GPU
    from selectllm.evaluate.finetune import run_cell

    return run_cell(spec)


def run_cells(ctx: StageContext, cells: list[tuple[str, int | None, list[dict]]], test: list[dict]) -> dict:
    """Every (strategy, seed, rows) cell not finished by an earlier attempt: run it, keep its figures."""
    from selectllm.evaluate.finetune import run_cell

    fs, ev = ctx.run.fs, ctx.cfg.evaluate
    sized = ctx.workers()
    gpu = sized["device"] == "cuda"
    common = {k: getattr(ev, k) for k in CELL_KEYS}
    common.update(device=sized["device"], dtype=sized["dtype"], threads=sized.get("threads"), test=test)
    done: dict[tuple[str, int | None], dict] = {}
    todo = []
    for name, seed, rows in cells:
        path = posixpath.join(ctx.work, "cells", name, f"seed-{seed}.json" if seed is not None else "base.json")
        if fs.exists(path):
            done[(name, seed)] = _read_json(fs, path)
            console.print(f"[dim]· evaluate: {name} seed {seed}: finished by an earlier attempt[/]")
        else:
            todo.append((name, seed, rows, path))
    total = len(todo)
    where = f"a Ray task with one GPU each ({common['dtype']})" if gpu else f"this process's CPUs ({common['threads']} threads)"
    if total:
        console.print(f"[bold cyan]▶ evaluate: {total} fine-tune cell(s) on {where}[/]")
    if gpu:
        import ray

        task = ray.remote(num_gpus=sized["gpus_per_worker"], num_cpus=sized["cpus_per_worker"])(_gpu_cell)
        pending = {task.remote({**common, "train": rows, "seed": seed or 0}): (name, seed, path)
                   for name, seed, rows, path in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name, seed, path = pending.pop(ready[0])
            done[(name, seed)] = _finish(fs, path, ray.get(ready[0]), name, seed, total - len(pending), total)
        return done
    for n, (name, seed, rows, path) in enumerate(todo, 1):
        label = f"evaluate {n}/{total}: {name}" + (f" seed {seed}" if seed is not None else " (no fine-tune)")
        console.print(f"[cyan]▶ {label}: {len(rows)} training rows[/]")
        result = run_cell({**common, "train": rows, "seed": seed or 0},
                          progress=lambda line, label=label: console.print(f"  {label}: {line}"))
        done[(name, seed)] = _finish(fs, path, result, name, seed, n, total)
    return done


def _finish(fs, path: str, result: dict, name: str, seed, n: int, total: int) -> dict:
    _write_json(fs, path, result)
    figures = ", ".join(f"{label} {result[key]:.4f}" for key, label, _ in METRICS if result.get(key) is not None)
    console.print(f"[green]✔ evaluate {n}/{total}: {name}{'' if seed is None else f' seed {seed}'}[/] "
                  f"in {result['seconds']:.0f}s ({figures})")
    return result


def run_stage(ctx: StageContext) -> dict:
    from selectllm.engines import ray_init
    from selectllm.evaluate.page import write_page

    cfg, fs, ev = ctx.cfg, ctx.run.fs, ctx.cfg.evaluate
    written = set(ctx.input("rows").dataset().schema.names)
    if ev.response not in written:
        raise UserError(f"evaluate.response '{ev.response}' is not a column of the pool: add it to input.keep "
                        f"(input.keep: [{ev.response}]) and rerun")
    test, skipped = read_test(cfg)
    pool = Pool(ctx, remote=True)
    for name in ev.strategies:  # every limit before any work
        registry.check_scale(cfg, name, pool.n, pool.k)
    ray_init(cfg)
    picks, counts = {}, {}
    for name in ev.strategies:
        picks[name], counts[name] = picks_of(ctx, pool, name)
        fs.makedirs(posixpath.join(ctx.out, name), exist_ok=True)
        with fs.open(posixpath.join(ctx.out, name, "selected.jsonl"), "w") as f:
            for r in picks[name]:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    seen = {(r["instruction"], r["input"]) for r in test}
    for name in ev.strategies:  # a picked row that is also a test row would be scored on what it trained on
        counts[name]["picks_in_test"] = sum((r["instruction"], r["input"]) in seen for r in picks[name])
    # seed by seed: a run stopped early has every strategy at the same number of seeds
    cells = ([(BASE, None, [])] if ev.base else []) + [(name, s, picks[name]) for s in ev.seeds for name in ev.strategies]
    done = run_cells(ctx, cells, test)
    results = aggregate(ev, done, counts, picks)
    meta = {"test_path": ev.test_path, "test_rows": len(test), "test_rows_skipped": skipped,
            "generate_rows": min(ev.generate_rows, len(test)), "model": ev.model, "seeds": list(ev.seeds),
            "device": ctx.sized["device"]}
    doc = {"settings": {**meta, **{k: getattr(ev, k) for k in CELL_KEYS if k not in ("template", "template_no_input")}},
           "strategies": results}
    with fs.open(posixpath.join(ctx.out, "evaluate.json"), "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)  # strategies in their order: base first
        f.write("\n")
    write_page(ctx, posixpath.join(ctx.out, "evaluate.html"), doc)
    return {"strategies": len(ev.strategies), "seeds": len(ev.seeds), "cells": len(cells), "test_rows": len(test)}


def run_evaluate(cfg, names: list[str] | None = None, seeds: list[int] | None = None, force: bool = False):
    """dedup -> embed -> cluster -> evaluate (each skipped when complete); evaluate.json."""
    from selectllm.pipeline import run_pipeline

    cfg = cfg.model_copy(deep=True)
    if names:
        cfg.evaluate.strategies = names
    if seeds:
        cfg.evaluate.seeds = seeds
    run = run_pipeline(cfg, stages=[*STAGE.upstream, STAGE.name], force=[STAGE.name] if force else [])
    return run, run.read_json(posixpath.join(STAGE.name, STAGE.output("results").path))


def print_table(doc: dict, out=None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"selectllm evaluate ({doc['settings']['test_rows']} held-out rows, "
                    f"{len(doc['settings']['seeds'])} seeds; mean ± sd)")
    t.add_column("strategy", style="bold")
    for _, label, better in METRICS:
        t.add_column(f"{label} ({better} is better)", justify="right")
    t.add_column("vs random", justify="left")
    for name, row in doc["strategies"].items():
        cells = [format_stat(row[key]) for key, _, _ in METRICS]
        t.add_row(name, *cells, verdict(row))
    (out or Console(width=200)).print(t)


STAGE = Stage(
    name="evaluate",
    run=run_stage,
    inputs=dict(STRATEGY_INPUTS),
    outputs=(Output("results", "evaluate.json"), Output("page", "evaluate.html")),
    settings=Settings(("select", "llm", "evaluate"),
                      exclude={"llm": LLM_SPEED_KEYS, "select": {"strategy", *SELECT_LIMIT_KEYS},
                               "evaluate": EVALUATE_SPEED_KEYS}),
    resources=Resources(engine="ray", workers=evaluate_workers),
    external_inputs=test_fingerprint,
    doc="Fine-tune a small LM on each strategy's picks, score a held-out set: evaluate/evaluate.json, evaluate.html.",
)
