"""Where engine output goes: ``run_dir/logs/`` by default, the terminal with ``--verbose``.

The terminal shows the project's own lines (a line per stage, progress, results, errors).
Everything else is written to the run's ``logs/`` folder:

* ``engines.log``: whatever the process and its children write to stdout/stderr while the
  pipeline runs: the JVM's start-up lines, Ray's driver messages and Ray Data's progress logger,
  C++ warnings of Ray's core worker, library warnings and progress bars.  File descriptors 1 and 2
  point at it (so children started meanwhile inherit it); the project's console writes to the
  terminal the process started with.
* ``spark.log``: Spark's log4j output (a log4j2 configuration handed to the driver JVM).
* ``ray/``: the logs folder of the local Ray session (workers, actors, raylet, GCS), copied when
  the pipeline stops the Ray it started.  A cluster's Ray keeps its logs on the cluster.

An object-store run directory gets its logs written to a local temporary folder first, copied to
``run_dir/logs/`` when the command ends.  Warnings that matter are found in those logs after each
stage (:data:`PATTERNS`) and shown once, in the project's words.  ``--verbose`` (or
``SELECTLLM_VERBOSE=1``) leaves the engines' output on the terminal, as they print it.
Library use (tests, notebooks) sees neither: nothing changes unless the CLI turns a mode on.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

from selectllm.console import console

LOGS = "logs"
ENGINE_LOG = "engines.log"
SPARK_LOG = "spark.log"
RAY_LOGS = "ray"
LOG4J2 = "log4j2.properties"
SCAN_MAX_BYTES = 64 << 20  # per check and file: a runaway log is skipped past, never read whole

# (what a log line says, what the user is told): each shown at most once per command
PATTERNS: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), m) for p, m in (
    (r"object store is using \S+ instead of /dev/shm",
     "ray: /dev/shm is too small, so Ray's object store lives on disk (slower); give the machine or "
     "container a larger /dev/shm (docker run --shm-size=...)"),
    (r"java\.lang\.OutOfMemoryError",
     "spark: a JVM ran out of memory; raise it with --set spark.conf.spark.driver.memory=... "
     "(spark.executor.memory on a cluster)"),
    (r"TaskSetManager: Lost task",
     "spark: tasks failed and were retried"),
    (r"running low on memory|OutOfMemoryError: Task was killed",
     "ray: workers were killed for lack of memory; lower embed.batch_size or embed.actors, or add memory"),
    (r"ObjectStoreFullError|Spilled \d+ MiB",
     "ray: the object store filled up and spilled to disk; the run is slower"),
    (r"RayActorError|The actor died unexpectedly|A worker died or was killed",
     "ray: a worker died unexpectedly (Ray restarts it; a repeated failure stops the stage)"),
))

SPARK_LOG4J2 = """\
# written by selectllm: Spark's log4j output goes to {path}, not to the terminal
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
logger.parquet.name = org.apache.parquet
logger.parquet.level = error
"""


@dataclass
class _State:
    mode: str | None = None  # None (library use) | "quiet" | "verbose"
    folder: str = ""  # local folder of this command's logs (quiet mode)
    offsets: dict[str, int] = field(default_factory=dict)
    told: set[str] = field(default_factory=set)


_state = _State()


def mode() -> str | None:
    return _state.mode


def quiet() -> bool:
    return _state.mode == "quiet"


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("SELECTLLM_VERBOSE", "").strip().lower() in ("1", "true", "yes")


def folder() -> str:
    """The local folder that holds this command's logs ("" unless quiet)."""
    return _state.folder


def spark_log4j2() -> str | None:
    """Path of a log4j2 configuration sending Spark's log to ``spark.log`` (quiet mode), else None."""
    if not quiet():
        return None
    path = os.path.join(_state.folder, LOG4J2)
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(SPARK_LOG4J2.format(path=os.path.join(_state.folder, SPARK_LOG)))
    return path


def keep_ray_session(session_dir: str | None) -> None:
    """Copy a local Ray session's ``logs/`` to ``logs/ray/`` (after that Ray was shut down)."""
    if not quiet() or not session_dir:
        return
    src = os.path.join(session_dir, "logs")
    if not os.path.isdir(src):
        return
    dst = os.path.join(_state.folder, RAY_LOGS)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=False, ignore_dangling_symlinks=True,
                    ignore=shutil.ignore_patterns("*.sock", "*.lock"), dirs_exist_ok=True)


def findings(text: str) -> list[str]:
    """The user-facing messages whose patterns occur in ``text``, in :data:`PATTERNS` order."""
    return [message for pattern, message in PATTERNS if pattern.search(text)]


def check() -> list[str]:
    """Scan what the engine logs gained since the last check; show each new finding once."""
    if not quiet():
        return []
    shown = []
    for name in (ENGINE_LOG, SPARK_LOG):
        path = os.path.join(_state.folder, name)
        try:
            size = os.path.getsize(path)
        except OSError:
            continue
        start = max(_state.offsets.get(name, 0), size - SCAN_MAX_BYTES)
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read(size - start).decode("utf-8", "replace")
        _state.offsets[name] = size
        for message in findings(text):
            if message not in _state.told:
                _state.told.add(message)
                shown.append(message)
                console.print(f"[yellow]warning:[/] {message} (details: {_shown_folder()})", highlight=False)
    return shown


_target = {"logs": ""}  # where the logs end up (run_dir/logs), for messages


def _shown_folder() -> str:
    return _target["logs"] or _state.folder


@contextlib.contextmanager
def engine_output(run_url: str, verbose: bool = False):
    """Quiet (default): engine output to ``<run_dir>/logs/``; verbose: left on the terminal."""
    from selectllm.rundir import RunDir, is_url

    if verbose:
        _state.mode = "verbose"
        try:
            yield
        finally:
            _state.mode = None
        return
    run = RunDir(run_url)
    remote = is_url(run.url)
    local = tempfile.mkdtemp(prefix="selectllm-logs-") if remote else run.path(LOGS)
    os.makedirs(local, exist_ok=True)
    _target["logs"] = run.uri(LOGS) if remote else local
    _state.mode, _state.folder, _state.offsets, _state.told = "quiet", local, {}, set()
    for name in (ENGINE_LOG, SPARK_LOG):  # findings are about this command's lines only
        with contextlib.suppress(OSError):
            _state.offsets[name] = os.path.getsize(os.path.join(local, name))
    log = open(os.path.join(local, ENGINE_LOG), "ab")
    log.write(f"==== selectllm {' '.join(sys.argv[1:])} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
              .encode())
    log.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    console.file = terminal
    try:
        yield
    finally:
        check()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        console.file = None  # back to following sys.stderr
        terminal.close()
        log.close()
        _state.mode = None
        if remote:
            _publish(run, local)


def _publish(run, local: str) -> None:
    """Copy a temporary log folder to an object-store run directory's ``logs/`` (then remove it)."""
    try:
        for root, _, files in os.walk(local):
            for name in files:
                src = os.path.join(root, name)
                rel = os.path.relpath(src, local).replace(os.sep, "/")
                run.fs.put_file(src, run.path(posixpath.join(LOGS, rel)))
    except Exception as e:  # the run itself succeeded or failed on its own; say where the logs stayed
        console.print(f"[yellow]warning:[/] could not copy the engine logs to {run.uri(LOGS)} "
                      f"({type(e).__name__}); they stay in {local}", highlight=False)
        return
    shutil.rmtree(local, ignore_errors=True)
