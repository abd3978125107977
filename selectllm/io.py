"""Input discovery: turn ``input.paths`` (files, globs, folders, URLs) into a list of files."""

from __future__ import annotations

import os
from dataclasses import dataclass

import fsspec

from selectllm.errors import UserError

DATA_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".csv", ".txt")
COMPRESSIONS = (".gz", ".zst", ".zstd")


@dataclass(frozen=True)
class InputFile:
    url: str  # full URL for remote files, absolute path for local ones
    size: int
    version: str  # mtime or ETag: changes when the file changes


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
        except (OSError, ValueError, ImportError) as e:
            raise UserError(f"cannot read input {raw}: {e}") from None
        if not found:
            raise UserError(f"input path matches no file: {raw}")
        proto = target.split("://", 1)[0] if remote else None
        for p in sorted(found):
            info = fs.info(p)
            version = str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or "")
            url = f"{proto}://{p}" if proto else p
            seen[url] = InputFile(url=url, size=int(info.get("size") or 0), version=version)
    return [seen[k] for k in sorted(seen)]
