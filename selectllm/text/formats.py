"""Read one raw input file as a stream of records.  Pure Python + fsspec/pyarrow, no Spark.

:func:`iter_rows` yields, for every row of one file,
``(source_row, raw, instruction, input, reason, extra)`` (:func:`iter_records`: the first five):

* good row: ``reason is None``, ``raw is None`` (the raw text is only kept for quarantine),
  ``instruction``/``input`` exactly as in the source (indentation, tabs, newlines, blank lines,
  spacing and Unicode form untouched): what the LLM is shown and ``selected.jsonl`` carries.
  Normalization (:func:`~selectllm.text.normalize.clean_text`, the id's form) is applied later,
  by the consumers that compare or embed;
* bad row: ``reason`` is one of ``schemas.QUARANTINE_REASONS``, ``instruction``/``input`` are
  ``None`` and ``raw`` is the record's text (the line, the array element, or the row as JSON for
  Parquet/CSV) truncated to :data:`RAW_MAX_CHARS` characters;
* ``extra``: ``None`` or a dict of further columns: ``user_turn`` and ``media_parts`` for the
  rows of a chat preset (a quarantined turn too), and the ``input.keep`` columns of a good row
  (see :func:`keep_value`).

A record is one row, except a chat record with ``turn="each"``: one row per user turn, all with
the record's ``source_row``, told apart by ``user_turn`` (see :mod:`selectllm.text.chat`).

Conventions (documented choices):

* ``source_row`` is 0-based: the physical line index for JSONL and ``.txt``, the element index
  for JSON arrays, the data-row index (header excluded) for Parquet and CSV.  ``-1`` means the file
  as a whole (e.g. a file that is not Parquet at all): one ``malformed`` record.
* A whitespace-only line (JSONL, ``.txt``) or an empty CSV line is *not* a record: it is neither
  yielded nor counted, and JSONL/txt line indices keep counting it (so ``source_row`` can skip).
* ``empty``: the instruction is empty after :func:`~selectllm.text.normalize.clean_text`
  (whitespace only, or nothing).  ``too_long``: ``len(instruction) + len(input) > max_chars``,
  counted on the text as kept (the source text: what is stored and sent).  A line longer than
  :func:`raw_line_limit` bytes is ``too_long`` without being decoded or parsed (it is never held
  whole in memory either); its ``raw`` is its first bytes.
* Text fields must hold text: a string (bytes are decoded as strict UTF-8), or ``None`` (``""``).
  Any other JSON or Parquet type (object, list, number, bool, timestamp) is ``wrong_type``,
  never stringified.  A missing instruction field is ``missing_field``; a missing input field is
  an empty input.
* A ``.txt`` line's ``\r`` before its ``\n`` (CRLF files) is part of the line ending, not the text.
* A file that fails while being read (truncated ``.gz``/``.zst``, a corrupt Parquet footer or
  row group, an I/O or permission error) keeps the rows read before the fault and ends with one
  ``unreadable`` row: ``raw`` is the error, ``source_row`` where reading stopped (the next line or
  element, the failed row group's first row, 0 when nothing could be read).  A Parquet file goes
  on with its next row group; a stream cannot.  An error at opening is reported by the file's
  first split only, so a file gives one such row whatever its split count.
* A JSON array that breaks in the middle cannot be resynchronized: the rest of the file becomes one
  ``malformed`` record at the index of the first broken element (``too_long`` if that element is
  still incomplete after :func:`raw_line_limit` characters).
* Compression (``.gz``, ``.zst``/``.zstd``) is chosen from the file name suffix.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import fsspec

from selectllm.text.normalize import clean_text
from selectllm.text.ranges import ReadStream

FILTERED = "filtered"  # not a quarantine reason: the row failed input.filter (counted, not kept)
RAW_MAX_CHARS = 10_000  # quarantine keeps at most this many characters of a bad record
CHUNK = 1 << 20
ZSTD_INPUT = 64 << 10  # compressed bytes per zstd step (bounds one step's output for a sane ratio)
PRESETS = ("alpaca", "dolly", "text", "custom", "openai", "sharegpt", "lmsys")
_BOM = b"\xef\xbb\xbf"
_COMPRESSION = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_WS_RE = re.compile(r"[ \t\r\n\ufeff]*")

Record = tuple  # (source_row, raw, instruction, input, reason[, extra]); see the module doc


class UnknownFormat(ValueError):
    """The format cannot be told from the file name: set ``input.format``."""


def raw_line_limit(max_chars: int) -> int:
    """Lines (or JSON elements) longer than this many bytes are ``too_long`` without parsing.

    Generous on purpose: a JSONL line also holds fields we do not keep (e.g. an alpaca ``output``)
    and JSON escapes, so it may be much longer than the instruction + input it carries.
    """
    return max(16 * max_chars, 4 << 20)


def split_compression(url: str) -> tuple[str, str | None]:
    """(name without compression suffix, fsspec compression name or None)."""
    low = url.lower()
    for suffix, comp in _COMPRESSION.items():
        if low.endswith(suffix):
            return url[: -len(suffix)], comp
    return url, None


def detect_format(url: str, fmt: str = "auto") -> str:
    """jsonl|json|parquet|csv|txt for one file; ``fmt`` other than auto wins."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise UnknownFormat(f"unknown input format {fmt!r} (one of {', '.join(FORMATS)})")
        return fmt
    base, _ = split_compression(url)
    low = base.lower()
    for name, reader in READERS.items():
        if low.endswith(reader.suffixes):
            return name
    raise UnknownFormat(f"cannot tell the format of {url} from its name: set input.format")


def field_names(preset: str, fields: Any = None) -> tuple[str, str | None]:
    """(instruction column, input column or None) for a column-based preset; for a chat preset
    (``openai``, ``sharegpt``, ``lmsys``) (its turn list's key, None)."""
    from selectllm.text.chat import CHAT_PRESETS

    if fields is not None and hasattr(fields, "model_dump"):
        fields = fields.model_dump()
    if preset in CHAT_PRESETS:
        return CHAT_PRESETS[preset][0], None
    names = {
        "alpaca": ("instruction", "input"),
        "dolly": ("instruction", "context"),
        "text": ("text", None),
        "custom": ("instruction", "input"),
    }
    if preset not in names:
        raise ValueError(f"unknown input preset {preset!r} (one of {', '.join(PRESETS)})")
    instr, inp = names[preset]
    if fields:  # input.fields overrides a preset's column names
        instr = fields.get("instruction") or instr
        inp = fields.get("input", inp)
    return instr, inp


def keep_value(v: Any) -> str | None:
    """An ``input.keep`` column's value as text: a string as is, ``None`` as null, a date or time
    in ISO 8601, anything else (number, bool, object, list) as JSON."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return json.dumps(v, ensure_ascii=False, default=str, sort_keys=True)


# ----------------------------------------------------------------------------- record helpers
def _truncate(s: str) -> str:
    s = s[:RAW_MAX_CHARS]
    if _SURROGATE_RE.search(s):  # never hand Arrow a string it cannot encode
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s


def _raw_bytes(b: bytes) -> str:
    return _truncate(b[: RAW_MAX_CHARS * 4].decode("utf-8", "replace"))


def _raw_row(row: dict) -> str:
    try:
        return _truncate(json.dumps(row, ensure_ascii=False, default=str))
    except (TypeError, ValueError):
        return _truncate(str(row))


Extracted = tuple  # (instruction, input, reason, extra dict or None)


class _Extractor:
    """Turns a parsed record (a dict) into its rows: a list of (instruction, input, reason, extra)."""

    def __init__(self, preset: str, fields: Any, max_chars: int, turn: str = "first", keep=(),
                 partition: dict | None = None, where: list | None = None):
        from selectllm.text.chat import CHAT_PRESETS, TURNS

        if turn not in TURNS:
            raise ValueError(f"unknown input.turn {turn!r} (one of {', '.join(TURNS)})")
        self.preset, self.turn, self.keep = preset, turn, tuple(keep or ())
        self.chat = preset in CHAT_PRESETS
        self.instr, self.inp = field_names(preset, fields)
        self.max_chars = max_chars
        self.partition = partition or {}  # a table's or folder's partition values: columns of every record
        self.where = where or []  # input.filter conditions checked per row (selectllm.filters)

    def needed_columns(self) -> list[str]:
        base = [self.instr, "system"] if self.chat else [self.instr] + ([self.inp] if self.inp else [])
        return base + [k for k in [*self.keep, *(c for c, _, _ in self.where)] if k not in base]

    def has_instruction(self, columns: list[str]) -> bool:
        return self.instr in columns

    def __call__(self, obj: dict) -> list[Extracted]:
        from selectllm.text.chat import ChatError, NotText, chat_rows, text_value

        if self.partition:
            obj.update(self.partition)
        if self.where:
            from selectllm.filters import row_passes

            if not row_passes(obj, self.where):
                return [(None, None, FILTERED, None)]
        kept = {k: keep_value(obj.get(k)) for k in self.keep}
        if self.chat:
            try:
                rows = chat_rows(obj, self.preset, self.turn)
            except ChatError as e:
                return [(None, None, e.args[0], None)]
            out = []
            for r in rows:
                instr, inp, reason = check_text(r.instruction, r.context, self.max_chars)
                extra = {"user_turn": r.user_turn, "media_parts": r.media_parts, **kept}
                out.append((instr, inp, reason, extra))  # a bad turn too: its user_turn names it
            return out
        if self.instr not in obj:
            return [(None, None, "missing_field", None)]
        try:
            instr = text_value(obj[self.instr])
            inp = text_value(obj.get(self.inp)) if self.inp else ""
        except NotText:
            return [(None, None, "wrong_type", None)]
        except UnicodeDecodeError:
            return [(None, None, "bad_encoding", None)]
        instr, inp, reason = check_text(instr, inp, self.max_chars)
        return [(instr, inp, reason, (kept or None) if reason is None else None)]

    def rows(self, idx: int, obj: dict, raw) -> Iterator[Record]:
        """The records of one parsed object at ``idx``; ``raw()`` gives its quarantine text."""
        for instr, inp, reason, extra in self(obj):
            yield idx, (raw() if reason else None), instr, inp, reason, extra


def check_text(instruction: str, input: str, max_chars: int) -> tuple[str | None, str | None, str | None]:  # noqa: A002
    """Classify a record: (instruction, input, None), both texts unchanged, or (None, None, reason).
    ``empty`` is decided on the normalized instruction, ``too_long`` on the texts as kept."""
    if _SURROGATE_RE.search(instruction) or _SURROGATE_RE.search(input):
        return None, None, "bad_encoding"  # lone surrogates (e.g. "\ud800" escapes) are not text
    if not clean_text(instruction):
        return None, None, "empty"
    if len(instruction) + len(input) > max_chars:
        return None, None, "too_long"
    return instruction, input, None


# ----------------------------------------------------------------------------- byte streams
class _Replay(ReadStream):
    """A read-only stream that first returns ``head`` and then the rest of ``f``."""

    def __init__(self, head: bytes, f):
        self.head, self.f = head, f

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head + self.f.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.f.read(n)


def _iter_lines(f, limit: int) -> Iterator[tuple[bytes, bool]]:
    """Every line of a byte stream (split on ``\\n``) as (bytes, overlong).

    An overlong line (> ``limit`` bytes) is never held whole: only its first bytes are yielded.
    """
    keep = RAW_MAX_CHARS * 4
    carry = bytearray()
    over: bytes | None = None  # prefix of the overlong line being skipped
    for chunk in iter(lambda: f.read(CHUNK), b""):
        parts = chunk.split(b"\n")
        if over is None:
            carry += parts[0]
            if len(carry) > limit:
                over, carry = bytes(carry[:keep]), bytearray()
        if len(parts) == 1:
            continue
        if over is not None:
            yield over, True
            over = None
        else:
            yield bytes(carry), False
        carry = bytearray()
        for p in parts[1:-1]:
            yield (p, False) if len(p) <= limit else (p[:keep], True)
        last = parts[-1]
        if len(last) > limit:
            over = last[:keep]
        else:
            carry += last
    if over is not None:
        yield over, True
    elif carry:
        yield bytes(carry), False


class _ZstdStream(ReadStream):
    """Every frame of a zstd stream, decompressed as it is read.  A stream that ends inside a
    frame (a truncated file) raises EOFError: zstandard's ``stream_reader`` (what fsspec uses)
    returns the partial data silently, and reads only the first frame unless told otherwise."""

    def __init__(self, f):
        import zstandard

        self.f, self.new = f, zstandard.ZstdDecompressor().decompressobj
        self.d, self.fed, self.buf, self.done = self.new(), False, b"", False

    def _fill(self) -> None:
        chunk = self.f.read(ZSTD_INPUT)
        if not chunk:
            self.done = True
            if self.fed and not self.d.eof:
                raise EOFError("zstd stream ended inside a frame (the file is truncated)")
            return
        out = []
        while chunk:
            if self.d.eof:  # the next frame
                self.d, self.fed = self.new(), False
            out.append(self.d.decompress(chunk))
            self.fed = True
            chunk = self.d.unused_data if self.d.eof else b""
        self.buf += b"".join(out)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self.buf]
            self.buf = b""
            while not self.done:
                self._fill()
                parts.append(self.buf)
                self.buf = b""
            return b"".join(parts)
        while not self.buf and not self.done:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class _Opened:
    """``with _open(url) as f``: the file's bytes, decompressed (gzip by fsspec, zstd by
    :class:`_ZstdStream`)."""

    def __init__(self, url: str, comp: str | None):
        self.url, self.comp, self.file = url, comp, None

    def __enter__(self):
        if self.comp == "zstd":
            self.file = fsspec.open(self.url, "rb").open()
            return _ZstdStream(self.file)
        self.file = fsspec.open(self.url, "rb", compression=self.comp).open()
        return self.file

    def __exit__(self, *exc) -> None:
        self.file.close()


def _open(url: str) -> _Opened:
    _, comp = split_compression(url)
    return _Opened(url, comp)


# ----------------------------------------------------------------------------- per format
def _decoded_lines(f, max_chars: int, first: int = 0) -> Iterator[tuple[int, str | None, Record | None]]:
    """(line index, UTF-8 text, None) per non-blank line, or (index, None, quarantine record)
    for a line that is too long or not valid UTF-8.  Shared by the JSONL and text readers.
    ``first``: the file's line index of the stream's first line (a split's ``first_row``)."""
    for idx, (line, over) in enumerate(_iter_lines(f, raw_line_limit(max_chars)), first):
        if idx == 0 and line.startswith(_BOM):
            line = line[3:]
        if over:
            yield idx, None, (idx, _raw_bytes(line), None, None, "too_long")
            continue
        if not line.strip():
            continue
        try:
            yield idx, line.decode("utf-8"), None
        except UnicodeDecodeError:
            yield idx, None, (idx, _raw_bytes(line), None, None, "bad_encoding")


def _jsonl(f, ext: _Extractor, max_chars: int, first: int = 0) -> Iterator[Record]:
    for idx, text, bad in _decoded_lines(f, max_chars, first):
        if bad is not None:
            yield bad
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            yield idx, _truncate(text), None, None, "malformed"
            continue
        yield from ext.rows(idx, obj, lambda: _truncate(text))


def _txt(f, max_chars: int, first: int = 0) -> Iterator[Record]:
    for idx, text, bad in _decoded_lines(f, max_chars, first):
        if bad is not None:
            yield bad
            continue
        instr, inp, reason = check_text(text.removesuffix("\r"), "", max_chars)
        yield idx, (_truncate(text) if reason else None), instr, inp, reason


def _json_array(f, ext: _Extractor, max_chars: int) -> Iterator[Record]:
    """Elements of a top-level JSON array, decoded incrementally (the file is never loaded whole)."""
    limit = raw_line_limit(max_chars)
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    buf, pos, eof = "", 0, False

    def fill() -> None:
        nonlocal buf, pos, eof
        chunk = f.read(CHUNK)
        if not chunk:
            eof = True
        buf = buf[pos:] + utf8.decode(chunk, final=not chunk)
        pos = 0

    def skip_ws() -> None:
        nonlocal pos
        while True:
            pos = _WS_RE.match(buf, pos).end()
            if pos < len(buf) or eof:
                return
            fill()

    skip_ws()
    if pos >= len(buf) or buf[pos] != "[":
        if pos < len(buf):
            yield 0, _truncate(buf[pos:]), None, None, "malformed"
        return
    pos += 1
    idx = 0
    while True:
        skip_ws()
        if pos >= len(buf):
            yield idx, "", None, None, "malformed"  # unterminated array
            return
        if buf[pos] == "]" and idx == 0:
            return
        while True:
            try:
                obj, end = decoder.raw_decode(buf, pos)
                if end < len(buf) or eof:
                    break
            except ValueError:
                if eof or len(buf) - pos > limit:
                    reason = "too_long" if len(buf) - pos > limit else "malformed"
                    yield idx, _truncate(buf[pos:]), None, None, reason
                    return
            fill()
        text = buf[pos:end]
        pos = end
        if _SURROGATE_RE.search(text):
            yield idx, _truncate(text), None, None, "bad_encoding"
        elif len(text) > limit:
            yield idx, _truncate(text), None, None, "too_long"
        elif not isinstance(obj, dict):
            yield idx, _truncate(text), None, None, "malformed"
        else:
            yield from ext.rows(idx, obj, lambda: _truncate(text))
        idx += 1
        skip_ws()
        if pos < len(buf) and buf[pos] == ",":
            pos += 1
            continue
        if pos < len(buf) and buf[pos] == "]":
            return
        yield idx, _truncate(buf[pos:]), None, None, "malformed"  # missing comma or bracket
        return


def _json(f, ext: _Extractor, max_chars: int) -> Iterator[Record]:
    """A JSON array of objects, or JSONL content in a .json file (told by the first byte)."""
    head = f.read(CHUNK)
    first = head.removeprefix(_BOM).lstrip(b" \t\r\n")[:1]
    stream = _Replay(head, f)
    if first == b"[":
        yield from _json_array(stream, ext, max_chars)
    else:
        yield from _jsonl(stream, ext, max_chars)


def _parquet(f, url: str, compressed: bool, ext: _Extractor, split=None, table: dict | None = None) -> Iterator[Record]:
    """Row group by row group: a row group that fails to read gives one ``unreadable`` row at its
    first row and the next one is read (a footer that fails: one ``unreadable`` row at 0, from
    the file's first split only).  ``table``: what a table adds (:mod:`selectllm.lake`): columns
    renamed, deleted positions skipped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        src = pa.BufferReader(f.read()) if compressed else f
        pf = pq.ParquetFile(src)
        rename = _column_names(pf.schema_arrow, table or {})
        names = [rename.get(n, n) for n in pf.schema_arrow.names if rename.get(n, n) is not None]
    except _read_errors() as e:
        if split is None or split.start == 0:
            yield 0, _error_text(e, url), None, None, "unreadable"
        return
    # read only what we use, unless the instruction column is missing (then raw shows the row)
    if ext.has_instruction(names):
        needed = set(ext.needed_columns())
        columns = [n for n in pf.schema_arrow.names if rename.get(n, n) in needed]
    else:
        columns = [n for n in pf.schema_arrow.names if rename.get(n, n) is not None] if rename else None
    deleted = (table or {}).get("deleted")  # [[start, end), ...] row positions, sorted
    meta = pf.metadata
    groups, first = list(range(meta.num_row_groups)), 0
    if split is not None and split.end >= 0:  # a split owns the row groups that start in its range
        from selectllm.text.ranges import parquet_row_groups

        groups, first = parquet_row_groups(pf, split.start, split.end)
    starts = {}
    for g in groups:
        starts[g] = first
        first += meta.row_group(g).num_rows
    for g in groups:
        idx = starts[g]
        try:
            for batch in pf.iter_batches(batch_size=4096, columns=columns, row_groups=[g]):
                if rename:
                    batch = pa.RecordBatch.from_arrays(batch.columns, names=[rename.get(n, n) for n in batch.schema.names])
                for row in batch.to_pylist():
                    if deleted and _deleted(deleted, idx):  # a table deleted this row without rewriting the file
                        idx += 1
                        continue
                    yield from ext.rows(idx, row, lambda: _raw_row(row))
                    idx += 1
        except _read_errors() as e:
            yield idx, _error_text(e, f"{url} row group {g}"), None, None, "unreadable"


def _deleted(runs: list, idx: int) -> bool:
    from bisect import bisect_right

    i = bisect_right(runs, [idx, float("inf")]) - 1
    return i >= 0 and runs[i][0] <= idx < runs[i][1]


def _column_names(schema, table: dict) -> dict:
    """``{name in the file: column name}`` for a table's file (None: a dropped column, not read).

    ``table["field_ids"]`` (Iceberg): columns are matched by their Parquet field id, so a file
    written before a rename is read under the new name; ``table["rename"]`` (Delta column
    mapping): physical names to column names.
    """
    out = dict(table.get("rename") or {})
    ids = table.get("field_ids")
    if ids:
        for field in schema:
            fid = (field.metadata or {}).get(b"PARQUET:field_id")
            if fid is not None:
                out[field.name] = ids.get(fid.decode())
    return out


def _csv(f, ext: _Extractor, max_chars: int) -> Iterator[Record]:
    limit = raw_line_limit(max_chars)
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
    text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        yield -1, _truncate(f"unreadable CSV header: {e}"), None, None, "malformed"
        return
    if header:
        header[0] = header[0].removeprefix("\ufeff")
    idx = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            reason = "too_long" if "field limit" in str(e) else "malformed"
            yield idx, _truncate(f"CSV error: {e}"), None, None, reason
            idx += 1
            continue
        if not row:
            continue  # an empty line is not a record
        yield from _csv_row(idx, header, row, ext)
        idx += 1


def _csv_row(idx: int, header: list[str], row: list[str], ext: _Extractor) -> list[Record]:
    raw = dict(zip(header, row)) if len(row) == len(header) else row
    if len(row) != len(header):
        return [(idx, _raw_row({"row": raw}), None, None, "malformed")]
    if any(_SURROGATE_RE.search(v) for v in row):
        return [(idx, _raw_row(raw), None, None, "bad_encoding")]
    return list(ext.rows(idx, raw, lambda: _raw_row(raw)))


def _csv_lines(f, lines, ext: _Extractor, max_chars: int, first: int, at_start: bool) -> Iterator[Record]:
    """CSV read line by line (every line one record; see :func:`selectllm.text.splits.csv_lines_ok`):
    ``lines`` is this split's byte stream, ``f`` the file (its line 0 is the header), ``first`` the
    data-row index of the split's first record.  An empty line is not a record, as in :func:`_csv`."""
    limit = raw_line_limit(max_chars)

    def parse(line: bytes) -> list[str]:
        return next(csv.reader([line.decode("utf-8", "surrogateescape")]), [])

    it = _iter_lines(lines, limit)
    if at_start:
        head = next(it, None)
    else:
        f.seek(0)
        head = next(_iter_lines(f, limit), None)
    if head is None:
        return
    header = parse(head[0].removeprefix(_BOM))
    idx = first
    for line, over in it:
        if line in (b"", b"\r"):
            continue
        if over:
            yield idx, _truncate(f"CSV error: line longer than {limit} bytes"), None, None, "too_long"
        else:
            yield from _csv_row(idx, header, parse(line), ext)
        idx += 1


# ----------------------------------------------------------------------------- faults
def _read_errors() -> tuple[type[BaseException], ...]:
    """What a file that cannot be read (any more) raises: I/O and permission errors, a truncated
    or corrupt compressed stream, a corrupt Parquet file.  Not a parser's or our own error."""
    import zlib

    import pyarrow as pa

    errors: tuple = (OSError, EOFError, zlib.error, pa.ArrowException)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    return errors


def _error_text(e: BaseException, where: str) -> str:
    return _truncate(f"{where}: {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------- entry point
def iter_rows(
    url: str,
    fmt: str = "auto",
    preset: str = "alpaca",
    fields: Any = None,
    max_chars: int = 20_000,
    split=None,
    turn: str = "first",
    keep: Any = (),
) -> Iterator[Record]:
    """Stream one file (local path or fsspec URL) as
    ``(source_row, raw, instruction, input, reason, extra)`` (see the module doc).

    ``fields`` is an ``InputFields`` (or a dict ``{instruction, input}``) overriding the preset's
    column names.  For ``.txt`` files every non-blank line is one instruction, whatever the preset.
    ``turn``: which user turn of a chat record is the instruction (``first | last | each``);
    ``keep``: record fields carried along in ``extra``.  A fault while opening or reading the
    file ends it with an ``unreadable`` row (module doc).
    ``split`` (a :class:`selectllm.text.splits.Split`): read only that split's lines, row groups or
    (CSV line by line) records, with the file's own ``source_row`` numbers; its ``meta`` (from
    :mod:`selectllm.lake`) adds partition values to every record, renames a table file's columns,
    skips the rows a table deleted, and marks the rows that fail ``input.filter``'s row conditions
    with reason :data:`FILTERED` (the dedup stage counts them; they are not quarantined).
    """
    kind = detect_format(url, fmt)
    table = json.loads(split.meta) if split is not None and getattr(split, "meta", "") else {}
    ext = _Extractor(preset, fields, max_chars, turn, keep, table.get("partition"), table.get("where"))
    _, comp = split_compression(url)
    first = split.first_row if split is not None else 0
    opened, nxt = False, first
    try:
        with _open(url) as f:
            opened = True
            for rec in _dispatch(f, kind, url, comp, ext, max_chars, split, table):
                nxt = rec[0] + 1
                yield rec if len(rec) == 6 else (*rec, None)
    except _read_errors() as e:
        if opened or split is None or split.start == 0:  # a failed open: the first split says it
            yield nxt, _error_text(e, url), None, None, "unreadable", None


def iter_records(url: str, fmt: str = "auto", preset: str = "alpaca", fields: Any = None,
                 max_chars: int = 20_000, split=None, turn: str = "first", keep: Any = ()) -> Iterator[Record]:
    """:func:`iter_rows` without ``extra``: ``(source_row, raw, instruction, input, reason)``."""
    for rec in iter_rows(url, fmt, preset, fields, max_chars, split, turn, keep):
        yield rec[:5]


# ----------------------------------------------------------------------------- the readers
@dataclass(frozen=True)
class Source:
    """What a reader is handed: the open file, and for a line split its byte range as a stream."""

    f: Any  # the whole (decompressed) file
    lines: Any  # this split's byte range of it (the whole file when not split)
    first: int  # source_row of the range's first line
    url: str
    compressed: bool
    ext: _Extractor
    max_chars: int
    split: Any  # splits.Split or None
    table: dict | None  # what a table adds to the file's rows (lake.py)


@dataclass(frozen=True)
class Reader:
    """One input format: its reader, the file name endings that name it (compression suffix
    removed), and how a file of it is split among tasks: ``"lines"`` (byte ranges cut at line
    ends), ``"row_groups"`` (Parquet), or ``None`` (one task reads the whole file)."""

    read: Callable[[Source], Iterator[Record]]
    suffixes: tuple[str, ...]
    splits: str | None


def _read_csv(s: Source) -> Iterator[Record]:
    if s.split is not None and s.split.csv_lines:  # no quoted newline: read line by line, split
        return _csv_lines(s.f, s.lines, s.ext, s.max_chars, s.first, s.split.start == 0)
    return _csv(s.f, s.ext, s.max_chars)


# format name -> reader: ``input.format``'s choices, detection by file name, splitting.  A new
# format is one function (Source -> records, see the conventions above) and one entry here.
READERS: dict[str, Reader] = {
    "jsonl": Reader(lambda s: _jsonl(s.lines, s.ext, s.max_chars, s.first), (".jsonl", ".ndjson"), "lines"),
    "json": Reader(lambda s: _json(s.f, s.ext, s.max_chars), (".json",), None),
    "parquet": Reader(lambda s: _parquet(s.f, s.url, s.compressed, s.ext, s.split, s.table), (".parquet",),
                      "row_groups"),
    "csv": Reader(_read_csv, (".csv",), "lines"),
    "txt": Reader(lambda s: _txt(s.lines, s.max_chars, s.first), (".txt",), "lines"),
}
FORMATS = tuple(READERS)


def _dispatch(f, kind: str, url: str, comp, ext: _Extractor, max_chars: int, split,
              table: dict | None = None) -> Iterator[Record]:
    reader = READERS[kind]
    lines, first = f, 0
    if split is not None and reader.splits == "lines" and (split.start > 0 or split.end >= 0):
        from selectllm.text.ranges import open_range

        lines, first = open_range(f, split.start, split.end), split.first_row
    yield from reader.read(Source(f, lines, first, url, comp is not None, ext, max_chars, split, table))
