"""Reading run-directory tables (local or remote) into Arrow / numpy: one helper for every stage."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds

from selectllm.rundir import RunDir


def part_files(run: RunDir, stage: str) -> list[str]:
    """A stage's ``part-*.parquet`` files (top level only: ``dedup/quarantine/`` etc. are other tables)."""
    folder = run.path(stage)
    return sorted(p for p in run.fs.ls(folder, detail=False)
                  if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet"))


def dataset(run: RunDir, rel: str) -> pds.Dataset:
    """A single Parquet file, or a stage folder's part files, as one pyarrow dataset."""
    path = run.path(rel)
    files = part_files(run, rel) if run.fs.isdir(path) else [path]
    return pds.dataset(files, format="parquet", filesystem=run.fs)


def read_table(run: RunDir, rel: str, columns: list[str] | None = None) -> pa.Table:
    return dataset(run, rel).to_table(columns=columns)


def load_embeddings(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    """(ids, X): every embedded row sorted by id, X float32 (n, d) L2-normalized."""
    from selectllm.embed.embedder import from_fixed_size_list

    table = read_table(run, "embed", ["id", "embedding"])
    table = table.sort_by("id")
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    return ids, from_fixed_size_list(table.column("embedding"))
