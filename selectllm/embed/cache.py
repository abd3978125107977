"""Derived models (ONNX exports, static distillations) cached in a local folder, keyed by the model.

The key is a hash of the model folder's files (names, sizes and contents of the weights, configs and
tokenizer files; READMEs and dot-files are skipped) plus what the derivation depends on (kind,
format version, options).  A new model file, an edited config or a different option means a new
folder, never a stale one.

Many Ray actors may ask for the same folder at once: each builder writes into its own temporary
folder beside the final one and publishes it with one ``os.rename``, which is atomic on POSIX; a
builder that loses the race discards its copy and uses the winner's.  A folder that exists is
complete (its files were written before the rename), so readers need no lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from selectllm.errors import UserError

SKIP_SUFFIXES = (".md",)
SKIP_DIRS = {"onnx", "openvino", ".git", ".cache"}  # other backends' exports shipped with some models


def cache_root(configured: str | None = None) -> Path:
    root = configured or os.environ.get("SELECTLLM_CACHE") or os.path.join(Path.home(), ".cache", "selectllm")
    return Path(root).expanduser() / "embed"


def local_model_dir(model: str) -> Path:
    """The folder of a resolved model: a local path as is, a cached hub name via the hub's cache."""
    path = Path(model)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as e:  # not in the local cache: the onnx/static backends never download
        raise UserError(f"embedding model '{model}' has no local copy for the onnx/static backends "
                        f"({type(e).__name__}); give a local folder as embed.model") from None


def model_files_key(model_dir: Path, *extra: object) -> str:
    """sha256 over the model folder's relevant files and ``extra`` (what else the artifact depends on)."""
    h = hashlib.sha256(json.dumps([str(x) for x in extra]).encode())
    files = []
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir)
        if not p.is_file() or rel.parts[0] in SKIP_DIRS or any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in SKIP_SUFFIXES:
            continue
        files.append((rel.as_posix(), p))
    if not files:
        raise UserError(f"embedding model folder {model_dir} holds no files")
    for rel, p in files:
        h.update(f"\0{rel}\0{p.stat().st_size}\0".encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:20]


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """``folder`` if it exists, else ``build(tmp)`` into a private temp folder renamed to ``folder``."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.rename(tmp, folder)  # atomic; fails if another builder published first
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
