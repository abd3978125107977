"""The simulator as a server: the aiohttp application, ``serve``/``main`` (``python -m
selectllm.llm.simulator``) and :func:`start_simulator` (a subprocess handle)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from selectllm.config import SimulatorConfig
from selectllm.llm.simulator.batch import (cancel_batch, create_batch, get_batch, get_file, get_file_content,
                                           list_batches, upload_file)
from selectllm.llm.simulator.chat import (DEFAULT_BATCH_DELAY_S, DEFAULT_CONTEXT_LIMIT, DEFAULT_MODELS, STATE,
                                          SimState, chat_completions, health, list_models, stats)

# --------------------------------------------------------------------------- entry points


ROUTES = (
    ("POST", "/v1/chat/completions", chat_completions), ("GET", "/v1/models", list_models),
    ("GET", "/v1/health", health), ("GET", "/v1/stats", stats),
    ("POST", "/v1/files", upload_file), ("GET", "/v1/files/{fid}", get_file),
    ("GET", "/v1/files/{fid}/content", get_file_content),
    ("POST", "/v1/batches", create_batch), ("GET", "/v1/batches", list_batches),
    ("GET", "/v1/batches/{bid}", get_batch), ("POST", "/v1/batches/{bid}/cancel", cancel_batch),
)


def build_app(
    cfg: SimulatorConfig,
    log_path: str | None = None,
    *,
    models: list[str] | tuple[str, ...] | None = DEFAULT_MODELS,
    context_limit: int = DEFAULT_CONTEXT_LIMIT,
    batch_delay_s: float = DEFAULT_BATCH_DELAY_S,
) -> web.Application:
    """The aiohttp application.  ``models=None`` accepts any model name."""
    app = web.Application(client_max_size=256 * 1024 * 1024)
    st = SimState(cfg=cfg, log_path=log_path, models=frozenset(models) if models is not None else None,
                  context_limit=context_limit, batch_delay_s=batch_delay_s)
    app[STATE] = st
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def _close(app: web.Application) -> None:
        app[STATE].close()

    app.on_cleanup.append(_close)
    return app


async def _serve_async(host: str, port: int, app: web.Application, port_file: str | None,
                       exit_with_parent: bool = False) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    actual = runner.addresses[0][1]
    if port_file:
        tmp = f"{port_file}.{os.getpid()}.tmp"
        Path(tmp).write_text(str(actual))
        os.replace(tmp, port_file)
    print(f"selectllm simulator listening on http://{host}:{actual}/v1", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if exit_with_parent:
        parent = os.getppid()

        async def watch_parent() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(0.5)
            stop.set()  # the process that started us is gone: do not linger as an orphan

        watcher = asyncio.create_task(watch_parent())
    try:
        await stop.wait()
    finally:
        if exit_with_parent:
            watcher.cancel()
        await runner.cleanup()


def serve(host: str, port: int, cfg: SimulatorConfig, log_path: str | None = None, *,
          port_file: str | None = None, exit_with_parent: bool = False, **app_kwargs: Any) -> None:
    """Run the server in this process until SIGINT/SIGTERM.  ``port=0`` picks a free port
    (written to ``port_file``); ``exit_with_parent`` stops it when its parent process dies."""
    app = build_app(cfg, log_path, **app_kwargs)
    asyncio.run(_serve_async(host, port, app, port_file, exit_with_parent))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m selectllm.llm.simulator",
                                description="Local OpenAI-compatible LLM simulator.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="0 = pick a free port (see --port-file)")
    p.add_argument("--port-file", help="write the bound port to this file once listening")
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--error-rate", type=float)
    p.add_argument("--malformed-rate", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--log", help="append one JSON line per request to this file")
    p.add_argument("--models", help="comma-separated accepted model names; '*' = any "
                                    f"(default: {','.join(DEFAULT_MODELS)})")
    p.add_argument("--context-limit", type=int, default=DEFAULT_CONTEXT_LIMIT)
    p.add_argument("--batch-delay-s", type=float, default=DEFAULT_BATCH_DELAY_S)
    p.add_argument("--config-json", help="a SimulatorConfig as JSON (flags override it)")
    p.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process dies")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data = json.loads(args.config_json) if args.config_json else {}
    for flag, key in (("latency_ms", "latency_ms"), ("rpm", "rpm"), ("tpm", "tpm"),
                      ("error_rate", "error_rate"), ("malformed_rate", "malformed_rate"), ("seed", "seed")):
        v = getattr(args, flag)
        if v is not None:
            data[key] = v
    cfg = SimulatorConfig.model_validate(data)
    models: tuple[str, ...] | None = DEFAULT_MODELS
    if args.models:
        models = None if args.models.strip() == "*" else tuple(m.strip() for m in args.models.split(",") if m.strip())
    serve(args.host, args.port, cfg, args.log, port_file=args.port_file, models=models,
          context_limit=args.context_limit, batch_delay_s=args.batch_delay_s,
          exit_with_parent=args.exit_with_parent)
    return 0


# --------------------------------------------------------------------------- subprocess handle


class SimulatorHandle:
    """A simulator running in a child process.  Use as a context manager or call :meth:`stop`."""

    def __init__(self, proc: subprocess.Popen, port: int, stderr_path: str, tmpdir: str) -> None:
        self.proc = proc
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._stderr_path = stderr_path
        self._tmpdir = tmpdir

    def _get(self, path: str, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=timeout) as r:  # noqa: S310 (loopback)
            return json.loads(r.read())

    def stats(self) -> dict:
        return self._get("/stats")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        try:
            for p in Path(self._tmpdir).iterdir():
                p.unlink()
            Path(self._tmpdir).rmdir()
        except OSError:
            pass

    def __enter__(self) -> "SimulatorHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_simulator(
    cfg: SimulatorConfig | None = None,
    log_path: str | None = None,
    *,
    models: list[str] | tuple[str, ...] | None = DEFAULT_MODELS,
    context_limit: int = DEFAULT_CONTEXT_LIMIT,
    batch_delay_s: float = DEFAULT_BATCH_DELAY_S,
    startup_timeout_s: float = 60.0,
) -> SimulatorHandle:
    """Start the simulator in a subprocess on a free loopback port; return once it answers."""
    cfg = cfg or SimulatorConfig()
    tmpdir = tempfile.mkdtemp(prefix="selectllm-sim-")
    port_file = os.path.join(tmpdir, "port")
    stderr_path = os.path.join(tmpdir, "stderr.txt")
    cmd = [sys.executable, "-m", "selectllm.llm.simulator", "--host", "127.0.0.1", "--port", "0",
           "--port-file", port_file, "--config-json", cfg.model_dump_json(),
           "--context-limit", str(context_limit), "--batch-delay-s", str(batch_delay_s),
           "--models", "*" if models is None else ",".join(models), "--exit-with-parent"]
    if log_path:
        cmd += ["--log", str(log_path)]
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=env, start_new_session=True)
    deadline = time.monotonic() + startup_timeout_s
    handle: SimulatorHandle | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if handle is None and os.path.exists(port_file):
            handle = SimulatorHandle(proc, int(Path(port_file).read_text()), stderr_path, tmpdir)
        if handle is not None:
            try:
                handle._get("/health", timeout=2.0)
                return handle
            except (urllib.error.URLError, OSError, ValueError):
                pass
        time.sleep(0.05)
    tail = ""
    try:
        tail = Path(stderr_path).read_text(errors="replace")[-2000:]
    except OSError:
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    raise RuntimeError(f"the LLM simulator did not start (exit code {proc.poll()}): {tail.strip()}")

