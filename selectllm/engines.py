"""Thin engine adapters: get a Spark session or a Ray connection, configured from the config.

Stages call these and never configure engines themselves.  A session this module started is
stopped at the end of the pipeline; one the caller already had (a test's, a notebook's) is reused
and left alone.
"""

from __future__ import annotations

import os

from selectllm.config import Config

_owned: dict[str, object] = {}


def spark_session(cfg: Config):
    """The active SparkSession if there is one, else a new one from ``spark.*`` settings."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", _python())
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", _python())
    builder = (
        SparkSession.builder.appName("selectllm")
        .master(cfg.spark.master)
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "2g")
    )
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    _owned["spark"] = spark
    return spark


def ray_init(cfg: Config) -> None:
    """Connect to ``ray.address`` (or RAY_ADDRESS, e.g. under `ray job submit`), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **{k: v for k, v in kwargs.items() if k != "include_dashboard"})
    else:
        # address="local": always a fresh local Ray, never a cluster some `ray start` left running
        ray.init(address="local", num_cpus=cfg.ray.num_cpus or os.cpu_count(), **kwargs)
        _owned["ray"] = True
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = True
    except Exception:  # pragma: no cover - older Ray
        pass


def stop_spark() -> None:
    spark = _owned.pop("spark", None)
    if spark is not None:
        spark.stop()


def shutdown_owned() -> None:
    """Stop what this module started (never a session the caller brought)."""
    stop_spark()
    if _owned.pop("ray", None):
        import ray

        ray.shutdown()


def _python() -> str:
    import sys

    return sys.executable
