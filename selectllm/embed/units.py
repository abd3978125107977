"""Units of embedding work: row ranges of the input parts, each done whole or redone.

The plan depends on the input only (its parts and their row counts): every part is cut into
ranges of ``unit_rows(total)`` rows, so a rerun on another cluster, or with other speed knobs,
finds the same units.  A unit's output is one Parquet file in the work folder named by the unit,
``unit-<part index>-<first row>-<end row>.parquet``.  It exists only once complete: on a local
disk the worker writes a temporary name and renames it; on an object store one object appears
when its upload completes.  A rerun lists the work folder once, keeps the files whose name is a
unit of the plan and whose footer holds the unit's row count, removes anything else and embeds
the missing units.  No task ever receives the ids already embedded.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

UNITS_PER_INPUT = 64  # a kill loses at most ~1/64 of the work...
MIN_UNIT_ROWS = 256  # ...but a unit is never so small that opening and writing files dominates
MAX_UNIT_ROWS = 50_000  # ...nor so large that one file holds minutes of work
FOOTER_READERS = 16  # footers read at once (object stores: one request each)
NAME = re.compile(r"unit-(\d+)-(\d+)-(\d+)\.parquet")


@dataclass(frozen=True)
class Unit:
    part: int  # index of the input file in the sorted list of parts
    path: str  # the input file (filesystem path, no protocol)
    start: int  # first row of the range in that file
    stop: int  # one past its last row

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return f"unit-{self.part:05d}-{self.start:012d}-{self.stop:012d}.parquet"


def unit_rows(total: int) -> int:
    return int(min(MAX_UNIT_ROWS, max(MIN_UNIT_ROWS, -(-total // UNITS_PER_INPUT))))


def footers(fs, paths: list[str]) -> list[pq.FileMetaData | None]:
    """Parquet footers of ``paths`` read concurrently; None for a file that has none (cut short)."""

    def read(path):
        try:
            with fs.open(path, "rb") as f:
                return pq.read_metadata(f)
        except Exception:
            return None

    if len(paths) <= 1:
        return [read(p) for p in paths]
    with ThreadPoolExecutor(min(FOOTER_READERS, len(paths))) as pool:
        return list(pool.map(read, paths))


def plan_units(parts: list[str], row_groups: list[list[int]]) -> list[Unit]:
    """Row ranges of about ``unit_rows(total)`` rows; none spans two parts.

    ``row_groups[i]``: the row counts of part i's row groups.  Ranges end on row-group boundaries
    where they can (consecutive small groups are merged): a unit then reads only its own groups.
    A group larger than a unit is cut into equal ranges; each decodes the group from its start to
    the range's end (Parquet has no cheaper way to start in the middle of a group).
    """
    size = unit_rows(sum(sum(groups) for groups in row_groups))
    units = []
    for i, (path, groups) in enumerate(zip(parts, row_groups)):
        start = first = 0
        for n in groups:
            if first + n - start > size and first > start:  # this group would overflow: close before it
                units.append(Unit(i, path, start, first))
                start = first
            first += n
            if first - start > size:  # one group larger than a unit: equal ranges of <= size rows
                pieces = -(-(first - start) // size)
                cuts = [start + (first - start) * k // pieces for k in range(pieces + 1)]
                units += [Unit(i, path, a, b) for a, b in zip(cuts[:-1], cuts[1:])]
                start = first
        if first > start:
            units.append(Unit(i, path, start, first))
    return units


def split_done(fs, work: str, units: list[Unit]) -> tuple[list[Unit], list[Unit]]:
    """(done, todo): a unit is done if its file is in ``work`` with its row count; all else is removed."""
    by_name = {u.name: u for u in units}
    present = fs.find(work) if fs.exists(work) else []
    named = [p for p in present if posixpath.basename(p) in by_name]
    metas = footers(fs, named)
    done_names = set()
    for path, meta in zip(named, metas):
        if meta is not None and meta.num_rows == by_name[posixpath.basename(path)].rows:
            done_names.add(posixpath.basename(path))
    stale = [p for p in present if posixpath.basename(p) not in done_names]
    if stale:  # temporary files and files cut short by a kill, outputs of another plan
        fs.rm(stale)
    done = [u for u in units if u.name in done_names]
    todo = [u for u in units if u.name not in done_names]
    return done, todo


def read_unit(fs, unit: Unit, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The unit's (id, text) rows in batches of at most ``batch_rows``, reading only its row groups."""
    with fs.open(unit.path, "rb") as f:
        pf = pq.ParquetFile(f)
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        firsts = np.concatenate([[0], np.cumsum(sizes)])  # first row of each row group
        groups = [g for g in range(len(sizes)) if firsts[g] < unit.stop and firsts[g + 1] > unit.start]
        if not groups:
            return
        pos = int(firsts[groups[0]])  # row index of the next row read
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=["id", "text"]):
            lo, hi = max(unit.start - pos, 0), min(unit.stop - pos, len(batch))
            pos += len(batch)
            if hi > lo:
                yield batch.slice(lo, hi - lo)
            if pos >= unit.stop:
                return


def write_unit(fs, work: str, unit: Unit, batches: Iterator[pa.RecordBatch],
               encode: Callable[[pa.RecordBatch], pa.Table], atomic_rename: bool) -> int:
    """Encode the unit's batches into its file in ``work``; the file appears only once complete.

    ``atomic_rename`` (local disks): write a temporary name, rename it.  Object stores publish an
    object when its upload completes, so there the file is written under its name directly.
    """
    final = posixpath.join(work, unit.name)
    target = f"{final}.tmp-{uuid.uuid4().hex[:8]}" if atomic_rename else final
    rows = 0
    try:
        with fs.open(target, "wb") as f:
            writer = None
            for batch in batches:
                table = encode(batch)
                writer = writer or pq.ParquetWriter(f, table.schema)
                writer.write_table(table)
                rows += len(table)
            if rows != unit.rows:
                raise RuntimeError(f"embed: unit {unit.name} read {rows} rows, expected {unit.rows}")
            writer.close()
        if atomic_rename:
            fs.mv(target, final)
    except BaseException:
        try:  # a file without its footer is removed by the next run anyway; tidy up when we can
            fs.rm(target)
        except Exception:
            pass
        raise
    return rows
