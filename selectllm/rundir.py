"""The run directory: where stages read and write, and how a stage becomes complete.

A stage writes into ``_staging/<stage>-<token>/`` and is committed by moving that folder to
``<stage>/`` (a rename on local disks) and *then* recording it as complete in ``manifest.json``
(itself written to a temporary name and renamed).  A stage is complete only if the manifest says
so, so a job killed at any point never leaves a stage that looks complete but is not.
Paths may be local or any fsspec URL (``s3://``, ``gs://``, ``hdfs://``).
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec

MANIFEST = "manifest.json"
STAGING = "_staging"


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


COPIERS = 32  # concurrent object copies on stores whose fsspec filesystem is not asynchronous


def move_files(fs, srcs: list[str], dsts: list[str], remote: bool) -> None:
    """Move files ``srcs[i]`` -> ``dsts[i]``: renames on a local disk; on an object store (no
    rename) concurrent server-side copies, then one bulk delete of the sources.

    Asynchronous filesystems (s3fs, gcsfs, adlfs) run a list ``copy`` as concurrent requests;
    any other one gets a thread pool, so no store copies one object after another.
    """
    if not srcs:
        return
    if not remote:
        for src, dst in zip(srcs, dsts):
            fs.mv(src, dst)
        return
    if getattr(fs, "async_impl", False):
        fs.copy(list(srcs), list(dsts))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(COPIERS, len(srcs))) as pool:
            list(pool.map(fs.copy, srcs, dsts))
    fs.rm(list(srcs))


# Object stores whose fsspec filesystems cache directory listings.  Stage outputs are written by
# other processes (Spark executors, Ray workers), so the driver must list afresh every time.
_LISTING_CACHED = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}


def storage_options(url: str) -> dict:
    """fsspec options for a run directory URL: no listings cache on object stores.

    Credentials are never options here: they come from the environment or the provider's chain
    (``AWS_*`` variables, ``~/.aws``, instance/pod roles; ``GOOGLE_APPLICATION_CREDENTIALS``, ...),
    and a custom endpoint (MinIO, Ceph, a local test server) from ``AWS_ENDPOINT_URL``.
    """
    proto = url.split("://", 1)[0].lower() if is_url(url) else "file"
    return {"use_listings_cache": False} if proto in _LISTING_CACHED else {}


def open_location(url: str, what: str) -> tuple[str, Any, str]:
    """``(url, fs, root)`` of a local path or URL, its folder made: a local path made absolute.
    Fails with one line naming ``what`` (``run_dir``, ``history``) when the store cannot be opened."""
    if not is_url(url):
        url = os.path.abspath(url.removeprefix("file://"))
    try:
        fs, root = fsspec.core.url_to_fs(url, **storage_options(url))
        fs.makedirs(root, exist_ok=True)
    except Exception as e:  # no credentials, no such bucket, no fsspec backend: one line
        from selectllm.errors import UserError

        msg = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"cannot open {what} {url}: {type(e).__name__}: {msg}") from None
    return url, fs, root


def replace_local_file(path: str, data: bytes, tmp: str | None = None) -> None:
    """Write ``data`` to a temporary name beside ``path`` (or ``tmp``), fsync it, rename it into
    place: a reader sees the old file or the whole new one, never half of it (local disks)."""
    tmp = tmp or f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class RunDir:
    url: str
    fs: Any = field(init=False, repr=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.url, self.fs, self.root = open_location(self.url, "run_dir")

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        """Filesystem path (no protocol) inside the run directory."""
        return posixpath.join(self.root, *parts)

    def uri(self, *parts: str) -> str:
        """Full URL (with protocol for remote stores) for engines such as Ray Data or Spark."""
        p = self.path(*parts)
        if is_url(self.url):
            return f"{self.url.split('://', 1)[0]}://{p}"
        return p

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def open(self, rel: str, mode: str = "rb"):
        return self.fs.open(self.path(rel), mode)

    def read_json(self, rel: str, default: Any = None) -> Any:
        if not self.exists(rel):
            return default
        with self.open(rel, "r") as f:
            return json.load(f)

    def write_text_atomic(self, rel: str, text: str) -> None:
        """Write to a temporary name, then rename: readers see the old or the new file, never half."""
        final = self.path(rel)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        with self.fs.open(tmp, "w") as f:
            f.write(text)
            f.flush()
            if hasattr(f, "fileno"):
                try:
                    os.fsync(f.fileno())
                except (OSError, ValueError, AttributeError):
                    pass
        self.fs.mv(tmp, final)

    def write_json_atomic(self, rel: str, obj: Any) -> None:
        self.write_text_atomic(rel, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    # ---------------------------------------------------------------- staging
    def new_staging(self, stage: str) -> str:
        """A fresh, empty folder for a stage to write into.  Returns its path (no protocol)."""
        p = self.path(STAGING, f"{stage}-{uuid.uuid4().hex[:12]}")
        self.fs.makedirs(p, exist_ok=True)
        return p

    def staging_uri(self, staging_path: str) -> str:
        if is_url(self.url):
            return f"{self.url.split('://', 1)[0]}://{staging_path}"
        return staging_path

    def commit(self, stage: str, staging_path: str, root_files: tuple[str, ...] = ()) -> None:
        """Move a finished staging folder into place.  ``root_files`` inside it go to the top."""
        for name in root_files:
            src = posixpath.join(staging_path, name)
            if self.fs.exists(src):
                dst = self.path(name)
                if self.fs.exists(dst):
                    self.fs.rm(dst)
                self.fs.mv(src, dst)
        final = self.path(stage)
        if self.fs.exists(final):
            self.fs.rm(final, recursive=True)
        if is_url(self.url):
            self._move_tree(staging_path, final)
        else:
            self.fs.mv(staging_path, final, recursive=True)  # a rename on local disks

    def _move_tree(self, src: str, dst: str) -> None:
        """Object stores have no folders and no rename: copy every object, then delete the sources.

        Not atomic, which is why a stage is complete only once the manifest says so.
        """
        files = [f for f in self.fs.find(src) if not f.endswith("/")]
        move_files(self.fs, files, [posixpath.join(dst, posixpath.relpath(f, src)) for f in files], remote=True)
        if self.fs.exists(src):
            self.fs.rm(src, recursive=True)

    def move_files(self, srcs: list[str], dsts: list[str]) -> None:
        move_files(self.fs, srcs, dsts, remote=is_url(self.url))

    def clean_staging(self) -> None:
        """Remove leftovers of killed runs (never part of any complete stage)."""
        p = self.path(STAGING)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=True)

    # --------------------------------------------------------------- manifest
    def manifest(self) -> dict:
        return self.read_json(MANIFEST, default={"stages": {}}) or {"stages": {}}

    def stage_entry(self, stage: str) -> dict | None:
        return self.manifest().get("stages", {}).get(stage)

    def record_stage(self, stage: str, entry: dict) -> None:
        m = self.manifest()
        m.setdefault("stages", {})[stage] = entry
        m["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.write_json_atomic(MANIFEST, m)

    def invalidate(self, stage: str) -> None:
        """Mark a stage incomplete before it is rebuilt, so a kill mid-way can't resurrect it."""
        m = self.manifest()
        if stage in m.get("stages", {}):
            m["stages"][stage]["status"] = "invalidated"
            self.write_json_atomic(MANIFEST, m)
