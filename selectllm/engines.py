"""Thin engine adapters: get a Spark session or a Ray connection, configured from the config.

Stages call these and never configure engines themselves.  A session this module started is
stopped at the end of the pipeline; one the caller already had (a test's, a notebook's) is reused
and left alone.
"""

from __future__ import annotations

import os

from selectllm import logs
from selectllm.config import Config

_owned: dict[str, object] = {}


# set unless spark-submit / spark-defaults.conf / spark.conf already did
SPARK_DEFAULTS = {
    "spark.app.name": "selectllm",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # shuffle partitions are sized per input (size_shuffle); AQE merges the small ones
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    # Arrow batches handed to the Python passes are cut by bytes too, not only by rows (10,000):
    # a batch of long rows (up to dedup.max_chars each) stays ~16 MB, whatever the rows' length
    "spark.sql.execution.arrow.maxBytesPerBatch": str(16 << 20),
}
DRIVER_MEMORY_CLUSTER = "2g"  # a cluster's driver only plans and collects small aggregates
LOCAL_DRIVER_SHARE = 0.25  # local mode: the JVM (driver = executors) gets at most this share of the RAM
LOCAL_DRIVER_BASE_MB, LOCAL_DRIVER_PER_CORE_MB = 2048, 1024  # ... and at most this per task slot
LOCAL_DRIVER_MIN_MB, LOCAL_DRIVER_MAX_MB = 2048, 64 << 10
SHUFFLE_BYTES_PER_PARTITION = 32 << 20  # input bytes per initial shuffle partition
MAX_SHUFFLE_PARTITIONS = 20_000


def cache_level():
    """The storage level of the tables a Spark stage caches between its jobs (``persist``,
    ``localCheckpoint``): serialized on the executors' local disks, not in the JVM heap.  A cache
    in the heap fills it in proportion to the input (up to ``spark.memory.fraction`` of it), so the
    JVM's memory would follow the input's size; on disk the OS page cache keeps the recent blocks
    and reading them back costs little next to the Python passes that produce them."""
    from pyspark import StorageLevel

    return StorageLevel.DISK_ONLY


def machine_memory_bytes() -> int:
    """Physical RAM of this machine (or the cgroup limit of this container, when lower)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit():
            total = min(total, int(raw))
    return total


def driver_memory(master: str) -> str:
    """``spark.driver.memory`` when the user set none: in local mode the JVM runs every task, so
    2 GiB + 1 GiB per task slot (``local[N]``: N, ``local[*]``: the CPUs), at most a quarter of
    the machine's RAM (2 GiB to 64 GiB; the rest is for the Python workers and the OS); on a
    cluster 2g.  The tasks' memory is bounded (splits, spills, caches on disk), so the heap
    follows the slots, not the input: a larger heap would only be filled by lazy collection."""
    if not is_local_master(master):
        return DRIVER_MEMORY_CLUSTER
    share = int(machine_memory_bytes() * LOCAL_DRIVER_SHARE) >> 20
    slots = LOCAL_DRIVER_BASE_MB + LOCAL_DRIVER_PER_CORE_MB * local_slots(master)
    return f"{max(LOCAL_DRIVER_MIN_MB, min(LOCAL_DRIVER_MAX_MB, share, slots))}m"


def local_slots(master: str) -> int:
    """Task slots of a local master: ``local`` 1, ``local[N]`` / ``local[N,F]`` N, ``local[*]`` the CPUs."""
    import re

    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if m is None or m.group(1) is None:
        return 1
    if m.group(1) == "*":
        return os.cpu_count() or 1
    return max(1, int(m.group(1)))


def shuffle_partitions(input_bytes: int, parallelism: int) -> int:
    """Initial shuffle partitions for ``input_bytes`` of input: one per 32 MB, at least one per
    core (AQE coalesces the small ones after each shuffle)."""
    return int(max(parallelism, min(MAX_SHUFFLE_PARTITIONS, -(-input_bytes // SHUFFLE_BYTES_PER_PARTITION))))


def size_shuffle(spark, cfg: Config, input_bytes: int) -> int | None:
    """Set ``spark.sql.shuffle.partitions`` from the input size unless the user set it (in
    ``spark.conf``, spark-submit's ``--conf``, or the session they brought).  Returns the value set."""
    key = "spark.sql.shuffle.partitions"
    if key in cfg.spark.conf:
        return None
    try:
        if spark.sparkContext.getConf().contains(key):
            return None
        parallelism = spark.sparkContext.defaultParallelism
    except Exception:  # Spark Connect: the server decides
        return None
    n = shuffle_partitions(input_bytes, parallelism)
    spark.conf.set(key, str(n))
    return n


def under_spark_submit() -> bool:
    """True when this Python process was started by ``spark-submit`` (its JVM is already up)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def is_local_master(master: str) -> bool:
    """``local`` / ``local[N]`` run executors inside the driver's JVM (``local-cluster`` does not)."""
    return master.startswith("local") and not master.startswith("local-cluster")


def spark_session(cfg: Config):
    """The active SparkSession if there is one, else a new one from ``spark.*`` settings.

    Under ``spark-submit``, what it was given wins: its ``--master`` (``spark.master`` in the
    config is then ignored) and its ``--conf`` settings; ``spark.conf`` from the config fills in
    the rest, then :data:`SPARK_DEFAULTS` and :func:`driver_memory`.  Elsewhere (``selectllm run``,
    a Ray job) ``spark.master`` decides, e.g.
    ``spark://host:7077``, ``yarn`` or ``k8s://https://...``.  On a non-local master the
    ``selectllm`` package is shipped to the executors (``addPyFile``), so they run the driver's
    code; its dependencies (pyarrow, fsspec, s3fs, zstandard) must be installed there.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    preset = None
    if under_spark_submit():  # connect to spark-submit's JVM and read what it was given
        SparkContext._ensure_initialized()
        preset = SparkConf()
    master = preset.get("spark.master", cfg.spark.master) if preset is not None else cfg.spark.master
    if master.startswith("local"):  # local, local[N], local-cluster[...]
        # executors are this machine's processes: same interpreter (elsewhere the cluster's own)
        os.environ.setdefault("PYSPARK_PYTHON", _python())
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", _python())
    builder = SparkSession.builder.master(master)
    defaults = dict(SPARK_DEFAULTS, **{"spark.driver.memory": driver_memory(master)})
    settings = {**defaults, **cfg.spark.conf}
    log4j2 = logs.spark_log4j2() if preset is None else None  # quiet CLI: Spark's log to logs/spark.log
    if log4j2 is not None:
        settings.setdefault("spark.ui.showConsoleProgress", "false")
        own = settings.get("spark.driver.extraJavaOptions", "")
        settings["spark.driver.extraJavaOptions"] = f"{own} -Dlog4j2.configurationFile=file:{log4j2}".strip()
    for key, value in settings.items():
        if preset is None or not preset.contains(key):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if log4j2 is None:  # quiet: the configuration file decides (warnings, into spark.log)
        spark.sparkContext.setLogLevel("WARN" if logs.mode() == "verbose" else "ERROR")
    if not is_local_master(master):
        ship_package(spark)
    _owned["spark"] = spark
    return spark


def ship_package(spark) -> str:
    """Zip this ``selectllm`` package and add it to the executors' Python path (``addPyFile``)."""
    import tempfile
    import zipfile
    from pathlib import Path

    import selectllm

    import atexit
    import shutil

    pkg = Path(selectllm.__file__).resolve().parent
    folder = tempfile.mkdtemp(prefix="selectllm-pyfiles-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "selectllm.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        # the modules and the package data they read (the privacy stage's secret rules, *.toml)
        for f in sorted([*pkg.rglob("*.py"), *pkg.rglob("*.toml")]):
            z.write(f, str(Path("selectllm") / f.relative_to(pkg)))
    spark.sparkContext.addPyFile(path)
    return path


def ray_init(cfg: Config) -> None:
    """Connect to ``ray.address`` (or RAY_ADDRESS, e.g. under `ray job submit`), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    # quiet CLI: workers' output stays in the session's logs (copied to run_dir/logs/ray/ at the end)
    quiet = logs.quiet()
    kwargs: dict = {"include_dashboard": False, "logging_level": "ERROR" if quiet else "WARNING",
                    "log_to_driver": not quiet}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **{k: v for k, v in kwargs.items() if k != "include_dashboard"})
    else:
        # address="local": always a fresh local Ray, never a cluster some `ray start` left running
        context = ray.init(address="local", num_cpus=cfg.ray.num_cpus or os.cpu_count(), **kwargs)
        _owned["ray"] = context.address_info.get("session_dir") or True
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = not quiet
    except Exception:  # pragma: no cover - older Ray
        pass


def stop_spark() -> None:
    spark = _owned.pop("spark", None)
    if spark is not None:
        spark.stop()


def shutdown_owned() -> None:
    """Stop what this module started (never a session the caller brought)."""
    stop_spark()
    session = _owned.pop("ray", None)
    if session:
        import ray

        ray.shutdown()
        logs.keep_ray_session(session if isinstance(session, str) else None)


def _python() -> str:
    import sys

    return sys.executable
