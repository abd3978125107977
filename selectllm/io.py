"""Input discovery (``input.paths`` -> files) and Parquet between Spark and any fsspec URL.

URLs (``s3://``, ``gs://``, ...) go through fsspec; credentials and endpoints come from the
environment / the provider's chain (``AWS_*``, ``AWS_ENDPOINT_URL``, instance and pod roles).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

import fsspec
import pyarrow as pa

from selectllm.errors import UserError

DATA_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".csv", ".txt")
COMPRESSIONS = (".gz", ".zst", ".zstd")


@dataclass(frozen=True)
class InputFile:
    url: str  # full URL for remote files, absolute path for local ones
    size: int
    version: str  # mtime or ETag: changes when the file changes; a table file: the table's version
    meta: str = ""  # what a table or partitioned folder adds to the file's rows (JSON; selectllm.lake)


def release_arrow_memory() -> None:
    """Hand the memory Arrow's pool holds for reuse back to the OS.  Its allocator keeps freed
    buffers, so a process that streams many Parquet batches would keep the high-water mark of
    them all; call this between files or row groups of a long read."""
    pa.default_memory_pool().release_unused()


def _strip_compression(name: str) -> str:
    for c in COMPRESSIONS:
        if name.endswith(c):
            return name[: -len(c)]
    return name


def is_data_file(name: str) -> bool:
    return _strip_compression(name.lower()).endswith(DATA_SUFFIXES)


def expand_inputs(paths: list[str]) -> list[InputFile]:
    """Files named by paths/globs/folders, sorted, each once.  A path matching nothing is an error."""
    if not paths:
        raise UserError("config: input.paths is empty: name at least one file, glob or folder")
    seen: dict[str, InputFile] = {}
    for raw in paths:
        remote = "://" in raw and not raw.startswith("file://")
        target = raw if remote else os.path.abspath(os.path.expanduser(raw.removeprefix("file://")))
        try:
            fs, root = fsspec.core.url_to_fs(target)
            if fs.isdir(root):
                found = [p for p in fs.find(root) if is_data_file(p)]
            elif any(ch in root for ch in "*?["):
                found = [p for p in fs.glob(root) if not fs.isdir(p)]
            elif fs.exists(root):
                found = [root]
            else:
                found = []
        except UserError:
            raise
        except Exception as e:  # missing/wrong credentials, no such bucket, no fsspec backend: one line
            msg = str(e).splitlines()[0] if str(e) else ""
            raise UserError(f"cannot read input {raw}: {type(e).__name__}: {msg}") from None
        if not found:
            raise UserError(f"input path matches no file: {raw}")
        proto = target.split("://", 1)[0] if remote else None
        for p in sorted(found):
            info = fs.info(p)
            version = str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or "")
            url = f"{proto}://{p}" if proto else p
            seen[url] = InputFile(url=url, size=int(info.get("size") or 0), version=version)
    return [seen[k] for k in sorted(seen)]


# ----------------------------------------------------------------------------- Spark <-> any fsspec URL
# Spark reads and writes through Hadoop filesystems.  ``s3://`` needs S3A (hadoop-aws and the AWS
# SDK on the classpath), ``gs://`` the GCS connector.  Where the cluster has them, Spark's own
# reader and writer are used.  Where it does not (pip-installed PySpark, a cluster without
# hadoop-aws), Parquet is written and read by the Python tasks themselves through fsspec/pyarrow
# (mapInArrow), so it works on every executor of any cluster, with no driver-side copy.


def spark_uri(uri: str) -> str:
    """Hadoop's S3 connector is ``s3a://``; fsspec (and users) say ``s3://``."""
    return "s3a://" + uri[len("s3://"):] if uri.startswith("s3://") else uri


def spark_handles(spark, uri: str) -> bool:
    """Whether Spark's Hadoop filesystems can read and write ``uri`` (e.g. S3A is on the classpath)."""
    if "://" not in uri or uri.startswith("file://"):
        return True
    scheme = spark_uri(uri).split("://", 1)[0].lower()
    try:
        jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()
    except AttributeError:  # Spark Connect: the server's filesystems cannot be seen from here
        return True
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, conf)
        return True
    except Exception:  # ClassNotFoundException / UnsupportedFileSystemException
        return False


def _fsspec_parts_writer(uri: str, schema: pa.Schema):
    """mapInArrow function: this partition's batches -> ``uri/part-NNNNN.parquet`` (none when empty)."""

    def write(batches):
        import posixpath

        import pyarrow.parquet as pq
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        fs, root = fsspec.core.url_to_fs(uri)
        path = posixpath.join(root, f"part-{part:05d}.parquet")
        rows, f, writer = 0, None, None
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                if writer is None:  # a retried task overwrites its own file: no leftovers
                    f = fs.open(path, "wb")
                    writer = pq.ParquetWriter(f, schema)
                writer.write_table(pa.Table.from_batches([batch]).select(schema.names).cast(schema))
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
            if f is not None:
                f.close()
        yield pa.RecordBatch.from_pydict({"part": [part], "rows": [rows]},
                                         schema=pa.schema([("part", pa.int32()), ("rows", pa.int64())]))

    return write


def spark_write_parquet(df, uri: str, schema: pa.Schema, how: str = "auto") -> int:
    """Write ``df`` as a folder of Parquet part files at ``uri`` (replacing it), in partition order.

    ``how``: ``spark`` (Spark's writer), ``fsspec`` (each task writes its partition through
    fsspec/pyarrow as ``part-NNNNN.parquet``, columns cast to ``schema``), or ``auto`` (Spark's
    writer when its filesystems handle ``uri``).  Returns the number of files written by the
    fsspec writer (-1 for Spark's writer).
    """
    if how == "spark" or (how == "auto" and spark_handles(df.sparkSession, uri)):
        df.write.mode("overwrite").parquet(spark_uri(uri))
        return -1
    fs, root = fsspec.core.url_to_fs(uri)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    done = df.mapInArrow(_fsspec_parts_writer(uri, schema), "part int, rows bigint").collect()
    files = sum(1 for r in done if r["rows"])
    if not files:  # like Spark: an empty result is still a folder whose part file has the schema
        import pyarrow.parquet as pq

        with fs.open(posixpath.join(root, "part-00000.parquet"), "wb") as f:
            pq.write_table(schema.empty_table(), f)
    return files


def _fsspec_parts_reader(schema: pa.Schema, columns: list[str]):
    def read(batches):
        import pyarrow.parquet as pq

        target = pa.schema([schema.field(c) for c in columns])
        for batch in batches:
            for url in batch.column("url").to_pylist():
                with fsspec.open(url, "rb") as f:
                    for b in pq.ParquetFile(f).iter_batches(columns=columns):
                        yield from pa.Table.from_batches([b]).select(columns).cast(target).to_batches()

    return read


def spark_read_parquet(spark, uri: str, schema: pa.Schema, columns: list[str] | None = None,
                       how: str = "auto"):
    """A Spark DataFrame of the Parquet files at ``uri`` (a folder, a file or a glob).

    Spark's reader when its filesystems handle ``uri`` (or ``how="spark"``); otherwise the files
    are listed here and read by the Python tasks through fsspec (one task per few files).
    """
    columns = list(columns or schema.names)
    if how == "spark" or (how == "auto" and spark_handles(spark, uri)):
        return spark.read.parquet(spark_uri(uri)).select(*columns)
    from pyspark.sql.pandas.types import from_arrow_schema

    struct = from_arrow_schema(pa.schema([schema.field(c) for c in columns]))
    fs, root = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()  # the files were just written by other processes
    if any(ch in root for ch in "*?["):
        found = fs.glob(root)
    elif fs.isdir(root):
        found = [p for p in fs.find(root) if p.endswith(".parquet")
                 and not posixpath.basename(p).startswith(("_", "."))]
    else:
        found = [root] if fs.exists(root) else []
    proto = uri.split("://", 1)[0] if "://" in uri else None
    urls = [f"{proto}://{p}" if proto else p for p in sorted(found)]
    if not urls:
        return spark.createDataFrame([], struct)
    files = spark.createDataFrame([(u,) for u in urls], "url string")
    files = files.repartition(max(1, min(len(urls), spark.sparkContext.defaultParallelism)))
    return files.mapInArrow(_fsspec_parts_reader(schema, columns), struct)
