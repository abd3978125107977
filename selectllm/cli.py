"""The ``selectllm`` command.  Every failure a user can fix is one line on stderr, exit code 2."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import List, Optional

import typer

from selectllm.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Choose which unlabeled instructions are worth annotating (SelectLLM), at scale.")

_state = {"debug": False}

ConfigArg = typer.Argument(..., help="YAML config (see README, 'Configuration').")
RunDirOpt = typer.Option(None, "--run-dir", help="Override run_dir (local path or URL).")
SetOpt = typer.Option(None, "--set", help="Override a config key: --set select.budget=200 (YAML value).")
ForceOpt = typer.Option(None, "--force", help="Recompute this stage and every stage after it.")
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks.")
VerboseOpt = typer.Option(False, "--verbose", "-v",
                          help="Show Spark's and Ray's own output on the terminal (default: run_dir/logs/).")


def _load(config: str, run_dir: Optional[str], sets: Optional[List[str]], debug: bool):
    from selectllm.config import load_config

    _state["debug"] = debug
    overrides = list(sets or [])
    if run_dir:
        overrides.append(f"run_dir={run_dir}")
    return load_config(config, overrides)


def _offline_defaults() -> None:
    # the default embedding model ships with the package: never wait on a hub that cannot answer
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def _engine_output(cfg, verbose: bool):
    """Spark's and Ray's output: into run_dir/logs/ unless --verbose (see logs.py)."""
    from selectllm.logs import engine_output, verbose_requested

    return engine_output(cfg.run_dir, verbose=verbose_requested(verbose))


def _run(config, run_dir, sets, force, debug, stages=None, verbose=False) -> None:
    from selectllm.logs import LOGS, verbose_requested
    from selectllm.pipeline import run_pipeline

    _offline_defaults()
    cfg = _load(config, run_dir, sets, debug)
    with _engine_output(cfg, verbose):
        run = run_pipeline(cfg, stages=stages, force=list(force or []))
    if stages is None or "select" in stages or "report" in stages:
        for name in ("selected.jsonl", "report.html"):
            if run.exists(name):
                typer.echo(f"{name}: {run.uri(name)}")
        counts = (run.stage_entry("select") or {}).get("counts") or {}
        if counts.get("llm_health"):  # the LLM's health, last (see select/health.py)
            from selectllm.select.health import health_line

            typer.echo(health_line(counts["llm_health"], counts.get("structured_output")))
    if not verbose_requested(verbose):
        typer.echo(f"engine logs: {run.uri(LOGS)}/")


@app.command()
def run(config: str = ConfigArg, run_dir: Optional[str] = RunDirOpt, set_: Optional[List[str]] = SetOpt,
        force: Optional[List[str]] = ForceOpt, debug: bool = DebugOpt, verbose: bool = VerboseOpt):
    """All stages: dedup -> embed -> cluster -> select -> report (complete stages are skipped)."""
    _run(config, run_dir, set_, force, debug, verbose=verbose)


def _stage_command(name: str, doc: str):
    def command(config: str = ConfigArg, run_dir: Optional[str] = RunDirOpt, set_: Optional[List[str]] = SetOpt,
                force: bool = typer.Option(False, "--force", help="Recompute even if complete."),
                debug: bool = DebugOpt, verbose: bool = VerboseOpt):
        _run(config, run_dir, set_, [name] if force else [], debug, stages=[name], verbose=verbose)

    command.__doc__ = doc
    app.command(name=name)(command)


def _declared_stages():
    from selectllm.pipeline import STAGES  # the declarations: cheap, no engine starts

    return STAGES


for _stage in _declared_stages():
    _stage_command(_stage.name, _stage.doc)


@app.command()
def estimate(config: str = ConfigArg, run_dir: Optional[str] = RunDirOpt, set_: Optional[List[str]] = SetOpt,
             debug: bool = DebugOpt, verbose: bool = VerboseOpt):
    """Upper bound of the LLM cost, with no LLM call (runs dedup/embed/cluster if needed)."""
    from selectllm.estimate import estimate_cost
    from selectllm.pipeline import run_pipeline

    _offline_defaults()
    cfg = _load(config, run_dir, set_, debug)
    with _engine_output(cfg, verbose):
        run = run_pipeline(cfg, stages=["dedup", "embed", "cluster"])
        cost = estimate_cost(cfg, run)
    typer.echo(json.dumps(cost, sort_keys=True))


@app.command()
def compare(config: str = ConfigArg,
            strategies: Optional[str] = typer.Option(
                None, "--strategies",
                help="Comma-separated strategies (default: selectllm,selectllm-paper,random,kcenter,"
                     "kmeans-closest,length,alpagasus)."),
            run_dir: Optional[str] = RunDirOpt, set_: Optional[List[str]] = SetOpt,
            force: bool = typer.Option(False, "--force", help="Recompute the comparison even if complete."),
            debug: bool = DebugOpt, verbose: bool = VerboseOpt):
    """Several strategies over the same embeddings: compare/compare.json, compare/compare.html."""
    from selectllm.compare.stage import parse_strategies, print_table, run_compare

    _offline_defaults()
    cfg = _load(config, run_dir, set_, debug)
    names = parse_strategies(strategies) if strategies else list(cfg.compare.strategies)
    with _engine_output(cfg, verbose):
        run, results = run_compare(cfg, names, force=force)
    print_table(results)
    typer.echo(f"compare.json: {run.uri('compare', 'compare.json')}")
    typer.echo(f"compare.html: {run.uri('compare', 'compare.html')}")


history_app = typer.Typer(no_args_is_help=True, help="The programme's history (config key 'history').")
app.add_typer(history_app, name="history")
HistoryConfigOpt = typer.Option(None, "--config", help="A config whose 'history' names the history.")
HistoryUrlOpt = typer.Option(None, "--history", help="The history's path or URL (instead of --config).")


def _history(config: Optional[str], url: Optional[str], sets: Optional[List[str]], debug: bool):
    from selectllm.history import History

    _state["debug"] = debug
    if url is None:
        if config is None:
            raise UserError("history: give --config CONFIG (its 'history' key) or --history URL")
        url = _load(config, None, sets, debug).history.path
        if not url:
            raise UserError(f"history: {config} sets no 'history'")
    return History(url)


@history_app.command("import")
def history_import(file: str = typer.Argument(..., help="CSV (header with id[,status]) or JSON lines ({id, status})."),
                   config: Optional[str] = HistoryConfigOpt, history: Optional[str] = HistoryUrlOpt,
                   status: Optional[str] = typer.Option(None, "--status",
                                                        help="annotated | rejected, for rows without a status."),
                   set_: Optional[List[str]] = SetOpt, debug: bool = DebugOpt):
    """Mark rows annotated or rejected (an annotation tool's export): no later run selects them."""
    from selectllm.history import import_statuses

    h = _history(config, history, set_, debug)
    with h.lock(f"import {file}"):
        entry = import_statuses(h, file, status)
    typer.echo(json.dumps({"commit": entry["seq"], **entry["summary"]}, sort_keys=True))


@history_app.command("show")
def history_show(config: Optional[str] = HistoryConfigOpt, history: Optional[str] = HistoryUrlOpt,
                 set_: Optional[List[str]] = SetOpt, debug: bool = DebugOpt):
    """The commits of the history (runs and imports), one JSON object per line."""
    h = _history(config, history, set_, debug)
    for c in h.commits():
        typer.echo(json.dumps({k: c.get(k) for k in ("seq", "kind", "run_id", "run_dir", "source", "finished_at",
                                                     "summary") if c.get(k) is not None}, sort_keys=True))

@app.command()
def evaluate(config: str = ConfigArg,
             strategies: Optional[str] = typer.Option(
                 None, "--strategies", help="Comma-separated strategies (default: evaluate.strategies)."),
             seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds (default: evaluate.seeds)."),
             run_dir: Optional[str] = RunDirOpt, set_: Optional[List[str]] = SetOpt,
             force: bool = typer.Option(False, "--force", help="Recompute the evaluation even if complete."),
             debug: bool = DebugOpt, verbose: bool = VerboseOpt):
    """Fine-tune a small LM with LoRA on each strategy's picks, score a held-out set: evaluate/."""
    from selectllm.compare.stage import parse_strategies
    from selectllm.evaluate.stage import parse_list, print_table, run_evaluate

    _offline_defaults()
    cfg = _load(config, run_dir, set_, debug)
    names = parse_strategies(strategies) if strategies else None
    try:
        seed_list = parse_list(seeds, int) if seeds else None
    except ValueError:
        raise UserError(f"--seeds takes comma-separated integers, not {seeds!r}") from None
    if seed_list and len(set(seed_list)) != len(seed_list):
        raise UserError(f"--seeds lists a seed twice: {seeds}")
    with _engine_output(cfg, verbose):
        run, doc = run_evaluate(cfg, names, seed_list, force=force)
    print_table(doc)
    typer.echo(f"evaluate.json: {run.uri('evaluate', 'evaluate.json')}")
    typer.echo(f"evaluate.html: {run.uri('evaluate', 'evaluate.html')}")


@app.command("simulate-llm")
def simulate_llm(port: int = typer.Option(8011, "--port", help="0 picks a free port."),
                 host: str = typer.Option("127.0.0.1", "--host"),
                 latency_ms: float = typer.Option(20.0, "--latency-ms"),
                 rpm: Optional[int] = typer.Option(None, "--rpm"),
                 tpm: Optional[int] = typer.Option(None, "--tpm"),
                 error_rate: float = typer.Option(0.0, "--error-rate"),
                 malformed_rate: float = typer.Option(0.0, "--malformed-rate"),
                 seed: int = typer.Option(0, "--seed"),
                 log: Optional[str] = typer.Option(None, "--log", help="Request log (JSON lines)."),
                 debug: bool = DebugOpt):
    """A local OpenAI-compatible server (chat completions, files, batches, rate-limit headers)."""
    from selectllm.config import SimulatorConfig
    from selectllm.llm.simulator import serve

    _state["debug"] = debug
    cfg = SimulatorConfig(latency_ms=latency_ms, rpm=rpm, tpm=tpm, error_rate=error_rate,
                          malformed_rate=malformed_rate, seed=seed)
    serve(host, port, cfg, log)


_FRAME_LINE = re.compile(r'^\s+File ".*", line \d+')
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")


def worker_error(text: str) -> str | None:
    """``Type: message`` of the innermost exception of the last Python traceback in an engine's
    error text (Spark's PythonException, Ray's RayTaskError carry a worker's traceback), or
    None when the text holds no traceback.  A :class:`UserError` raised in a worker: its message."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line] or \
        [i for i, line in enumerate(lines) if _FRAME_LINE.match(line)][:1]  # Ray: frames, no header
    if not starts:
        return None
    found = None
    for line in lines[starts[-1] + 1:]:  # the first unindented "Type: message" after the frames
        m = _EXC_LINE.match(line.strip())
        if m and not line.startswith((" ", "\t")):
            found = m
            break
    if found is None:
        return None
    name, msg = found.group(1).rsplit(".", 1)[-1], (found.group(2) or "").strip()
    if name == "UserError" and msg:
        return msg
    return f"{name}: {msg}" if msg else name


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = app(args=argv, standalone_mode=False)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and anything unexpected
        import click

        if isinstance(e, click.exceptions.Exit):
            raise SystemExit(e.exit_code)
        if isinstance(e, click.ClickException):
            typer.echo(f"error: {e.format_message()}", err=True)
            raise SystemExit(2)
        if debug or _state["debug"]:
            raise
        inner = worker_error(str(e))
        if inner is not None:  # an exception in a Spark or Ray worker: name it, not the wrapper
            typer.echo(f"error: {inner} (in a {type(e).__name__}; run with --debug for the traceback)", err=True)
            raise SystemExit(1)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        typer.echo(f"error: {type(e).__name__}: {msg} (run with --debug for the traceback)", err=True)
        raise SystemExit(1)
    if isinstance(code, int) and code != 0:  # typer turns Ctrl-C into exit code 130
        if code == 130:
            typer.echo("interrupted", err=True)
        raise SystemExit(code)


if __name__ == "__main__":
    main()
