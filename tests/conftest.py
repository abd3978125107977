"""Shared fixtures: one Spark session and one Ray runtime per test run (they are slow to start)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

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
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


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
