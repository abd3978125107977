"""Lake tables and partitioned folders as dedup input (selectllm/lake.py), on tables written here.

Delta tables are written by ``deltalake`` and Iceberg tables by ``pyiceberg`` (a SQL catalog on
SQLite) inside each test; the oracle for "which rows are live" is the library's own reader
(``DeltaTable.to_pyarrow_table``, ``Table.scan().to_arrow()``), never our file listing.
"""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm.config import load_config
from selectllm.errors import UserError

from helpers import stage_ctx

deltalake = pytest.importorskip("deltalake")
pyiceberg = pytest.importorskip("pyiceberg")


# ----------------------------------------------------------------------------- helpers
def _rows(tag: str, n: int, start: int = 0, **cols) -> pa.Table:
    data = {"instruction": [f"{tag} instruction number {i}" for i in range(start, start + n)],
            "input": [f"context {i}" for i in range(start, start + n)]}
    for k, v in cols.items():
        data[k] = [v] * n if not isinstance(v, list) else v
    return pa.table(data)


def _config(paths, *extra: str):
    paths = [str(p) for p in (paths if isinstance(paths, list) else [paths])]
    # near dedup off: these tests are about which rows are read
    return load_config(None, ["input.paths=" + json.dumps(paths), "dedup.near.enabled=false", *extra])


def _dedup(tmp_path: Path, paths, *extra: str, name: str = "run") -> tuple[dict, list[dict], list[dict]]:
    """Run the real dedup stage; (stats, kept rows, quarantine rows)."""
    from selectllm.dedup.stage import run_stage

    cfg = _config(paths, *extra)
    ctx = stage_ctx(tmp_path / name, "dedup", cfg=cfg)
    run_stage(ctx)
    out = Path(ctx.out)
    kept = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]).to_pylist()
    quarantine = pq.read_table(out / "quarantine").to_pylist()
    return json.loads((out / "stats.json").read_text()), kept, quarantine


def _instructions(rows) -> list[str]:
    return sorted(r["instruction"] for r in rows)


def _conserved(stats: dict) -> bool:
    return stats["read"] == stats["kept"] + stats["exact_duplicates"] + stats["near_duplicates"] + \
        stats["quarantined_total"]


def _delta_oracle(path: Path, **kw) -> list[str]:
    from deltalake import DeltaTable

    table = DeltaTable(str(path), **kw)
    return sorted(pa.table(table.to_pyarrow_table()).column("instruction").to_pylist())


def _delta_history(path: Path) -> dict[int, int]:
    """{version: commit timestamp in ms}."""
    from deltalake import DeltaTable

    return {h["version"]: h["timestamp"] for h in DeltaTable(str(path)).history()}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


# ----------------------------------------------------------------------------- config and filter
def test_filter_and_snapshot_keys_are_validated_with_one_line():
    good = load_config(None, ['input.filter=[[dt, ">=", today-7], [lang, in, [en, fr]]]', "input.version=3"])
    assert good.input.filter == [["dt", ">=", "today-7"], ["lang", "in", ["en", "fr"]]]
    assert load_config(None, ["input.as_of=2026-11-30"]).input.as_of == "2026-11-30T00:00:00"
    for bad, words in [
        ('input.filter=[[dt, "~", 3]]', "op must be one of"),
        ("input.filter=[[dt, in, 3]]", "takes a list"),
        ('input.filter=[[dt, "==", [1, 2]]]', "takes one value"),
        ("input.filter=[[dt, '>=']]", "[column, op, value]"),
        ('input.filter=[[dt, ">=", today-x]]', "today-N"),
        ("input.as_of=yesterday", "not an ISO 8601 timestamp"),
        ("input.version=-1", "input.version"),
    ]:
        with pytest.raises(UserError) as e:
            load_config(None, [bad])
        assert words in str(e.value) and "\n" not in str(e.value), (bad, str(e.value))
    with pytest.raises(UserError, match="set one"):
        load_config(None, ["input.version=1", "input.as_of=2026-11-30T00:00:00Z"])


def test_filter_compares_as_the_operand_type_and_today_is_relative():
    from selectllm.filters import holds, operand, resolve, row_passes, split_conditions

    assert operand("today-7", date(2026, 12, 2)) == "2026-11-25"
    assert operand("today", date(2026, 12, 2)) == "2026-12-02"
    assert operand(date(2026, 11, 30)) == "2026-11-30"
    assert holds("10", ">", 9)  # numbers compare as numbers, not text
    assert not holds("10", ">", "9")  # text compares as text
    assert holds(10, ">", 9) and holds(True, "==", True) and not holds("x", ">", 9)
    assert holds("fr", "in", ["en", "fr"]) and not holds("fr", "not in", ["en", "fr"])
    assert not holds(None, "!=", "en") and not holds(["a"], "==", "a")  # null / non-scalar: no match
    dt = resolve([("dt", ">=", date(2026, 11, 24)), ("dt", "<", "today"), ("lang", "==", "en")],
                 today=date(2026, 12, 1))
    assert split_conditions({"dt": "2026-11-30"}, dt) == (True, [["lang", "==", "en"]])
    assert split_conditions({"dt": "2026-12-01"}, dt) == (False, [])
    assert split_conditions({"dt": "2026-11-30", "lang": "en"}, dt) == (True, [])
    assert row_passes({"lang": "en"}, [["lang", "==", "en"]]) and not row_passes({}, [["lang", "==", "en"]])


def test_hive_partition_values_come_from_folder_names():
    from selectllm.lake import hive_partition

    assert hive_partition("/d", "/d/dt=2026-11-30/lang=en%2Fus/part-0.parquet") == \
        {"dt": "2026-11-30", "lang": "en/us"}
    assert hive_partition("/d", "/d/dt=__HIVE_DEFAULT_PARTITION__/x.jsonl") == {"dt": None}
    assert hive_partition("/d", "/d/plain/x.jsonl") == {}


# ----------------------------------------------------------------------------- Hive folders
def _hive_folder(root: Path) -> dict[str, list[str]]:
    """dt=.../ folders of Parquet and JSONL files; {dt: instructions}."""
    out = {}
    for i, dt in enumerate(["2026-11-28", "2026-11-29", "2026-11-30"]):
        d = root / f"dt={dt}"
        d.mkdir(parents=True)
        t = _rows(f"hive {dt}", 3)
        pq.write_table(t, d / "part-0.parquet")
        with open(d / "more.jsonl", "w") as f:
            f.write(json.dumps({"instruction": f"jsonl row of {dt}"}) + "\n")
        out[dt] = t.column("instruction").to_pylist() + [f"jsonl row of {dt}"]
    return out


def test_hive_folder_partition_columns_are_record_columns_and_the_filter_prunes(spark, tmp_path):
    by_dt = _hive_folder(tmp_path / "logs")
    # the partition column read as a record column: the input field is dt itself
    stats, kept, _ = _dedup(tmp_path, tmp_path / "logs", "input.fields={instruction: instruction, input: dt}",
                            'input.filter=[[dt, ">=", "2026-11-29"]]')
    assert _instructions(kept) == sorted(by_dt["2026-11-29"] + by_dt["2026-11-30"])
    assert all(r["input"] == r["source"].split("dt=")[1][:10] for r in kept)
    assert stats["files"] == 4 and stats["pruned_files"] == 2 and _conserved(stats)
    assert {Path(r["source"]).parent.name for r in kept} == {"dt=2026-11-29", "dt=2026-11-30"}


def test_filter_on_a_row_column_is_checked_per_row_and_counted(spark, tmp_path):
    by_dt = _hive_folder(tmp_path / "logs")
    # dt prunes files; input (not a partition column) is checked on every row of the kept files
    stats, kept, quarantine = _dedup(tmp_path, tmp_path / "logs", 'input.filter=[[dt, "==", "2026-11-30"], '
                                     '[input, in, ["context 0", "context 2"]]]')
    assert _instructions(kept) == sorted(by_dt["2026-11-30"][i] for i in (0, 2))
    # 2 files read: 3 Parquet rows + 1 JSONL row, of which 2 pass; the JSONL row has no input column
    assert stats["pruned_files"] == 4 and stats["filtered_rows"] == 2 and stats["read"] == 2
    assert _conserved(stats) and not quarantine


def test_a_folder_above_a_delta_table_is_refused(spark, tmp_path):
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "lake" / "t"), _rows("a", 2))
    with pytest.raises(UserError, match="holds a Delta table at .*name the table itself"):
        _dedup(tmp_path, tmp_path / "lake")


# ----------------------------------------------------------------------------- Delta Lake
def _delta_commits(path: Path) -> None:
    """v0: 4 rows; v1: +3 rows; v2: overwrite with 2 rows (v0/v1 files stay on disk, stale)."""
    from deltalake import write_deltalake

    write_deltalake(str(path), _rows("first", 4))
    time.sleep(0.02)  # distinct commit timestamps
    write_deltalake(str(path), _rows("second", 3), mode="append")
    time.sleep(0.02)
    write_deltalake(str(path), _rows("third", 2), mode="overwrite")


def test_delta_reads_the_live_snapshot_only_and_travels_in_time(spark, tmp_path):
    table = tmp_path / "delta"
    _delta_commits(table)
    assert len(list(table.glob("*.parquet"))) == 3  # a plain folder read would see all of them

    stats, kept, quarantine = _dedup(tmp_path, table, name="latest")
    assert _instructions(kept) == _delta_oracle(table) == [f"third instruction number {i}" for i in range(2)]
    assert not quarantine and stats["tables"] == [{"path": str(table), "format": "delta", "version": 2}]
    assert _conserved(stats) and stats["files"] == 1

    stats, kept, _ = _dedup(tmp_path, table, "input.version=1", name="v1")
    assert _instructions(kept) == _delta_oracle(table, version=1) and len(kept) == 7
    assert stats["tables"][0]["version"] == 1

    ts = _delta_history(table)
    stats, kept, _ = _dedup(tmp_path, table, f"input.as_of={_iso(ts[0])}", name="as_of")
    assert _instructions(kept) == _delta_oracle(table, version=0) and stats["tables"][0]["version"] == 0

    with pytest.raises(UserError, match="cannot read Delta table"):
        _dedup(tmp_path, table, "input.version=9", name="v9")


def test_delta_partitioned_table_filter_prunes_files_and_adds_partition_columns(spark, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    table = tmp_path / "parted"
    for dt in ["2026-11-27", "2026-11-28", "2026-11-29", "2026-11-30"]:
        write_deltalake(str(table), _rows(f"day {dt}", 3, dt=dt), mode="append", partition_by=["dt"])
    actions = pa.table(DeltaTable(str(table)).get_add_actions(flatten=True)).to_pylist()
    wanted = {str(table / a["path"]) for a in actions if a["partition.dt"] >= "2026-11-29"}

    stats, kept, _ = _dedup(tmp_path, table, "input.fields={instruction: instruction, input: dt}",
                            'input.filter=[[dt, ">=", 2026-11-29]]')
    assert {r["source"] for r in kept} == wanted and stats["pruned_files"] == 2 and stats["files"] == 2
    assert _instructions(kept) == sorted(f"day {dt} instruction number {i}"
                                         for dt in ["2026-11-29", "2026-11-30"] for i in range(3))
    # the partition value comes from the log (the files do not hold the column)
    assert all(r["instruction"].startswith(f"day {r['input']} ") for r in kept)
    assert all("dt" not in pq.read_schema(s).names for s in wanted)


def test_delta_delete_rewrites_files_and_deleted_rows_are_not_read(spark, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    table = tmp_path / "deletes"
    write_deltalake(str(table), _rows("kept or not", 6))
    DeltaTable(str(table)).delete("instruction = 'kept or not instruction number 2' "
                                  "OR instruction = 'kept or not instruction number 4'")
    stats, kept, _ = _dedup(tmp_path, table)
    assert _instructions(kept) == _delta_oracle(table) and len(kept) == 4
    assert "kept or not instruction number 2" not in _instructions(kept)
    assert stats["tables"][0]["version"] == 1 and _conserved(stats)


def test_delta_deletion_vectors_are_applied(spark, tmp_path):
    from deltalake import DeltaTable

    table = tmp_path / "dv"
    _delta_with_deletion_vector(table, _rows("dv", 5), deleted=[1, 3])
    assert pa.table(DeltaTable(str(table)).deletion_vectors()).num_rows == 1  # delta-rs reads our vector
    stats, kept, _ = _dedup(tmp_path, table)
    assert _instructions(kept) == _delta_query(table) == [f"dv instruction number {i}" for i in (0, 2, 4)]
    assert stats["read"] == 3 and _conserved(stats)  # deleted rows are not rows of the table
    assert sorted(r["source_row"] for r in kept) == [0, 2, 4]  # positions in the file, as before


def test_delta_column_mapping_reads_physical_columns_under_their_names(spark, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    table = tmp_path / "mapped"
    write_deltalake(str(table), _rows("mapped", 3), configuration={"delta.columnMapping.mode": "name"})
    files = DeltaTable(str(table)).file_uris()
    assert "instruction" not in pq.read_schema(files[0]).names  # the file holds physical names
    stats, kept, quarantine = _dedup(tmp_path, table)
    assert _instructions(kept) == _delta_query(table) and len(kept) == 3 and not quarantine
    assert all(r["input"].startswith("context ") for r in kept)


def _delta_query(table: Path) -> list[str]:
    """delta-rs' own SQL reader (DataFusion), which applies deletion vectors and column mapping."""
    from deltalake import DeltaTable, QueryBuilder

    got = QueryBuilder().register("t", DeltaTable(str(table))).execute("select instruction from t").read_all()
    return sorted(pa.table(got).column("instruction").to_pylist())


_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def _z85(data: bytes) -> str:
    data += b"\0" * (-len(data) % 4)
    out = []
    for i in range(0, len(data), 4):
        v, chunk = int.from_bytes(data[i:i + 4], "big"), []
        for _ in range(5):
            v, r = divmod(v, 85)
            chunk.append(_Z85[r])
        out.extend(reversed(chunk))
    return "".join(out)


def _delta_with_deletion_vector(table: Path, rows: pa.Table, deleted: list[int]) -> None:
    """A Delta table whose one file has an inline deletion vector, committed as Spark would.

    delta-rs deletes by rewriting files, so this commit is written here per Delta's PROTOCOL.md:
    the reader feature ``deletionVectors``, the file re-added with a ``deletionVector`` descriptor
    (storage type ``i``: a Z85-encoded RoaringBitmapArray: magic, bitmap count, key, bitmap).
    """
    import struct

    from deltalake import write_deltalake
    from pyroaring import BitMap

    write_deltalake(str(table), rows)
    data = next(table.glob("*.parquet")).name
    now = int(time.time() * 1000)
    vector = struct.pack("<iqi", 1681511377, 1, 0) + BitMap(deleted).serialize()
    commit = [
        {"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
                      "readerFeatures": ["deletionVectors"], "writerFeatures": ["deletionVectors"]}},
        {"remove": {"path": data, "deletionTimestamp": now, "dataChange": True}},
        {"add": {"path": data, "size": (table / data).stat().st_size, "modificationTime": now,
                 "dataChange": True, "partitionValues": {}, "stats": json.dumps({"numRecords": rows.num_rows}),
                 "deletionVector": {"storageType": "i", "pathOrInlineDv": _z85(vector),
                                    "sizeInBytes": len(vector), "cardinality": len(deleted)}}},
        {"commitInfo": {"timestamp": now, "operation": "DELETE"}},
    ]
    (table / "_delta_log" / f"{1:020d}.json").write_text("\n".join(json.dumps(a) for a in commit) + "\n")


# ----------------------------------------------------------------------------- Iceberg
def _catalog(tmp_path: Path):
    from pyiceberg.catalog.sql import SqlCatalog

    (tmp_path / "wh").mkdir(exist_ok=True)
    catalog = SqlCatalog("test", uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=f"file://{tmp_path / 'wh'}")
    catalog.create_namespace_if_not_exists("logs")
    return catalog


def _iceberg_oracle(table, **kw) -> list[str]:
    return sorted(table.scan(**kw).to_arrow().column("instruction").to_pylist())


def test_iceberg_snapshots_time_travel_by_id_and_timestamp(spark, tmp_path):
    catalog = _catalog(tmp_path)
    first = _rows("ice one", 3)
    table = catalog.create_table("logs.chats", schema=first.schema)
    table.append(first)
    time.sleep(0.02)
    table.append(_rows("ice two", 2))
    time.sleep(0.02)
    table.overwrite(_rows("ice three", 2))
    snaps = [s.snapshot_id for s in table.snapshots()]
    uri = f"iceberg+sqlite:///{tmp_path / 'catalog.db'}#logs.chats"

    stats, kept, _ = _dedup(tmp_path, uri, name="latest")
    assert _instructions(kept) == _iceberg_oracle(table) and len(kept) == 2
    assert stats["tables"] == [{"path": uri, "format": "iceberg", "version": table.current_snapshot().snapshot_id}]

    stats, kept, _ = _dedup(tmp_path, uri, f"input.version={snaps[1]}", name="v1")
    assert _instructions(kept) == _iceberg_oracle(table, snapshot_id=snaps[1]) and len(kept) == 5

    when = table.snapshot_by_id(snaps[0]).timestamp_ms
    stats, kept, _ = _dedup(tmp_path, uri, f"input.as_of={_iso(when)}", name="as_of")
    assert _instructions(kept) == _iceberg_oracle(table, snapshot_id=snaps[0]) and len(kept) == 3

    # the table folder itself (its newest metadata.json) reads the same snapshot as the catalog
    folder = Path(table.metadata_location.removeprefix("file://")).parent.parent
    stats, kept, _ = _dedup(tmp_path, folder, name="folder")
    assert _instructions(kept) == _iceberg_oracle(table)
    # ... and so does that metadata.json file named directly (a StaticTable: no catalog)
    stats, kept, _ = _dedup(tmp_path, table.metadata_location.removeprefix("file://"), name="file")
    assert _instructions(kept) == _iceberg_oracle(table)

    with pytest.raises(UserError, match="has no snapshot 12345"):
        _dedup(tmp_path, uri, "input.version=12345", name="missing")


def test_iceberg_identity_partitions_are_columns_and_the_filter_prunes(spark, tmp_path):
    from pyiceberg.transforms import IdentityTransform

    catalog = _catalog(tmp_path)
    sample = _rows("x", 1, dt="2026-11-30")
    table = catalog.create_table("logs.parted", schema=sample.schema)
    with table.update_spec() as spec:
        spec.add_field("dt", IdentityTransform(), "dt")
    for dt in ["2026-11-28", "2026-11-29", "2026-11-30"]:
        table.append(_rows(f"ice day {dt}", 2, dt=dt))
    files = {t.file.file_path.removeprefix("file://"): t.file.partition[0] for t in table.scan().plan_files()}

    uri = f"iceberg+sqlite:///{tmp_path / 'catalog.db'}#logs.parted"
    stats, kept, _ = _dedup(tmp_path, uri, "input.fields={instruction: instruction, input: dt}",
                            "input.filter=[[dt, '==', '2026-11-29']]")
    assert {r["source"] for r in kept} == {p for p, v in files.items() if v == "2026-11-29"}
    assert stats["pruned_files"] == 2 and all(r["input"] == "2026-11-29" for r in kept)
    assert _instructions(kept) == [f"ice day 2026-11-29 instruction number {i}" for i in range(2)]


def test_iceberg_renamed_column_is_read_by_field_id(spark, tmp_path):
    catalog = _catalog(tmp_path)
    old = pa.table({"prompt": ["before the rename 0", "before the rename 1"], "input": ["", ""]})
    table = catalog.create_table("logs.renamed", schema=old.schema)
    table.append(old)
    with table.update_schema() as update:
        update.rename_column("prompt", "instruction")
    table.append(pa.table({"instruction": ["after the rename"], "input": [""]}))
    uri = f"iceberg+sqlite:///{tmp_path / 'catalog.db'}#logs.renamed"

    stats, kept, quarantine = _dedup(tmp_path, uri)
    assert _instructions(kept) == _iceberg_oracle(table) and len(kept) == 3 and not quarantine
    # the first file still says "prompt": a by-name read would find no instruction there
    assert any("prompt" in pq.read_schema(r["source"]).names for r in kept)


def test_iceberg_position_deletes_are_applied(spark, tmp_path):
    catalog = _catalog(tmp_path)
    table = catalog.create_table("logs.deleted", schema=_rows("d", 1).schema)
    table.append(_rows("position deleted", 5))
    table.append(_rows("untouched", 2))
    _add_position_deletes(table, positions=[1, 2])
    table = catalog.load_table("logs.deleted")
    assert len(_iceberg_oracle(table)) == 5  # pyiceberg's own reader applies the deletes
    stats, kept, _ = _dedup(tmp_path, f"iceberg+sqlite:///{tmp_path / 'catalog.db'}#logs.deleted")
    assert _instructions(kept) == _iceberg_oracle(table)
    assert "position deleted instruction number 1" not in _instructions(kept)
    assert stats["read"] == 5 and _conserved(stats)


def _add_position_deletes(table, positions: list[int]) -> None:
    """Commit a Parquet position-delete file for the rows at ``positions`` of the table's first data
    file (pyiceberg itself deletes by rewriting; the file follows the Iceberg spec's field ids)."""
    import os

    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.typedef import Record

    target = next(t.file.file_path for t in table.scan().plan_files() if "position deleted" in
                  pq.read_table(t.file.file_path.removeprefix("file://")).column("instruction")[0].as_py())
    path = Path(target.removeprefix("file://")).parent / "pos-deletes-0.parquet"
    schema = pa.schema([pa.field("file_path", pa.string(), False, {b"PARQUET:field_id": b"2147483546"}),
                        pa.field("pos", pa.int64(), False, {b"PARQUET:field_id": b"2147483545"})])
    pq.write_table(pa.table({"file_path": [target] * len(positions), "pos": positions}, schema=schema), path)
    delete = DataFile.from_args(content=DataFileContent.POSITION_DELETES, file_path=f"file://{path}",
                                file_format=FileFormat.PARQUET, partition=Record(),
                                record_count=len(positions), file_size_in_bytes=os.path.getsize(path))
    delete.spec_id = 0
    with table.transaction() as tx:
        with tx.update_snapshot().fast_append() as append:
            append.append_data_file(delete)


def test_iceberg_equality_deletes_are_refused_with_one_line(spark, tmp_path):
    import os

    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.typedef import Record

    catalog = _catalog(tmp_path)
    table = catalog.create_table("logs.eq", schema=_rows("d", 1).schema)
    table.append(_rows("equality", 3))
    path = tmp_path / "eq-deletes.parquet"
    pq.write_table(pa.table({"instruction": ["equality instruction number 0"]}), path)
    delete = DataFile.from_args(content=DataFileContent.EQUALITY_DELETES, file_path=f"file://{path}",
                                file_format=FileFormat.PARQUET, partition=Record(), record_count=1,
                                file_size_in_bytes=os.path.getsize(path), equality_ids=[1])
    delete.spec_id = 0
    with table.transaction() as tx:
        with tx.update_snapshot().fast_append() as append:
            append.append_data_file(delete)
    with pytest.raises(UserError) as e:
        _dedup(tmp_path, f"iceberg+sqlite:///{tmp_path / 'catalog.db'}#logs.eq")
    assert "equality deletes" in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- rerun on a new commit
def test_a_new_commit_reruns_dedup_and_no_commit_skips_it(spark, tmp_path):
    from deltalake import write_deltalake

    from selectllm.pipeline import BY_NAME, run_stage
    from selectllm.rundir import RunDir

    table = tmp_path / "t"
    write_deltalake(str(table), _rows("rerun", 3))
    run = RunDir(str(tmp_path / "run"))
    cfg = _config(table)
    first = run_stage(cfg, run, BY_NAME["dedup"])
    again = run_stage(cfg, run, BY_NAME["dedup"])
    assert again["output_token"] == first["output_token"]  # same version: skipped
    write_deltalake(str(table), _rows("rerun more", 2), mode="append")
    third = run_stage(cfg, run, BY_NAME["dedup"])
    assert third["output_token"] != first["output_token"] and third["counts"]["kept"] == 5


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_table_read_with_a_contradicting_format_is_refused_with_one_line(tmp_path, fmt):
    """input.format: jsonl over a Delta table would read its Parquet files as JSON lines and
    quarantine every row: refused before anything is read."""
    from deltalake import write_deltalake

    from selectllm.dedup.stage import list_inputs

    write_deltalake(str(tmp_path / "t"), _rows("a", 3))
    with pytest.raises(UserError) as e:
        list_inputs(_config(tmp_path / "t", f"input.format={fmt}"))
    msg = str(e.value)
    assert "\n" not in msg and f"input.format {fmt} contradicts" in msg and "delta table" in msg
    for ok in ("auto", "parquet"):
        assert [f.url.endswith(".parquet") for f in list_inputs(_config(tmp_path / "t", f"input.format={ok}"))] == [True]
