"""Driver-side cost of resolving lake tables to files (selectllm/lake.py), printed as JSON.

Writes a Delta table and an Iceberg table (SQL catalog on SQLite) of ``--commits`` appends of one
small file each, partitioned by ``dt`` over ``--days`` days, then times ``resolve_inputs``: the
latest snapshot, a time-travelled one, and a filter that keeps the last 7 days.  No Spark: this is
what the driver does before any task starts.

    python benchmarks/bench_lake_resolve.py --commits 200 --days 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa


def _batch(i: int, dt: str) -> pa.Table:
    return pa.table({"instruction": [f"row {i} of {dt}"] * 4, "input": [""] * 4, "dt": [dt] * 4})


def _timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=200)
    ap.add_argument("--days", type=int, default=30)
    args = ap.parse_args()

    from deltalake import write_deltalake
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.transforms import IdentityTransform

    from selectllm.lake import resolve_inputs

    end = date(2026, 11, 30)
    days = [(end - timedelta(days=d)).isoformat() for d in range(args.days)]
    last7 = [["dt", ">=", (end - timedelta(days=6)).isoformat()]]
    results = {"commits": args.commits, "days": args.days}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        delta = root / "delta"
        (root / "wh").mkdir()
        catalog = SqlCatalog("bench", uri=f"sqlite:///{root / 'cat.db'}", warehouse=f"file://{root / 'wh'}")
        catalog.create_namespace("logs")
        ice = catalog.create_table("logs.t", schema=_batch(0, days[0]).schema)
        with ice.update_spec() as spec:
            spec.add_field("dt", IdentityTransform(), "dt")
        t0 = time.perf_counter()
        for i in range(args.commits):
            write_deltalake(str(delta), _batch(i, days[i % len(days)]), mode="append", partition_by=["dt"])
            ice.append(_batch(i, days[i % len(days)]))
        results["write_s"] = round(time.perf_counter() - t0, 2)
        uri = f"iceberg+sqlite:///{root / 'cat.db'}#logs.t"
        first = catalog.load_table("logs.t").snapshots()[args.commits // 2].snapshot_id
        for name, path, version in (("delta", str(delta), args.commits // 2), ("iceberg", uri, first)):
            s, r = _timed(lambda: resolve_inputs([path]))
            results[f"{name}_latest_s"], results[f"{name}_latest_files"] = round(s, 4), len(r.files)
            s, r = _timed(lambda: resolve_inputs([path], version=version))
            results[f"{name}_version_s"], results[f"{name}_version_files"] = round(s, 4), len(r.files)
            s, r = _timed(lambda: resolve_inputs([path], triples=last7))
            results[f"{name}_last7_s"] = round(s, 4)
            results[f"{name}_last7_files"], results[f"{name}_last7_pruned"] = len(r.files), r.pruned
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
