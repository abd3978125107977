"""Where the stages are wired: which exist, in what order, and when one can be skipped.

Each stage declares itself next to its code (``STAGE = Stage(...)`` at the end of
``selectllm/<stage>/stage.py``, see :mod:`selectllm.contract`); this module only lists those
modules.  For each stage it decides whether to run it (resume: same input commits, same settings
hash), hands it a context whose ``input(name)`` resolves to the declared upstream outputs, checks
the declared output schemas, commits atomically and records the manifest entry.  Stages never see
each other: they talk only through the outputs they declare.
"""

from __future__ import annotations

import importlib
import platform
import time
import uuid
from importlib import metadata

from selectllm import __version__, logs
from selectllm.config import Config, dump_config
from selectllm.console import console
from selectllm.contract import Output, Stage, StageContext, StageInput, check_outputs, missing_upstream, stable_hash
from selectllm.errors import UserError
from selectllm.rundir import RunDir

# the stages of `selectllm run`, in order; then those run only when asked for (`selectllm compare`)
PIPELINE_MODULES = (
    "selectllm.dedup.stage",
    "selectllm.embed.stage",
    "selectllm.cluster.stage",
    "selectllm.select.stage",
    "selectllm.report.stage",
)
ON_DEMAND_MODULES = ("selectllm.compare.stage", "selectllm.evaluate.stage")


def _load(modules: tuple[str, ...]) -> tuple[Stage, ...]:
    return tuple(importlib.import_module(m).STAGE for m in modules)


STAGES: tuple[Stage, ...] = _load(PIPELINE_MODULES)
ON_DEMAND: tuple[Stage, ...] = _load(ON_DEMAND_MODULES)
STAGE_NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES + ON_DEMAND}


def resolve(ref: str) -> tuple[str, Output]:
    """``"<stage>.<output>"`` -> (stage name, its output declaration)."""
    stage, _, output = ref.partition(".")
    if stage not in BY_NAME:
        raise KeyError(f"no stage '{stage}' (input {ref})")
    return stage, BY_NAME[stage].output(output)


def _check_wiring() -> None:
    """Every input names an output of a stage declared earlier (so the order is a valid one)."""
    seen: set[str] = set()
    for s in STAGES + ON_DEMAND:
        for ref in s.inputs.values():
            up, _ = resolve(ref)
            if up not in seen:
                raise RuntimeError(f"stage '{s.name}' reads {ref} but '{up}' does not run before it")
        for ref in s.optional_inputs.values():
            resolve(ref)  # names a declared output; may run later or never
        if s in STAGES:
            seen.add(s.name)


_check_wiring()


def stage_context(cfg: Config, run: RunDir, name: str, out: str | None = None, work: str | None = None) -> StageContext:
    """The context a stage runs with (also for running one stage's function directly, in tests)."""
    stage = BY_NAME[name]
    return StageContext(cfg=cfg, run=run, stage=name, out=out if out is not None else run.new_staging(name),
                        work=work if work is not None else run.path("_work", name), spec=stage, resolve=resolve,
                        log=console)


def input_fingerprint(cfg: Config, run: RunDir, stage: Stage) -> str:
    """What a stage reads: its external inputs (the raw files for dedup), the commits of the
    upstream outputs it declares."""
    parts: list = []
    if stage.external_inputs is not None:
        parts.append(stage.external_inputs(cfg))
    for up in stage.upstream:
        entry = run.stage_entry(up)
        if not entry or entry.get("status") != "complete":
            raise missing_upstream(stage, up)
        parts.append((up, entry["output_token"]))
    for ref in sorted(set(stage.optional_inputs.values())):  # in the fingerprint once committed
        up = ref.split(".", 1)[0]
        entry = run.stage_entry(up)
        if entry and entry.get("status") == "complete":
            parts.append(("optional", ref, entry["output_token"]))
    if stage.reads_history and cfg.history.path:  # what earlier runs of the programme left
        from selectllm.history import view_token

        parts.append(("history", view_token(cfg, run)))
    return stable_hash(parts) if stage.external_inputs is None else stable_hash(*parts)


def _versions() -> dict:
    out = {"selectllm": __version__, "python": platform.python_version()}
    for pkg in ("pyarrow", "ray", "pyspark", "sentence-transformers", "torch", "openai"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def is_complete(run: RunDir, stage: Stage, fingerprint: str, settings: str) -> bool:
    entry = run.stage_entry(stage.name)
    return bool(
        entry
        and entry.get("status") == "complete"
        and entry.get("input_fingerprint") == fingerprint
        and entry.get("settings_hash") == settings
        and run.exists(stage.name)
        and all(run.exists(f) for f in stage.root_files)
    )


def run_stage(cfg: Config, run: RunDir, stage: Stage, force: bool = False) -> dict:
    """Run one stage unless an identical complete run of it exists.  Returns its manifest entry."""
    fingerprint = input_fingerprint(cfg, run, stage)
    settings = stage.settings.hash(cfg)
    if not force and is_complete(run, stage, fingerprint, settings):
        entry = run.stage_entry(stage.name)
        console.print(f"[dim]· {stage.name}: complete, skipped ({_counts_line(entry.get('counts', {}))})[/]")
        _refuse_empty(stage, entry)
        return entry
    run.invalidate(stage.name)
    console.print(f"[bold cyan]▶ {stage.name}[/]")
    # partial results of an attempt killed with the same inputs and settings, to resume from
    work = run.path("_work", f"{stage.name}-{stable_hash(fingerprint, settings)}")
    ctx = stage_context(cfg, run, stage.name, work=work)
    t0 = time.perf_counter()
    try:
        counts = stage.run(ctx) or {}
        check_outputs(stage, ctx)
    except BaseException:
        # leave nothing that could be mistaken for output; the manifest already says "invalidated"
        # (the work folder stays: the next attempt resumes from it)
        try:
            run.fs.rm(ctx.out, recursive=True)
        except Exception:
            pass
        raise
    seconds = round(time.perf_counter() - t0, 3)
    run.commit(stage.name, ctx.out, stage.root_files)
    entry = {
        "status": "complete",
        "input_fingerprint": fingerprint,
        "settings_hash": settings,
        "output_token": uuid.uuid4().hex,
        "counts": counts,
        "seconds": seconds,
        "resources": {"engine": stage.resources.engine,
                      **{k: v for k, v in ctx.sized.items() if isinstance(v, (int, float, str))}},
        "versions": _versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    run.record_stage(stage.name, entry)
    if run.fs.exists(work):
        run.fs.rm(work, recursive=True)
    console.print(f"[green]✔ {stage.name}[/] in {seconds:.1f}s ({_counts_line(counts)})")
    logs.check()  # engine warnings that matter, in the project's words (quiet CLI only)
    _refuse_empty(stage, entry)
    return entry


def _refuse_empty(stage: Stage, entry: dict) -> None:
    """A committed output with nothing in it for the next stage ends the run with one line."""
    why = stage.empty(entry.get("counts", {})) if stage.empty is not None else None
    if why:
        raise UserError(f"{stage.name}: {why}")


def _counts_line(counts: dict) -> str:
    flat = [f"{k}={v}" for k, v in counts.items() if isinstance(v, (int, float, str))]
    return ", ".join(flat[:6]) or "no counts"


def open_run(cfg: Config) -> RunDir:
    run = RunDir(cfg.run_dir)
    run.write_text_atomic("config.yaml", dump_config(cfg))
    return run


def run_pipeline(cfg: Config, stages: list[str] | None = None, force: list[str] | None = None) -> RunDir:
    """Run the given stages in order (all of ``selectllm run`` by default; an on-demand stage such
    as ``compare`` when named).  ``force`` recomputes a stage and every stage after it."""
    run = open_run(cfg)
    order = list(STAGES) + [s for s in ON_DEMAND if s.name in (stages or [])]
    names = [s.name for s in order]
    wanted = stages or list(STAGE_NAMES)
    unknown = [s for s in (force or []) + wanted if s not in BY_NAME]
    if unknown:
        raise UserError(f"unknown stage '{unknown[0]}' (stages: {', '.join(BY_NAME)})")
    lock = None
    if cfg.history.path:  # one run at a time writes to a programme's history: refused with one line
        from selectllm.history import History, run_id_for

        lock = History(cfg.history.path).lock(f"run {run_id_for(run.url)}").acquire()
    run.clean_staging()
    first_forced = min((names.index(s) for s in force or [] if s in names), default=len(names))
    try:
        for i, stage in enumerate(order):
            if stage.name in wanted:
                run_stage(cfg, run, stage, force=i >= first_forced)
            if stage.name == "select" and lock is not None:  # a complete selection joins the history once
                from selectllm.history import record_run

                record_run(cfg, run, lambda ref: StageInput(run, *resolve(ref)), log=console)
    finally:
        from selectllm.engines import shutdown_owned

        try:
            shutdown_owned()
        finally:
            if lock is not None:
                lock.release()
    return run
