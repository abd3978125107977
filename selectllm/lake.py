"""``input.paths`` entries that are tables or partitioned folders -> the data files to read.

Resolved on the driver (file names and table metadata only); the files are then read by the
dedup stage's ordinary Parquet/JSONL path.  What a table's metadata adds to a file's rows
travels with the file as :attr:`selectllm.io.InputFile.meta` (a small JSON object):

* ``partition``: ``{column: value}`` added to every record of the file (values are strings as the
  table or folder names write them; ``None`` for a null partition);
* ``field_ids``: ``{Parquet field id: current column name}`` (Iceberg: columns are matched by id,
  so a renamed column is read under its new name);
* ``rename``: ``{physical name: column name}`` (Delta column mapping);
* ``where``: the ``input.filter`` conditions on columns that are not partition columns of the
  file, checked on every row (a row that fails is counted as ``filtered_rows``, not ``read``);
* ``deleted``: ``[[start, end), ...]`` row positions that a table deleted without rewriting the
  file (Delta deletion vectors, Iceberg position deletes): never read, never counted.

Three kinds of path:

* **Delta Lake**: a folder holding ``_delta_log/``.  The snapshot's live files come from the log
  (``deltalake``), partition values from its add actions.  Deletion vectors are applied (the
  deleted positions travel with the file), column mapping is applied to top-level columns.
* **Iceberg**: a folder holding ``metadata/*.metadata.json`` (the newest one, or the one
  ``metadata/version-hint.text`` names), a ``.metadata.json`` file, or
  ``iceberg+sqlite:///path/catalog.db#namespace.table`` (a pyiceberg SQL catalog on SQLite;
  ``...catalog.db?catalog=NAME#...`` when several catalogs in it hold that name).
  Position deletes are applied (the deleted positions travel with the file); equality deletes
  and Puffin deletion vectors are refused.
* **Any other folder**: its data files; ``key=value`` folder names between the folder named in
  ``input.paths`` and a file are Hive partitions (``dt=2026-11-30/part-0.parquet``).

``input.version`` / ``input.as_of`` pick a table's snapshot; ``input.filter`` prunes files by
partition value before anything is read; conditions on other columns travel with the file as
``meta["where"]`` and are checked on every row (:mod:`selectllm.filters`).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote

import fsspec

from selectllm.errors import UserError
from selectllm.filters import as_text, resolve, split_conditions
from selectllm.io import InputFile, expand_inputs

ICEBERG_SQLITE = "iceberg+sqlite://"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class Resolved:
    """What ``input.paths`` names: the files to read, the tables behind them, the files pruned."""

    files: list[InputFile]
    tables: list[dict]  # {path, format, version}: the snapshot read
    pruned: int  # files left out by input.filter
    filters_rows: bool = False  # some file's rows are checked against input.filter


# ----------------------------------------------------------------------------- detection
def _local(raw: str) -> tuple[bool, str]:
    remote = "://" in raw and not raw.startswith("file://")
    return remote, raw if remote else os.path.abspath(os.path.expanduser(raw.removeprefix("file://")))


def table_kind(raw: str) -> str | None:
    """``delta``, ``iceberg`` or None (a file, glob or plain folder)."""
    if raw.startswith(ICEBERG_SQLITE):
        return "iceberg"
    _, target = _local(raw)
    if target.endswith(".metadata.json"):
        return "iceberg"
    try:
        fs, root = fsspec.core.url_to_fs(target)
        if not fs.isdir(root):
            return None
        if fs.isdir(posixpath.join(root, "_delta_log")):
            return "delta"
        if fs.glob(posixpath.join(root, "metadata", "*.metadata.json")):
            return "iceberg"
    except Exception:
        return None  # expand_inputs names the problem
    return None


def _meta(**parts: Any) -> str:
    kept = {k: v for k, v in parts.items() if v}
    return json.dumps(kept, sort_keys=True, ensure_ascii=False) if kept else ""


def _url(path: str) -> str:
    """A table's file location as fsspec and the readers take it (local files as plain paths)."""
    return unquote(path[len("file://"):]) if path.startswith("file://") else path


def _as_of(as_of: str) -> datetime:
    when = datetime.fromisoformat(as_of)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


# ----------------------------------------------------------------------------- deleted rows
def deleted_runs(positions) -> list[list[int]]:
    """Sorted row positions -> ``[[start, end), ...]`` runs (how deleted rows travel in ``meta``)."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and p <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], p + 1)
        else:
            runs.append([p, p + 1])
    return runs


def _delta_deleted(table) -> dict[str, list[list[int]]]:
    """{file: deleted row runs} from the snapshot's deletion vectors (decoded by delta-rs)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dvs = pa.table(table.deletion_vectors())
    out = {}
    for i in range(dvs.num_rows):
        keep = dvs.column("selection_vector")[i].values  # one bool per row; rows past its end are kept
        gone = pc.indices_nonzero(pc.invert(keep)).to_pylist()
        out[_url(dvs.column("filepath")[i].as_py())] = deleted_runs(gone)
    return out


# ----------------------------------------------------------------------------- Delta Lake
def delta_files(raw: str, version: int | None, as_of: str | None) -> tuple[list[InputFile], dict]:
    """The live data files of a Delta table's snapshot and the snapshot read.

    Deletion vectors are applied (the deleted positions travel with the file), column mapping
    is applied to top-level columns (files hold physical names).
    """
    import pyarrow as pa
    from deltalake import DeltaTable

    _, target = _local(raw)
    try:
        table = DeltaTable(target)
        if version is not None:
            table.load_as_version(version)
        elif as_of is not None:
            table.load_as_version(_as_of(as_of))
        deleted = _delta_deleted(table) if "deletionVectors" in (table.protocol().reader_features or []) else {}
    except Exception as e:  # no such version, a timestamp before the first commit, a broken log
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read Delta table {raw}: {msg}") from None
    v = table.version()
    rename = _delta_column_mapping(raw, table)
    actions = pa.table(table.get_add_actions(flatten=False))
    parts = actions.column("partition").to_pylist() if "partition" in actions.column_names \
        else [None] * actions.num_rows
    root = _url(table.table_uri.rstrip("/"))
    files = []
    for path, size, pv in zip(actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist(), parts):
        url = _url(path) if "://" in path else posixpath.join(root, unquote(path))  # the log URL-encodes paths
        partition = {k: as_text(val) for k, val in (pv or {}).items()}
        files.append(InputFile(url=url, size=int(size), version=f"delta:{v}",
                               meta=_meta(partition=partition, rename=rename, deleted=deleted.get(url))))
    return files, {"path": raw, "format": "delta", "version": v}


def _delta_column_mapping(raw: str, table) -> dict:
    """``{physical: logical}`` under column mapping (top-level columns); {} without it."""
    mode = (table.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
    if mode == "none":
        return {}
    schema = json.loads(table.schema().to_json())
    rename = {}
    for field in schema["fields"]:
        physical = (field.get("metadata") or {}).get("delta.columnMapping.physicalName", field["name"])
        if physical != field["name"]:
            rename[physical] = field["name"]
        if _nested(field["type"]):
            raise UserError(f"Delta table {raw} uses column mapping ({mode}) and column {field['name']!r} "
                            "is nested: its inner names are physical ones this reader does not map; "
                            "rewrite the table without column mapping")
    return rename


def _nested(kind: Any) -> bool:
    return isinstance(kind, dict) and kind.get("type") in ("struct", "array", "map")


# ----------------------------------------------------------------------------- Iceberg
def _iceberg_table(raw: str):
    from pyiceberg.table import StaticTable

    if raw.startswith(ICEBERG_SQLITE):
        from pyiceberg.catalog.sql import SqlCatalog

        rest = raw[len(ICEBERG_SQLITE):].removeprefix("/")  # as SQLAlchemy: sqlite:////abs.db, sqlite:///rel.db
        if "#" not in rest or "." not in rest.split("#", 1)[1]:
            raise UserError(f"{raw}: write iceberg+sqlite:///path/catalog.db#namespace.table")
        db, name = rest.split("#", 1)
        db, _, query = db.partition("?")
        db = os.path.abspath(db)
        if not os.path.isfile(db):
            raise UserError(f"{raw}: no SQLite catalog at {db}")
        catalog_name = query.removeprefix("catalog=") if query.startswith("catalog=") else _catalog_name(raw, db, name)
        return SqlCatalog(catalog_name, uri=f"sqlite:///{db}").load_table(name)
    _, target = _local(raw)
    if target.endswith(".metadata.json"):
        return StaticTable.from_metadata(target)
    fs, root = fsspec.core.url_to_fs(target)
    meta = posixpath.join(root, "metadata")
    hint = posixpath.join(meta, "version-hint.text")
    if fs.exists(hint):
        n = fs.cat_file(hint).decode().strip()
        named = fs.glob(posixpath.join(meta, f"v{n}.metadata.json")) or fs.glob(posixpath.join(meta, f"{n}*.metadata.json"))
        if named:
            return StaticTable.from_metadata(_rejoin(target, root, named[0]))

    def number(p: str) -> int:
        head = posixpath.basename(p).removeprefix("v").split("-", 1)[0].split(".", 1)[0]
        return int(head) if head.isdigit() else -1

    newest = max(fs.glob(posixpath.join(meta, "*.metadata.json")), key=lambda p: (number(p), p))
    return StaticTable.from_metadata(_rejoin(target, root, newest))


def _catalog_name(raw: str, db: str, name: str) -> str:
    """The catalog that holds ``namespace.table`` in a pyiceberg SQL catalog database (tables are
    stored per catalog name); ``?catalog=NAME`` in the path picks one when several do."""
    import sqlite3

    namespace, table = name.rsplit(".", 1)
    con = sqlite3.connect(f"file:{quote(db)}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT DISTINCT catalog_name FROM iceberg_tables WHERE table_namespace = ? "
                           "AND table_name = ?", (namespace, table)).fetchall()
    except sqlite3.Error as e:
        raise UserError(f"{raw}: {db} is not a pyiceberg SQL catalog ({e})") from None
    finally:
        con.close()
    if not rows:
        raise UserError(f"{raw}: the catalog at {db} has no table {name}")
    if len(rows) > 1:
        names = ", ".join(sorted(r[0] for r in rows))
        raise UserError(f"{raw}: catalogs {names} all hold {name}: add ?catalog=NAME before the #")
    return rows[0][0]


def _rejoin(target: str, root: str, path: str) -> str:
    return target.split("://", 1)[0] + "://" + path if "://" in target else path


def iceberg_files(raw: str, version: int | None, as_of: str | None) -> tuple[list[InputFile], dict]:
    """The data files of an Iceberg snapshot and the snapshot read (position deletes applied)."""
    try:
        table = _iceberg_table(raw)
    except UserError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read Iceberg table {raw}: {type(e).__name__}: {msg}") from None
    if version is not None:
        snapshot = table.snapshot_by_id(version)
        if snapshot is None:
            known = ", ".join(str(s.snapshot_id) for s in table.snapshots()) or "none"
            raise UserError(f"Iceberg table {raw} has no snapshot {version} (its snapshots: {known})")
    elif as_of is not None:
        snapshot = table.snapshot_as_of_timestamp(int(_as_of(as_of).timestamp() * 1000))
        if snapshot is None:
            raise UserError(f"Iceberg table {raw} has no snapshot at or before {as_of}")
    else:
        snapshot = table.current_snapshot()
    info = {"path": raw, "format": "iceberg", "version": snapshot.snapshot_id if snapshot else None}
    if snapshot is None:  # a table with no data yet
        return [], info
    schema = table.schemas().get(snapshot.schema_id) if snapshot.schema_id is not None else None
    schema = schema or table.schema()
    _refuse_nested_renames(raw, table, schema)
    field_ids = {str(f.field_id): f.name for f in schema.fields}
    try:
        tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files())
    except ValueError as e:  # equality deletes: which rows they remove depends on every row's values
        raise UserError(f"Iceberg table {raw} (snapshot {snapshot.snapshot_id}) has equality deletes, which "
                        f"are not applied ({str(e).splitlines()[0]}); rewrite its data files (Spark: CALL "
                        "system.rewrite_data_files) or pick an earlier input.version") from None
    deleted = _iceberg_deleted(raw, table, tasks)
    files = []
    for task in tasks:
        f = task.file
        if str(f.file_format).upper().rsplit(".", 1)[-1] != "PARQUET":
            raise UserError(f"Iceberg table {raw}: data file {f.file_path} is {f.file_format}; only Parquet "
                            "data files are read")
        partition = _iceberg_partition(table, schema, f)
        files.append(InputFile(url=_url(f.file_path), size=int(f.file_size_in_bytes),
                               version=f"iceberg:{snapshot.snapshot_id}",
                               meta=_meta(partition=partition, field_ids=field_ids, deleted=deleted.get(f.file_path))))
    return files, info


def _iceberg_deleted(raw: str, table, tasks) -> dict[str, list[list[int]]]:
    """{data file path: deleted row runs} from the position delete files of the planned tasks.

    Each delete file is read once (only its ``file_path`` and ``pos`` columns); what the driver
    holds grows with the number of deleted rows, not with the table.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = {t.file.file_path for t in tasks if t.delete_files}
    by_file: dict[str, list[int]] = {}
    seen = set()
    for task in tasks:
        for d in task.delete_files:
            if d.file_path in seen:
                continue
            seen.add(d.file_path)
            if str(d.file_format).upper().rsplit(".", 1)[-1] != "PARQUET":  # v3 deletion vectors (Puffin)
                raise UserError(f"Iceberg table {raw}: delete file {d.file_path} is {d.file_format}; only "
                                "Parquet position deletes are applied: compact the table (rewrite_data_files) first")
            with table.io.new_input(d.file_path).open() as f:
                positions = pq.read_table(f, columns=["file_path", "pos"])
            for path in set(positions.column("file_path").to_pylist()) & wanted:
                mine = positions.filter(pc.equal(positions.column("file_path"), path)).column("pos").to_pylist()
                by_file.setdefault(path, []).extend(mine)
    return {path: deleted_runs(sorted(set(pos))) for path, pos in by_file.items()}


def _iceberg_partition(table, schema, data_file) -> dict:
    """Identity partition values of one data file, as strings (the human form Iceberg writes)."""
    from pyiceberg.transforms import IdentityTransform

    spec = table.specs()[data_file.spec_id]
    out = {}
    for i, field in enumerate(spec.fields):
        if not isinstance(field.transform, IdentityTransform):
            continue
        source = schema.find_field(field.source_id)
        value = data_file.partition[i]
        out[source.name] = None if value is None else field.transform.to_human_string(source.field_type, value)
    return out


def _refuse_nested_renames(raw: str, table, schema) -> None:
    """Top-level renames are read by field id; a renamed nested field is refused."""
    from pyiceberg.schema import index_by_id

    current = index_by_id(schema)
    top = {f.field_id for f in schema.fields}
    for old in table.schemas().values():
        for fid, field in index_by_id(old).items():
            if fid in current and fid not in top and current[fid].name != field.name:
                raise UserError(f"Iceberg table {raw}: nested field {field.name!r} was renamed to "
                                f"{current[fid].name!r}; only top-level renames are read: rewrite the table")


# ----------------------------------------------------------------------------- folders
def hive_partition(root: str, path: str) -> dict:
    """``key=value`` folder names between ``root`` and ``path``'s file (URL-decoded)."""
    rel = posixpath.relpath(posixpath.dirname(path), root)
    out = {}
    for part in rel.split("/"):
        if "=" in part and not part.startswith("="):
            k, v = part.split("=", 1)
            v = unquote(v)
            out[unquote(k)] = None if v == HIVE_NULL else v
    return out


def _folder_files(raw: str) -> list[InputFile]:
    remote, target = _local(raw)
    files = expand_inputs([raw])
    try:
        fs, root = fsspec.core.url_to_fs(target)
        is_dir = fs.isdir(root)
    except Exception:
        is_dir = False
    out = []
    for f in files:
        path = fsspec.core.url_to_fs(f.url)[1] if remote else f.url
        inner = path.split("/")
        if "_delta_log" in inner or (path.endswith(".metadata.json") and "metadata" in inner):
            kind = "Delta" if "_delta_log" in inner else "Iceberg"
            top = "/".join(inner[:inner.index("_delta_log" if kind == "Delta" else "metadata")])
            raise UserError(f"input path {raw} holds a {kind} table at {top}: name the table itself in "
                            "input.paths (its folder), not a folder above it")
        partition = hive_partition(root, path) if is_dir else {}
        out.append(replace(f, meta=_meta(partition=partition)))
    return out


# ----------------------------------------------------------------------------- everything
def resolve_inputs(paths: list[str], version: int | None = None, as_of: str | None = None,
                   triples: list | None = None) -> Resolved:
    """The files ``paths`` name (tables resolved to their snapshot's files), pruned by the
    partition conditions of ``triples`` (``input.filter``)."""
    if not paths:
        raise UserError("config: input.paths is empty: name at least one file, glob or folder")
    seen: dict[str, InputFile] = {}
    tables: list[dict] = []
    pruned = 0
    conditions = resolve(triples or [])  # today-N -> a date, once for every file
    for raw in paths:
        kind = table_kind(raw)
        if kind == "delta":
            files, info = delta_files(raw, version, as_of)
            tables.append(info)
        elif kind == "iceberg":
            files, info = iceberg_files(raw, version, as_of)
            tables.append(info)
        else:
            files = _folder_files(raw)
        for f in files:
            if conditions:
                meta = json.loads(f.meta) if f.meta else {}
                keep, rows = split_conditions(meta.get("partition", {}), conditions)
                if not keep:
                    pruned += 1
                    continue
                if rows:  # conditions on other columns: checked on every row of the file
                    meta["where"] = rows
                    f = replace(f, meta=json.dumps(meta, sort_keys=True, ensure_ascii=False))
            seen[f.url] = f
    if (version is not None or as_of is not None) and not tables:
        key = "input.version" if version is not None else "input.as_of"
        raise UserError(f"config: {key} picks a Delta or Iceberg table's snapshot, and no path of "
                        "input.paths is a table")
    if not seen:
        why = f"input.filter left out all {pruned} files" if pruned else "the tables hold no data file"
        raise UserError(f"nothing to read in input.paths: {why}")
    files = [seen[k] for k in sorted(seen)]
    return Resolved(files=files, tables=tables, pruned=pruned, filters_rows=any("where" in json.loads(f.meta) for f in files if f.meta))
