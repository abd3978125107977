"""Where the stages are wired: order, what each depends on, and when one can be skipped.

A stage is a plain function ``run(ctx) -> counts`` that reads committed upstream outputs and
writes into ``ctx.out`` (a staging folder).  This module decides whether to run it (resume),
commits its output atomically and records it in the manifest.  Stages never see each other:
they talk only through Parquet in the run directory.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import platform
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable

from rich.console import Console

from selectllm import __version__
from selectllm.config import Config, dump_config
from selectllm.errors import UserError
from selectllm.rundir import RunDir

console = Console(stderr=True)

# llm settings that change speed, never answers: changing them must not invalidate a selection.
LLM_SPEED_KEYS = {"rpm", "tpm", "concurrency", "timeout_s", "max_retries", "mode", "api_key_env"}


@dataclass
class StageContext:
    cfg: Config
    run: RunDir
    stage: str
    out: str  # staging folder, filesystem path without protocol
    log: Console = field(default=console)

    @property
    def out_uri(self) -> str:
        return self.run.staging_uri(self.out)

    def out_path(self, *parts: str) -> str:
        import posixpath

        return posixpath.join(self.out, *parts)

    def input_uri(self, stage: str, *parts: str) -> str:
        """URL of a committed upstream stage's output."""
        return self.run.uri(stage, *parts)


@dataclass(frozen=True)
class Stage:
    name: str
    upstream: tuple[str, ...]
    runner: str  # "module:function", imported lazily so `selectllm report` never starts a JVM
    settings: Callable[[Config], str]
    root_files: tuple[str, ...] = ()

    def load(self) -> Callable[[StageContext], dict]:
        module, func = self.runner.split(":")
        return getattr(importlib.import_module(module), func)


def _dedup_settings(cfg: Config) -> str:
    h = cfg.section_hash("input", "dedup")
    return _h(h, cfg.embed.template, cfg.embed.template_no_input)


def _embed_settings(cfg: Config) -> str:
    return cfg.section_hash("embed", exclude={"embed": {"batch_size", "actors", "gpus_per_actor"}})


def _cluster_settings(cfg: Config) -> str:
    from selectllm.cluster.stage import resolved_k

    return _h(cfg.section_hash("cluster", exclude={"cluster": {"shards", "batch", "min_shard_rows", "device"}}), resolved_k(cfg))


def _select_settings(cfg: Config) -> str:
    return cfg.section_hash("select", "llm", exclude={"llm": LLM_SPEED_KEYS})


def _report_settings(cfg: Config) -> str:
    return _h("report-v1")


STAGES: tuple[Stage, ...] = (
    Stage("dedup", (), "selectllm.dedup.stage:run_stage", _dedup_settings),
    Stage("embed", ("dedup",), "selectllm.embed.stage:run_stage", _embed_settings),
    Stage("cluster", ("embed",), "selectllm.cluster.stage:run_stage", _cluster_settings),
    Stage("select", ("dedup", "cluster", "embed"), "selectllm.select.stage:run_stage",
          _select_settings, root_files=("selected.jsonl",)),
    Stage("report", ("dedup", "embed", "cluster", "select"), "selectllm.report.stage:run_stage",
          _report_settings, root_files=("report.html", "metrics.json")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def _h(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_fingerprint(cfg: Config, run: RunDir, stage: Stage) -> str:
    """What a stage reads: the raw files for dedup, the committed upstream outputs otherwise."""
    if not stage.upstream:
        from selectllm.io import expand_inputs

        files = expand_inputs(cfg.input.paths)
        return _h([(f.url, f.size, f.version) for f in files])
    parts = []
    for up in stage.upstream:
        entry = run.stage_entry(up)
        if not entry or entry.get("status") != "complete":
            raise UserError(f"stage '{stage.name}' needs stage '{up}' first (run `selectllm {up}` or `selectllm run`)")
        parts.append((up, entry["output_token"]))
    return _h(parts)


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
    settings = stage.settings(cfg)
    if not force and is_complete(run, stage, fingerprint, settings):
        entry = run.stage_entry(stage.name)
        console.print(f"[dim]· {stage.name}: complete, skipped ({_counts_line(entry.get('counts', {}))})[/]")
        return entry
    run.invalidate(stage.name)
    console.print(f"[bold cyan]▶ {stage.name}[/]")
    out = run.new_staging(stage.name)
    t0 = time.perf_counter()
    try:
        counts = stage.load()(StageContext(cfg=cfg, run=run, stage=stage.name, out=out)) or {}
    except BaseException:
        # leave nothing that could be mistaken for output; the manifest already says "invalidated"
        try:
            run.fs.rm(out, recursive=True)
        except Exception:
            pass
        raise
    seconds = round(time.perf_counter() - t0, 3)
    run.commit(stage.name, out, stage.root_files)
    entry = {
        "status": "complete",
        "input_fingerprint": fingerprint,
        "settings_hash": settings,
        "output_token": uuid.uuid4().hex,
        "counts": counts,
        "seconds": seconds,
        "versions": _versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    run.record_stage(stage.name, entry)
    console.print(f"[green]✔ {stage.name}[/] in {seconds:.1f}s ({_counts_line(counts)})")
    return entry


def _counts_line(counts: dict) -> str:
    flat = [f"{k}={v}" for k, v in counts.items() if isinstance(v, (int, float, str))]
    return ", ".join(flat[:6]) or "no counts"


def open_run(cfg: Config) -> RunDir:
    run = RunDir(cfg.run_dir)
    run.write_text_atomic("config.yaml", dump_config(cfg))
    return run


def run_pipeline(cfg: Config, stages: list[str] | None = None, force: list[str] | None = None) -> RunDir:
    """Run the given stages (all by default) in order; ``force`` recomputes a stage and all after it."""
    run = open_run(cfg)
    wanted = stages or list(STAGE_NAMES)
    unknown = [s for s in (force or []) + wanted if s not in STAGE_NAMES]
    if unknown:
        raise UserError(f"unknown stage '{unknown[0]}' (stages: {', '.join(STAGE_NAMES)})")
    run.clean_staging()
    first_forced = min((STAGE_NAMES.index(s) for s in force or []), default=len(STAGE_NAMES))
    try:
        for i, stage in enumerate(STAGES):
            if stage.name in wanted:
                run_stage(cfg, run, stage, force=i >= first_forced)
    finally:
        from selectllm.engines import shutdown_owned

        shutdown_owned()
    return run
