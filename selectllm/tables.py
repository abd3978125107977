"""Reading run-directory tables (local or remote) into Arrow / numpy: one helper for every stage."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds

from selectllm.rundir import RunDir


def read_table(run: RunDir, rel: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file or folder of ``*.parquet`` parts under the run directory, as one table."""
    path = run.path(rel)
    if run.fs.isdir(path):
        files = sorted(p for p in run.fs.find(path) if p.endswith(".parquet") and "/quarantine/" not in p[len(path):]
                       and "/duplicates" not in p[len(path):])
    else:
        files = [path]
    dataset = pds.dataset(files, format="parquet", filesystem=run.fs)
    return dataset.to_table(columns=columns)


def load_embeddings(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    """(ids, X): every embedded row sorted by id, X float32 (n, d) L2-normalized."""
    from selectllm.embed.embedder import from_fixed_size_list

    table = read_table(run, "embed", ["id", "embedding"])
    table = table.sort_by("id")
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    return ids, from_fixed_size_list(table.column("embedding"))
