"""The ``dedup`` stage on Spark: raw files -> canonical unique rows + quarantine + duplicates.

Plan (nothing but file names and small aggregates ever reach the driver):

1. The driver lists the input files (:func:`selectllm.lake.resolve_inputs`: names and sizes only;
   a Delta/Iceberg table resolved to its snapshot's live files, ``input.filter`` pruning files
   by partition value) and checks that each one's format can be told.  Large uncompressed files are cut into splits
   of about ``spark.sql.files.maxPartitionBytes`` (default 64 MB; :mod:`selectllm.text.splits`):
   line-aligned byte ranges for JSONL/text/CSV, row groups for Parquet; a count pass (one small
   Spark job, newlines per range) gives each line split the ``source_row`` of its first line.
2. A small DataFrame of splits, one task per split (or per group of small files), runs
   :func:`selectllm.text.formats.iter_records` in ``mapInArrow``: every record becomes one row
   ``(source, source_row, raw, instruction, input, reason, id, text)`` (reason ``filtered``:
   the row failed ``input.filter``; counted as ``filtered_rows``, not as read).  ``instruction`` and
   ``input`` stay as in the source (what the LLM and ``selected.jsonl`` get); the normalized form
   (:func:`clean_text`) gives the id (:func:`content_id`) and the embedded text
   (:func:`render_text`), computed in that same Python pass.  The result is persisted (memory
   and disk) so the files are read once.
3. ``reason IS NOT NULL`` -> ``quarantine/`` (QUARANTINE schema).  Good rows are exactly
   deduplicated by id: the keeper of an id is the row with the smallest ``(source, source_row)``,
   the others go to ``duplicates.parquet`` (a *folder* of part files that pyarrow, Spark and Ray
   all read as one dataset; DUPLICATES schema, ``kind="exact"``, ``similarity=1.0``,
   ``duplicate_of`` = the keeper's id, which equals ``id`` for exact duplicates).
4. Kept rows, globally sorted by id, become ``part-00000.parquet``, ``part-00001.parquet``, ...
   directly in the stage folder (DEDUP schema exactly); ``stats.json`` holds the counts, and
   ``read == kept + exact_duplicates + near_duplicates + quarantined_total`` is checked.

Chat presets (``input.preset`` openai | sharegpt | lmsys) add ``user_turn`` and ``media_parts``
to the kept rows and ``user_turn`` to the quarantine and the duplicates: with ``input.turn: each``
one record gives several rows, so a row is named by ``(source, source_row, user_turn)`` and that
is the keeper order.  ``input.keep`` columns follow as strings (:func:`extra_schema`).  A file
that fails while being read gives ``unreadable`` quarantine rows (:mod:`selectllm.text.formats`),
listed in ``stats.json`` under ``unreadable_files``.

All outputs are sorted (kept by id, duplicates by id/source/source_row, quarantine by
source/source_row), so the same inputs give the same files' contents whatever the partitioning.
Spark's ``_SUCCESS`` and ``.crc`` files are removed.

Near-duplicate removal (``dedup.near.enabled``; :mod:`selectllm.dedup.near`) runs after exact
dedup on the kept rows: banded MinHash LSH, candidates verified by true Jaccard, connected
components in Spark, keeper = the component's smallest ``(source, source_row)``.  Removed rows go
to ``duplicates.parquet`` with ``kind="near"``; ``stats.json`` gets ``near_duplicates`` and a
``near`` section (bands, candidate pairs, giant buckets, ...).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, Iterator

import pyarrow as pa
from pyspark.accumulators import AccumulatorParam  # no JVM: plain Python

from selectllm import schemas
from selectllm.config import Config
from selectllm.contract import Output, Resources, Settings, Stage
from selectllm.dedup.near import HISTORY_SOURCE, SIGNED  # earlier rows in near dedup (they keep)
from selectllm.errors import UserError

STAGED = pa.schema(
    [
        ("source", pa.string()),
        ("source_row", pa.int64()),
        ("raw", pa.string()),
        ("instruction", pa.string()),
        ("input", pa.string()),
        ("reason", pa.string()),
        ("id", pa.string()),
        ("text", pa.string()),
    ]
)
BATCH_ROWS = 4096
BATCH_CHARS = 32 << 20  # flush an Arrow batch once it holds this many characters
TURN_BITS = 12  # near dedup of chat rows: node row = source_row << TURN_BITS | user_turn


def is_chat(cfg: Config) -> bool:
    from selectllm.text.chat import CHAT_PRESETS

    return cfg.input.preset in CHAT_PRESETS


def extra_schema(cfg: Config) -> pa.Schema:
    """Columns after the DEDUP ones in dedup/part-*.parquet: ``user_turn``, ``media_parts`` for a
    chat preset, then the ``input.keep`` columns (strings; :func:`~selectllm.text.formats.keep_value`),
    then ``findings`` when privacy is on (what was masked in the row: ``{"EMAIL": 1}``, or null)."""
    fields = list(schemas.CHAT_COLUMNS) if is_chat(cfg) else []
    fields += [(k, pa.string()) for k in cfg.input.keep]
    if cfg.privacy.mode != "off":
        fields.append(schemas.FINDINGS)
    return pa.schema(fields)


def privacy_settings(cfg: Config) -> tuple | None:
    """What the reading tasks need to build their redactor (plain values), or None when off."""
    p = cfg.privacy
    if p.mode == "off":
        return None
    return p.mode, tuple(e.upper() for e in p.entities), tuple(p.phone_regions), p.timeout_s


def _ddl(schema: pa.Schema) -> str:
    kind = {pa.int64(): "bigint", pa.string(): "string"}
    return ", ".join(f"`{f.name.replace('`', '``')}` {kind[f.type]}" for f in schema)


# ----------------------------------------------------------------------------- the Python pass
def _reader(fmt: str, preset: str, fields: dict | None, max_chars: int, template: str,
            template_no_input: str, progress=None, turn: str = "first", extra: pa.Schema | None = None,
            privacy: tuple | None = None, quality=None):
    """The mapInArrow function: splits in, one row per record out (STAGED + ``extra`` columns).
    Closes over plain values (and ``progress``'s accumulators: rows read, splits done per file).

    ``privacy`` (:func:`privacy_settings`): every row is masked here, before anything else sees
    it (:func:`_redact`); the id and the embedded text are made from the masked text.
    ``quality`` (a :class:`selectllm.text.quality.QualityRules`): a good row whose (masked)
    instruction breaks a rule becomes a ``low_quality`` quarantine row whose ``raw`` names the
    rule (JSON: rule, instruction, input)."""
    rows_acc = progress.rows if progress is not None else None
    done_acc = progress.done if progress is not None else None
    extra = extra if extra is not None else pa.schema([])
    schema = pa.schema(list(STAGED) + list(extra))
    keep = [f.name for f in extra if f.name not in schemas.CHAT_COLUMNS.names and f.name != schemas.FINDINGS.name]

    def read_files(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from selectllm.text.formats import FILTERED, iter_rows
        from selectllm.text.normalize import clean_text, content_id, render_text
        from selectllm.text.quality import low_quality_rule
        from selectllm.text.splits import Split

        cols: dict[str, list] = {n: [] for n in schema.names}
        chars = 0
        redact = _redact(privacy, keep) if privacy is not None else None

        def flush() -> pa.RecordBatch:
            nonlocal cols, chars
            batch = pa.RecordBatch.from_pydict(cols, schema=schema)
            if rows_acc is not None:
                rows_acc.add(batch.num_rows)
            cols, chars = {n: [] for n in schema.names}, 0
            return batch

        for batch in batches:
            for values in batch.to_pylist():
                split = Split(**values)
                url = split.url
                for row, raw, instr, inp, reason, more in iter_rows(url, fmt, preset, fields, max_chars, split,
                                                                    turn, keep):
                    found = None
                    if reason == FILTERED:  # failed input.filter: only counted
                        raw = None
                    elif redact is not None:
                        row, raw, instr, inp, reason, more, found = redact(row, raw, instr, inp, reason, more)
                    if reason is None and quality is not None and (rule := low_quality_rule(instr, quality)):
                        raw = json.dumps({"rule": rule, "instruction": instr, "input": inp}, ensure_ascii=False)
                        instr, inp, reason = None, None, "low_quality"
                    cols["source"].append(url)
                    cols["source_row"].append(row)
                    cols["raw"].append(raw)
                    cols["instruction"].append(instr)
                    cols["input"].append(inp)
                    cols["reason"].append(reason)
                    for name in extra.names:  # a kept field missing from the record: null
                        cols[name].append(found if name == schemas.FINDINGS.name else more.get(name) if more else None)
                    if reason is None:  # normalized for the id and the embedding only
                        norm_instr, norm_inp = clean_text(instr), clean_text(inp)
                        text = render_text(norm_instr, norm_inp, template, template_no_input)
                        cols["id"].append(content_id(norm_instr, norm_inp))
                        cols["text"].append(text)
                        chars += len(instr) + len(inp) + len(text)
                    else:
                        cols["id"].append(None)
                        cols["text"].append(None)
                        chars += len(raw or "")
                    if len(cols["source"]) >= BATCH_ROWS or chars >= BATCH_CHARS:
                        yield flush()
                if done_acc is not None:
                    done_acc.add({split.file_index: 1})
        if cols["source"]:
            yield flush()

    return read_files


def _redact(privacy: tuple, keep: list[str]):
    """The row masker of one reading task: ``(row, raw, instr, inp, reason, more)`` in, the same
    masked plus the row's ``findings`` (JSON, or None) out.  The redactor is this Python worker's
    (built by its first task, reused by the next ones).

    A good row: instruction, input and the ``input.keep`` columns masked together (one numbering);
    with ``privacy.mode: drop`` a row with a SECRET is quarantined (reason ``secret``, its masked
    fields as ``raw``).  A quarantined row: its ``raw`` text (the record, or a file's error
    message) masked.  A detector past ``privacy.timeout_s`` fails closed: a good row is
    quarantined (``privacy_timeout``) and no text of it is kept; a quarantined row loses its raw."""
    from selectllm.privacy.redact import DetectTimeout, findings_json, redactor

    mode, entities, regions, timeout_s = privacy
    red = redactor(entities, regions, timeout_s)

    def redact(row, raw, instr, inp, reason, more):
        if reason is not None:
            if not raw:
                return row, raw, instr, inp, reason, more, None
            try:
                masked, found = red.mask_row({"raw": raw})
            except DetectTimeout:
                return row, None, instr, inp, reason, more, None
            return row, masked["raw"], instr, inp, reason, more, findings_json(found)
        fields = {"instruction": instr, "input": inp}
        if more:
            fields.update({k: more.get(k) for k in keep})
        try:
            masked, found = red.mask_row(fields)
        except DetectTimeout:
            kept = {k: v for k, v in (more or {}).items() if k not in keep}
            return row, None, None, None, schemas.PRIVACY_TIMEOUT, kept, None
        more = {**more, **{k: masked[k] for k in keep}} if more else more
        if mode == "drop" and found.get("SECRET"):
            record = json.dumps(masked, ensure_ascii=False)
            return row, record, None, None, schemas.SECRET, more, findings_json(found)
        return row, None, masked["instruction"], masked["input"], None, more, findings_json(found)

    return redact


# ----------------------------------------------------------------------------- progress
class PerFileParam(AccumulatorParam):
    """Accumulator parameter: ``{file index: splits done}`` summed over tasks."""

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, a: dict, b: dict) -> dict:  # noqa: N802 - Spark's name
        for k, v in b.items():
            a[k] = a.get(k, 0) + v
        return a


class ReadProgress:
    """"dedup: N rows read, f/F files done" every ``every`` seconds while the files are read.

    The reading tasks add to two Spark accumulators (rows, splits done per file); Spark merges
    them on the driver as tasks finish, so the figures move one finished batch or split at a time.
    """

    def __init__(self, spark, splits: list, log, every: float = 10.0):
        self.rows = spark.sparkContext.accumulator(0)
        self.done = spark.sparkContext.accumulator({}, PerFileParam())
        self.per_file: dict[int, int] = {}
        for sp in splits:
            self.per_file[sp.file_index] = self.per_file.get(sp.file_index, 0) + 1
        self.log, self.every = log, every
        self._stop = None
        self._last = ""

    def line(self) -> str:
        done = self.done.value
        files = sum(1 for i, n in self.per_file.items() if done.get(i, 0) >= n)
        return (f"dedup: {self.rows.value:,} rows read, {files}/{len(self.per_file)} files done "
                f"({sum(done.values())}/{sum(self.per_file.values())} splits)")

    def __enter__(self) -> "ReadProgress":
        import threading

        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.wait(self.every):
                self._print_if_new()

        threading.Thread(target=loop, daemon=True, name="dedup-progress").start()
        return self

    def _print_if_new(self) -> None:
        line = self.line()
        if line != self._last:  # a stalled read prints nothing new
            self._last = line
            self.log.print(line)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if exc[0] is None:
            self._print_if_new()


# ----------------------------------------------------------------------------- the plan
def resolve_inputs(cfg: Config):
    """:func:`selectllm.lake.resolve_inputs` for this config: files, tables read, files pruned."""
    from selectllm.lake import resolve_inputs as resolve

    return resolve(cfg.input.paths, cfg.input.version, cfg.input.as_of, cfg.input.filter)


def list_inputs(cfg: Config, resolved=None) -> list:
    """The files of ``input.paths`` (``InputFile``: url, size; tables resolved to their snapshot's
    files, ``input.filter`` applied); UserError when a format cannot be told."""
    from selectllm.text.formats import UnknownFormat, detect_format

    resolved = resolved or resolve_inputs(cfg)
    if resolved.tables and cfg.input.format not in ("auto", "parquet"):
        t = resolved.tables[0]
        raise UserError(f"config: input.format {cfg.input.format} contradicts input.paths: {t['path']} is a "
                        f"{t['format']} table, whose data files are Parquet (set input.format: auto)")
    files = resolved.files
    for f in files:
        try:
            detect_format(f.url, cfg.input.format)
        except UnknownFormat as e:
            raise UserError(str(e)) from None
    return files


def split_bytes(spark, cfg: Config) -> int:
    """Bytes per split: ``spark.sql.files.maxPartitionBytes`` when set (config or session), else 64 MB."""
    from selectllm.text.splits import SPLIT_BYTES

    value = cfg.spark.conf.get("spark.sql.files.maxPartitionBytes")
    if value is None:
        try:
            value = spark.sparkContext.getConf().get("spark.sql.files.maxPartitionBytes")
        except Exception:  # Spark Connect: no SparkContext
            value = None
    if value is None:
        return SPLIT_BYTES
    try:
        return max(1, int(value))
    except ValueError:  # "128m", "1g": Spark's own size syntax
        units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
        v = str(value).strip().lower().removesuffix("b")
        if v and v[-1] in units and v[:-1].isdigit():
            return int(v[:-1]) * units[v[-1]]
        raise UserError(f"config: spark.conf.spark.sql.files.maxPartitionBytes: not a size: {value!r}") from None


def plan_splits(spark, cfg: Config, files: list, split_size: int | None = None) -> list:
    """The splits of ``files`` (:class:`selectllm.text.splits.Split`) with ``source_row`` offsets:
    :func:`~selectllm.text.splits.plan_files`, the count pass as one Spark job (one small tuple per
    split reaches the driver), :func:`~selectllm.text.splits.resolve_splits`."""
    from selectllm.text.splits import count_split, plan_files, resolve_splits

    planned, to_count = plan_files(files, cfg.input.format, split_size or split_bytes(spark, cfg))
    counts = {}
    if to_count:
        slices = min(len(to_count), 4 * spark.sparkContext.defaultParallelism)
        counts = dict(spark.sparkContext.parallelize(to_count, slices)
                      .map(lambda sp: ((sp.file_index, sp.part), count_split(sp))).collect())
    return resolve_splits(planned, counts)


_SPLIT_DDL = ("url string, kind string, start bigint, end bigint, first_row bigint, csv_lines boolean, "
              "file_index bigint, part bigint, meta string")


def staged_dataframe(spark, cfg: Config, num_partitions: int | None = None, files: list | None = None,
                     split_size: int | None = None, splits: list | None = None, progress=None):
    """Every row of every input file (STAGED + :func:`extra_schema` columns), not yet persisted.

    ``num_partitions``: reading tasks (default: one per split, at least one per core, small files
    grouped to about one split's bytes); ``split_size``: bytes per split (default
    :func:`split_bytes`); ``progress``: a :class:`ReadProgress` whose accumulators the tasks update.
    """
    from dataclasses import astuple

    files = files if files is not None else list_inputs(cfg)
    splits = splits if splits is not None else plan_splits(spark, cfg, files, split_size)
    size = split_size or split_bytes(spark, cfg)
    total = sum(f.size for f in files)
    n = num_partitions or min(len(splits), max(spark.sparkContext.defaultParallelism, -(-total // size)))
    table = spark.createDataFrame([astuple(s) for s in splits], _SPLIT_DDL).repartition(max(1, n))
    fields = cfg.input.fields.model_dump() if cfg.input.fields is not None else None
    extra = extra_schema(cfg)
    fn = _reader(cfg.input.format, cfg.input.preset, fields, cfg.dedup.max_chars,
                 cfg.embed.template, cfg.embed.template_no_input, progress, cfg.input.turn, extra,
                 privacy_settings(cfg), cfg.dedup.quality.rules_object())
    return table.mapInArrow(fn, _ddl(pa.schema(list(STAGED) + list(extra))))




def _plan(staged, cfg: Config, persist: bool = False, near_work: str | None = None,
          history: dict | None = None) -> dict:
    """The lazy plan; ``persist``: cache the ranking (the caller unpersists ``ranked``);
    ``near_work``: the folder where near dedup keeps its finished phases (see
    :func:`~selectllm.dedup.near.find_near_duplicates`); ``history``: what earlier runs of the
    programme saw and selected (:func:`_history_inputs`).  ``signed`` in the result: the MinHash
    rows (id, bands, sh) of every row near dedup compared (kept or removed by it), for the history
    (with a history and near dedup on).

    With a chat preset a row is named by ``(source, source_row, user_turn)`` (``input.turn: each``
    gives one row per user turn of a record): the keeper order, the quarantine and the
    duplicates carry ``user_turn``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    chat = is_chat(cfg)
    turn = ["user_turn"] if chat else []
    order = ["source", "source_row", *turn]
    from selectllm.text.formats import FILTERED

    quarantine = staged.where(F.col("reason").isNotNull() & (F.col("reason") != FILTERED)) \
        .select(*schemas.QUARANTINE.names, *turn)
    good = staged.where(F.col("reason").isNull()).select(*schemas.DEDUP.names, *extra_schema(cfg).names)
    dup_cols = [
        F.col("id"),
        F.col("id").alias("duplicate_of"),  # exact: the keeper has the same id
        # when(...) without otherwise keeps the columns nullable, as in schemas.DUPLICATES
        F.when(F.col("id").isNotNull(), F.lit(1.0).cast("float")).alias("similarity"),
        F.when(F.col("id").isNotNull(), F.lit("exact")).alias("kind"),
        F.col("source"),
        F.col("source_row"),
        *turn,
    ]
    ranked = None
    if cfg.dedup.exact:
        # keeper of an id = smallest (source, source_row[, user_turn]): whatever the partitioning
        w = Window.partitionBy("id").orderBy(*order)
        ranked = good.withColumn("_rank", F.row_number().over(w))
        kept = ranked.where(F.col("_rank") == 1).drop("_rank")
        duplicates = ranked.where(F.col("_rank") > 1).select(*dup_cols)
    else:
        kept = good
        duplicates = good.limit(0).select(*dup_cols)
    if history is not None and history["seen"] is not None:
        # rows an earlier run of the programme saw (or an import named): kind "seen"
        seen = history["seen"]
        duplicates = duplicates.unionByName(kept.join(seen, "id", "left_semi").select(
            "id", F.col("id").alias("duplicate_of"), F.lit(1.0).cast("float").alias("similarity"),
            F.lit("seen").alias("kind"), "source", "source_row", *turn))
        kept = kept.join(seen, "id", "left_anti")
    near_metrics = signed = None
    if cfg.dedup.near.enabled:
        from selectllm.dedup.near import find_near_duplicates
        from selectllm.engines import cache_level

        if persist and ranked is not None:  # read by the near-duplicate jobs now and by the writes later
            ranked.persist(cache_level())
        names = kept.columns
        if chat:  # near dedup names a row by (source, source_row): the user turn goes into the row
            _check_turn_bits(kept)
            rows = kept.withColumn("source_row", F.shiftleft("source_row", TURN_BITS).bitwiseOR(F.col("user_turn")))
        else:
            rows = kept
        past = history["selected"] if history is not None else None
        if past is not None:  # earlier selections (as text) join the graph; a near copy of one is "seen"
            rows = rows.select("id", "instruction", "input", "source", "source_row").unionByName(past)
        near = find_near_duplicates(rows, cfg, work_uri=near_work, history=history and history["signed"],
                                    keep_signed=history is not None)
        near_metrics = near.metrics
        # a row whose keeper is an earlier run's row (signed, or a selection's text) is "seen"
        removed = near.removed.where(F.col("source") != HISTORY_SOURCE).withColumn(
            "_kind", F.when(F.col("keeper_source") == HISTORY_SOURCE, F.lit("seen")).otherwise(F.lit("near")))
        if near.signed is not None:
            # the MinHash rows of every row near dedup saw (kept, and removed as near copies or as
            # "seen"): what the history stores, so a later near copy of any of them is "seen" directly
            signed = near.signed.where(F.length("bands") > 0).select(*SIGNED.names)
        if chat:
            removed = removed.withColumn("user_turn", F.col("source_row").bitwiseAND((1 << TURN_BITS) - 1)) \
                .withColumn("source_row", F.shiftright("source_row", TURN_BITS))
        kept = kept.join(removed.select(*order), order, "left_anti").select(*names)
        duplicates = duplicates.unionByName(removed.select(
            "id", "duplicate_of", "similarity", F.col("_kind").alias("kind"), "source", "source_row", *turn))
    return {"quarantine": quarantine, "ranked": ranked, "kept": kept, "duplicates": duplicates,
            "near_metrics": near_metrics, "signed": signed}


def _check_turn_bits(kept) -> None:
    """Near dedup of chat rows packs ``source_row << TURN_BITS | user_turn`` into its 40-bit row
    number: a one-line error when a file or a conversation is too long for that."""
    from pyspark.sql import functions as F

    from selectllm.dedup.near import ROW_BITS

    m = kept.agg(F.max("source_row").alias("row"), F.max("user_turn").alias("turn")).first()
    if m["row"] is not None and (m["turn"] >= 1 << TURN_BITS or m["row"] >= 1 << (ROW_BITS - TURN_BITS)):
        raise UserError(f"dedup.near with a chat preset: at most 2^{ROW_BITS - TURN_BITS} rows per file and "
                        f"{1 << TURN_BITS} user turns per conversation (found row {m['row']}, user turn "
                        f"{m['turn']}); set dedup.near.enabled: false or split the input")


def dedup_dataframe(spark, cfg: Config, num_partitions: int | None = None, staged=None):
    """(kept_df, quarantine_df, duplicates_df) with the DEDUP, QUARANTINE, DUPLICATES columns
    (plus :func:`extra_schema`'s in kept and ``user_turn`` in the other two for a chat preset).

    Lazy and unsorted.  ``staged`` (from :func:`staged_dataframe`, possibly persisted) is built
    when not given; ``num_partitions`` is the number of reading tasks (default: one per core, at
    most one per file).
    """
    if staged is None:
        staged = staged_dataframe(spark, cfg, num_partitions)
    plan = _plan(staged, cfg)
    return plan["kept"], plan["quarantine"], plan["duplicates"]


# ----------------------------------------------------------------------------- writing
def _write_parquet(df, fs, path: str, uri: str, arrow_schema: pa.Schema) -> None:
    """Write a folder of parquet parts and drop Spark's marker/checksum files.

    An empty DataFrame still gets one (empty) part file carrying the schema.
    """
    from selectllm.io import spark_write_parquet  # Spark's writer, or fsspec from the tasks (no S3A)

    spark_write_parquet(df, uri, arrow_schema)
    parts = []
    for p in fs.ls(path, detail=False):
        name = posixpath.basename(p)
        if name.startswith(("_", ".")) or name.endswith(".crc"):
            fs.rm(p)
        elif name.endswith(".parquet"):
            parts.append(p)
    if not parts:
        import pyarrow.parquet as pq

        with fs.open(posixpath.join(path, "part-00000.parquet"), "wb") as f:
            pq.write_table(arrow_schema.empty_table(), f)


def _move_parts_up(fs, tmp: str, dest: str) -> int:
    """Rename Spark's part files (in partition order) to dest/part-00000.parquet, ... ."""
    parts = sorted(p for p in fs.ls(tmp, detail=False) if posixpath.basename(p).startswith("part-"))
    for i, p in enumerate(parts):
        fs.mv(p, posixpath.join(dest, f"part-{i:05d}.parquet"))
    if fs.exists(tmp):  # an object store has no empty folders left to remove
        fs.rm(tmp, recursive=True)
    return len(parts)


def run_stage(ctx) -> dict:
    """The ``dedup`` stage: writes into ``ctx.out`` and returns flat counts (see stats.json).

    Counts of the outputs are taken from the files just written, the read count from the
    records parsed, so the conservation check compares two independent sides.
    """
    from selectllm.dedup.budget import BroadcastBudget, bounded_broadcasts
    from selectllm.engines import spark_session

    cfg = ctx.cfg
    spark = spark_session(cfg)
    # no broadcast from Spark's estimates, adaptive ones bounded by the heap, in every phase
    with bounded_broadcasts(spark, BroadcastBudget.of(spark)):
        return _run(ctx, spark)


def _run(ctx, spark) -> dict:
    from pyspark.sql import functions as F

    from selectllm.dedup.phases import phase
    from selectllm.engines import cache_level, size_shuffle

    cfg = ctx.cfg
    fs = ctx.run.fs
    out, out_uri = ctx.out, ctx.out_uri
    join = posixpath.join

    resolved = resolve_inputs(cfg)
    files = list_inputs(cfg, resolved)
    n_files = len(files)
    size_shuffle(spark, cfg, sum(f.size for f in files))
    splits = plan_splits(spark, cfg, files)
    progress = ReadProgress(spark, splits, ctx.log)
    staged = staged_dataframe(spark, cfg, files=files, splits=splits, progress=progress) \
        .persist(cache_level())  # files read once
    ranked = None
    try:
        from selectllm.text.formats import FILTERED

        with progress, phase(spark, "reading the input"):
            parsed = staged.count()
        # rows that failed input.filter's row conditions are not read rows: only counted
        filtered = staged.where(F.col("reason") == FILTERED).count() if resolved.filters_rows else 0
        read = parsed - filtered
        unreadable = _unreadable_files(staged)
        privacy = _privacy_totals(staged, cfg) if cfg.privacy.mode != "off" else None
        near_work = posixpath.join(ctx.run.staging_uri(ctx.work), "near") if ctx.work else None
        plan = _plan(staged, cfg, persist=True, near_work=near_work, history=_history_inputs(spark, ctx))
        turn = list(schemas.CHAT_COLUMNS)[:1] if is_chat(cfg) else []  # user_turn
        order = ["source", "source_row", *(f.name for f in turn)]
        with phase(spark, "writing the outputs"):
            _write_parquet(plan["quarantine"].orderBy(*order), fs, join(out, "quarantine"),
                           join(out_uri, "quarantine"), pa.schema(list(schemas.QUARANTINE) + turn))
            ranked = plan["ranked"]
            if ranked is not None:  # kept and duplicates both come from one ranking
                ranked.persist(cache_level())
            _write_parquet(plan["duplicates"].orderBy("id", *order), fs,
                           join(out, "duplicates.parquet"), join(out_uri, "duplicates.parquet"),
                           pa.schema(list(schemas.DUPLICATES) + turn))
            _write_parquet(plan["kept"].orderBy("id"), fs, join(out, "_kept"), join(out_uri, "_kept"),
                           pa.schema(list(schemas.DEDUP) + list(extra_schema(cfg))))
            if plan["signed"] is not None:  # for the programme's history: near copies of these rows
                _write_parquet(plan["signed"], fs, join(out, "minhash"), join(out_uri, "minhash"), SIGNED)
    finally:
        if ranked is not None:
            ranked.unpersist()
        staged.unpersist()
    _move_parts_up(fs, join(out, "_kept"), out)

    # what was written, counted back (parquet footers and one small column)
    from selectllm.io import spark_read_parquet as read_back  # Spark's reader, or fsspec (no S3A)

    kept = read_back(spark, join(out_uri, "part-*.parquet"), schemas.DEDUP, ["id"]).count()
    dups = {r["kind"]: int(r["n"]) for r in read_back(spark, join(out_uri, "duplicates.parquet"),
                                                      schemas.DUPLICATES, ["kind"])
            .groupBy("kind").agg(F.count(F.lit(1)).alias("n")).collect()}
    by_reason = {r["reason"]: int(r["n"]) for r in read_back(spark, join(out_uri, "quarantine"),
                                                             schemas.QUARANTINE, ["reason"])
                 .groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()}
    quarantined = {r: by_reason.pop(r, 0) for r in schemas.QUARANTINE_REASONS}
    quarantined.update(by_reason)  # never expected; kept visible rather than dropped
    stats: dict[str, Any] = {
        "read": read,
        "quarantined": quarantined,
        "quarantined_total": sum(quarantined.values()),
        "exact_duplicates": dups.get("exact", 0),
        "near_duplicates": dups.get("near", 0),
        "seen_duplicates": dups.get("seen", 0),  # rows earlier runs of the programme saw (history)
        "kept": kept,
        "files": n_files,
        "splits": len(splits),
        "unreadable_files": unreadable,
        "pruned_files": resolved.pruned,  # left out by input.filter, never read
        "filtered_rows": filtered,  # rows of read files that failed input.filter (not in read)
        "tables": resolved.tables,  # the Delta/Iceberg snapshots read: {path, format, version}
    }
    if privacy is not None:  # what was masked (counts only)
        stats["privacy"] = privacy
    if plan["near_metrics"] is not None:  # how near-duplicate removal went (candidates, buckets, ...)
        stats["near"] = plan["near_metrics"]
    if read != kept + stats["exact_duplicates"] + stats["near_duplicates"] + stats["seen_duplicates"] \
            + stats["quarantined_total"]:
        raise RuntimeError(f"dedup: counts do not add up (rows lost or doubled): {stats}")
    with fs.open(join(out, "stats.json"), "w") as f:
        f.write(json.dumps(stats, indent=2, sort_keys=True) + "\n")

    counts = {k: v for k, v in stats.items() if k not in ("quarantined", "near", "unreadable_files", "tables",
                                                          "privacy")}
    if privacy is not None:
        counts["privacy_rows_with_findings"] = privacy["rows_with_findings"]
        counts.update({f"privacy_{k.lower()}": v for k, v in privacy["values"].items()})
    counts["unreadable_files"] = len(unreadable)
    counts.update({f"near_{k}": v for k, v in (stats.get("near") or {}).items()})
    counts.update({f"quarantined_{r}": n for r, n in quarantined.items()})
    return counts


def _privacy_totals(staged, cfg: Config) -> dict:
    """stats.json's ``privacy``: over every row read (kept, duplicate or quarantined), the values
    masked per entity type, the rows with at least one per type, and the rows with any."""
    from pyspark.sql import functions as F

    with_findings = staged.where(F.col(schemas.FINDINGS.name).isNotNull())
    per_type = with_findings.select(F.explode(F.from_json(schemas.FINDINGS.name, "map<string,bigint>"))
                                    .alias("type", "n")) \
        .groupBy("type").agg(F.sum("n").alias("values"), F.count(F.lit(1)).alias("rows")).collect()
    return {"mode": cfg.privacy.mode, "entities": list(cfg.privacy.entities),
            "rows_with_findings": with_findings.count(),
            "values": {r["type"]: int(r["values"]) for r in sorted(per_type, key=lambda r: r["type"])},
            "rows": {r["type"]: int(r["rows"]) for r in sorted(per_type, key=lambda r: r["type"])}}


def _history_inputs(spark, ctx) -> dict | None:
    """The programme's history as this run sees it: the ids earlier runs saw (a DataFrame) and,
    with near dedup on, the MinHash rows of what earlier runs compared (a DataFrame, of the runs
    signed with this run's settings) and the earlier selections' texts (of the other runs)."""
    cfg = ctx.cfg
    if not cfg.history.path:
        return None
    from functools import reduce

    from selectllm.history import SEEN, minhash_settings, run_view, seen_uris
    from selectllm.io import spark_read_parquet

    h, _, view = run_view(cfg, ctx.run)
    uris = seen_uris(h, view)
    seen = reduce(lambda a, b: a.unionByName(b), [spark_read_parquet(spark, u, SEEN, ["id"]) for u in uris]) \
        if uris else None
    selected = signed = None
    runs = [c for c in view if c["kind"] == "run"]
    if cfg.dedup.near.enabled:
        # earlier runs whose rows were signed with this run's settings: every row they kept is
        # compared (their MinHash rows, joined on band keys); the others: their selections' texts
        settings = minhash_settings(cfg)
        same = [c for c in runs if c["summary"].get("minhash") == settings and c.get("files", {}).get("minhash")]
        other = [c for c in runs if c not in same]
        signed_uris = h.folders(same, "minhash")
        if signed_uris:
            signed = reduce(lambda a, b: a.unionByName(b),
                            [spark_read_parquet(spark, u, SIGNED, SIGNED.names) for u in signed_uris])
        past = h.selections(other, ["id", "instruction", "input"])
        if past.num_rows:
            rows = [(i, a, b, HISTORY_SOURCE, n << TURN_BITS) for n, (i, a, b) in enumerate(zip(
                past.column("id").to_pylist(), past.column("instruction").to_pylist(),
                past.column("input").to_pylist()))]
            selected = spark.createDataFrame(rows, "id string, instruction string, input string, source string, "
                                                   "source_row bigint")
        if other:
            ctx.log.print(f"dedup: {len(other)} earlier runs have no MinHash rows signed with this run's "
                          "dedup.near settings: near copies are looked for among their selections only")
    ctx.log.print(f"dedup: history {h.url}: {len(runs)} earlier runs, "
                  f"{sum(c['kind'] == 'import' for c in view)} imports")
    return {"seen": seen, "selected": selected, "signed": signed}


def _unreadable_files(staged) -> list[dict]:
    """``[{source, error, rows_read, faults}]`` for every file that failed while being read: its
    first fault's message, the rows read from it (good or quarantined, the ``unreadable`` rows
    not included) and its number of faults (one, or one per failed Parquet row group).  Nothing
    but those files' figures reaches the driver."""
    from pyspark.sql import functions as F

    bad = staged.where(F.col("reason") == "unreadable")
    faults = bad.groupBy("source").agg(F.count(F.lit(1)).alias("faults"),
                                       F.min_by("raw", "source_row").alias("error")).collect()
    if not faults:
        return []
    sources = [r["source"] for r in faults]
    rows = {r["source"]: int(r["n"]) for r in staged
            .where(F.col("source").isin(sources) & ((F.col("reason") != "unreadable") | F.col("reason").isNull()))
            .groupBy("source").agg(F.count(F.lit(1)).alias("n")).collect()}
    return sorted(({"source": r["source"], "error": r["error"], "rows_read": rows.get(r["source"], 0),
                    "faults": int(r["faults"])} for r in faults), key=lambda d: d["source"])


def _input_files(cfg: Config) -> list:
    """The raw files' names, sizes, versions (a table file's: the table's version) and what a table
    adds to their rows: a changed or added file, or a new commit to a table, makes dedup rerun."""
    return [(f.url, f.size, f.version) + ((f.meta,) if f.meta else ()) for f in resolve_inputs(cfg).files]


def nothing_kept(counts: dict) -> str | None:
    """Why dedup kept no row (None when it kept some): every row quarantined (the top reasons),
    every row filtered out, or nothing to read."""
    if counts.get("kept", 0) > 0:
        return None
    read = counts.get("read", 0)
    if read == 0 and counts.get("filtered_rows", 0):
        return f"kept no row: all {counts['filtered_rows']:,} rows failed input.filter"
    if read == 0:
        return f"kept no row: the {counts.get('files', 0):,} files of input.paths hold no record"
    reasons = sorted(((n, k.removeprefix("quarantined_")) for k, n in counts.items()
                      if k.startswith("quarantined_") and k != "quarantined_total" and n), reverse=True)
    top = ", ".join(f"{reason} {n:,}" for n, reason in reasons[:3])
    return (f"kept no row: all {read:,} rows read were quarantined ({top}); their reasons and text are "
            "in dedup/quarantine/ (input.format, input.preset or input.fields may not fit the files)")


STAGE = Stage(
    name="dedup",
    run=run_stage,
    external_inputs=_input_files,
    empty=nothing_kept,
    outputs=(
        Output("rows", "", schema=schemas.DEDUP),
        Output("quarantine", "quarantine", schema=schemas.QUARANTINE),
        Output("duplicates", "duplicates.parquet", schema=schemas.DUPLICATES),
        Output("stats", "stats.json"),
        # with a history and near dedup: the MinHash rows (id, bands, sh) of every row near dedup
        # compared (kept, or removed by it), for the history
        Output("minhash", "minhash", schema=SIGNED, optional=True),
    ),
    # the embedded text is rendered here, so the template is a dedup setting too; privacy masks
    # here (privacy.output only changes what selected.jsonl carries: a select setting)
    settings=Settings(("input", "dedup", "privacy"), exclude={"privacy": {"output"}},
                      extra=lambda cfg: (cfg.embed.template, cfg.embed.template_no_input)),
    resources=Resources(engine="spark"),
    reads_history=True,
    doc="Spark: read raw files, normalize, quarantine bad rows, drop duplicates.",
)
