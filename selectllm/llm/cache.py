"""Durable answer store: one small JSON file per request key, under any fsspec folder URL.

Layout: ``<dir>/<key[:2]>/<key>.json`` (keys are sha256 hex digests; :meth:`keys` lists only
files of that shape directly under the folder, so other stores may live in sub-folders, e.g.
the Batch API's records in ``<dir>/batches/``).  A paid answer is written *before* it is used, so a job
killed at any point never pays twice for the same prompt.  Local writes go to a temporary name
in the same folder, are fsync'ed and renamed into place (atomic: a reader sees the whole record
or nothing); object stores (``s3://``, ``gs://``) put an object atomically by themselves.
A record that cannot be read back (torn by a crash of a non-atomic filesystem) counts as absent.

Resuming many requests (:meth:`load`) costs one listing of the folder and concurrent reads of
the records present, not one read per request: 100k requests on S3 would otherwise take an hour
before the first send.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from selectllm.rundir import replace_local_file, storage_options


_KEY_PATH = re.compile(r"([0-9a-f]{2})/([0-9a-f]{64})\.json")
ENDPOINTS_FILE = "endpoints.json"  # which endpoints and models answered into this folder
READ_THREADS = 32  # concurrent reads of :meth:`AnswerCache.load` (object stores answer in ~10-50 ms each)


class AnswerCache:
    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **storage_options(url))
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self._made: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}.json"

    def get(self, key: str) -> dict | None:
        return self._read(self.path(key))

    def load(self, keys: Iterable[str]) -> dict[str, dict]:
        """The stored records of ``keys`` (absent ones left out): one listing of the folder, then
        concurrent reads of the keys it holds."""
        wanted = set(keys)
        present = [k for k in self.keys() if k in wanted]
        if not present:
            return {}
        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(present))) as ex:
            records = ex.map(lambda k: self._read(self.path(k)), present)
            return {k: rec for k, rec in zip(present, records) if rec is not None}

    def _read(self, p: str) -> dict | None:
        try:
            if self.local:
                with open(p, "rb") as f:
                    data = f.read()
            else:
                data = self.fs.cat_file(p)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            rec = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        return rec if isinstance(rec, dict) else None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, key: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8")
        p = self.path(key)
        folder = p.rsplit("/", 1)[0]
        if self.local:
            if folder not in self._made:
                os.makedirs(folder, exist_ok=True)
                self._made.add(folder)
            replace_local_file(p, data, f"{folder}/.{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        else:
            self.fs.pipe_file(p, data)

    def note_endpoint(self, endpoint: str, model: str) -> list[str]:
        """Record in :data:`ENDPOINTS_FILE` that answers from ``endpoint`` / ``model`` are stored
        here; returns the others recorded before (``"<endpoint> model <model>"``).  Their answers
        are never used for this one (the endpoint and model are part of every key), but a run dir
        shared between endpoints should be said so."""
        p = f"{self.root}/{ENDPOINTS_FILE}"
        seen = self._read(p) or {}
        entries = [e for e in seen.get("endpoints", []) if isinstance(e, dict)]
        me = {"endpoint": endpoint, "model": model}
        if me not in entries:
            data = json.dumps({"endpoints": entries + [me]}, sort_keys=True).encode("utf-8")
            if self.local:
                os.makedirs(self.root, exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
            else:
                self.fs.pipe_file(p, data)
        return [f"{e.get('endpoint')} model {e.get('model')}" for e in entries if e != me]

    def keys(self) -> Iterator[str]:
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return iter(())
        out = []
        for p in found:
            rel = p[len(self.root):].lstrip("/") if p.startswith(self.root) else p
            m = _KEY_PATH.fullmatch(rel)
            if m and m.group(1) == m.group(2)[:2]:
                out.append(m.group(2))
        return iter(sorted(out))

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())
