"""Embed units without Ray: the plan covers every row once, a unit reads exactly its rows, a
rerun keeps only complete unit files, and object-store commits copy concurrently."""

from __future__ import annotations

import asyncio
import random

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm.embed.units import MAX_UNIT_ROWS, MIN_UNIT_ROWS, Unit, plan_units, read_unit, split_done, unit_rows, \
    write_unit


def test_plan_covers_every_row_once_in_order_and_prefers_row_group_boundaries():
    rng = random.Random(0)
    for _ in range(200):
        parts = [f"p{i}" for i in range(rng.randint(1, 5))]
        groups = [[rng.choice([0, 1, 7, 300, 5000, 40_000]) for _ in range(rng.randint(0, 6))] for _ in parts]
        units = plan_units(parts, groups)
        size = unit_rows(sum(map(sum, groups)))
        for i, g in enumerate(groups):
            mine = [u for u in units if u.part == i]
            covered = [r for u in mine for r in range(u.start, u.stop)]
            assert covered == list(range(sum(g)))  # every row of the part once, in order
            assert all(0 < u.rows <= size and u.path == parts[i] for u in mine)
            firsts = [sum(g[:k]) for k in range(len(g) + 1)]  # first row of each row group, then the end
            for u in mine:  # a cut inside a row group only where that group alone is larger than a unit
                if u.start not in firsts:
                    k = max(k for k in range(len(g)) if firsts[k] <= u.start)
                    assert g[k] > size
        assert len({u.name for u in units}) == len(units)


def test_unit_size_is_bounded_both_ways():
    assert unit_rows(10) == MIN_UNIT_ROWS and unit_rows(10**9) == MAX_UNIT_ROWS
    assert unit_rows(64 * 1000) == 1000


def _part(path, rows, group_rows):
    table = pa.table({"id": [f"id{i}" for i in range(rows)], "text": [f"text {i}" for i in range(rows)],
                      "other": list(range(rows))})
    pq.write_table(table, path, row_group_size=group_rows)
    return table


@pytest.mark.parametrize("group_rows", [7, 100, 1000])
def test_a_unit_reads_exactly_its_rows(tmp_path, group_rows):
    fs = fsspec.filesystem("file")
    table = _part(tmp_path / "p.parquet", 1000, group_rows)
    rng = random.Random(group_rows)
    for _ in range(40):
        a = rng.randrange(1000)
        b = rng.randint(a + 1, 1000)
        got = pa.Table.from_batches(list(read_unit(fs, Unit(0, str(tmp_path / "p.parquet"), a, b), batch_rows=33)))
        assert got.column_names == ["id", "text"]
        assert got.column("id").to_pylist() == table.column("id").to_pylist()[a:b]
        assert max(len(x) for x in read_unit(fs, Unit(0, str(tmp_path / "p.parquet"), a, b), 33)) <= 33


def _encode(batch):
    return pa.table({"id": batch.column("id"), "n": pa.array([len(t) for t in batch.column("text").to_pylist()])})


def test_rerun_keeps_complete_unit_files_and_removes_everything_else(tmp_path):
    fs = fsspec.filesystem("file")
    _part(tmp_path / "p.parquet", 900, 100)
    units = plan_units([str(tmp_path / "p.parquet")], [[100] * 9])
    assert [u.rows for u in units] == [200, 200, 200, 200, 100]  # units of <= 256 rows end on row-group bounds
    work = str(tmp_path / "work")
    fs.makedirs(work)
    for u in units[:2]:
        assert write_unit(fs, work, u, read_unit(fs, u, 50), _encode, atomic_rename=True) == u.rows
    # what a kill or another plan leaves behind
    with open(f"{work}/{units[2].name}", "wb") as f:
        f.write(b"PAR1 cut short")
    pq.write_table(pa.table({"id": ["x"]}), f"{work}/{units[3].name}")  # right name, wrong row count
    (tmp_path / "work" / f"{units[0].name}.tmp-1234").write_bytes(b"half")
    pq.write_table(pa.table({"id": ["y"]}), f"{work}/unit-00009-000000000000-000000000001.parquet")
    done, todo = split_done(fs, work, units)
    assert done == units[:2] and todo == units[2:]  # units[4]: never started
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(work)) == sorted(u.name for u in units[:2])
    # a worker that fails mid-unit leaves no file under the unit's name
    def broken(batch):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        write_unit(fs, work, units[2], read_unit(fs, units[2], 50), broken, atomic_rename=True)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(work)) == sorted(u.name for u in units[:2])


def test_object_store_moves_run_concurrently(s3_env):
    """RunDir.move_files on s3 (moto): every file arrives, sources go, and copies overlap in time."""
    import s3fs

    from selectllm.rundir import RunDir

    bucket = s3_env.bucket()
    run = RunDir(f"s3://{bucket}/run")
    srcs = [run.path("_work", "embed-x", f"unit-{i}.parquet") for i in range(24)]
    for i, p in enumerate(srcs):
        run.fs.pipe(p, f"payload {i}".encode())
    dsts = [run.path("_staging", "embed-y", f"part-{i:05d}.parquet") for i in range(24)]

    in_flight, peak = 0, 0
    original = s3fs.S3FileSystem._cp_file

    async def counted(self, *a, **kw):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.05)  # a real store's latency, so overlap is visible
            return await original(self, *a, **kw)
        finally:
            in_flight -= 1

    s3fs.S3FileSystem._cp_file = counted
    try:
        run.move_files(srcs, dsts)
    finally:
        s3fs.S3FileSystem._cp_file = original
    assert [run.fs.cat(p) for p in dsts] == [f"payload {i}".encode() for i in range(24)]
    assert not run.fs.find(run.path("_work"))
    assert peak > 1  # one copy after another would never have two in flight
