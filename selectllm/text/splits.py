"""Input splits: one large file read by many tasks, each with memory independent of the file's size.

Pure Python + fsspec/pyarrow, no Spark (the dedup stage runs these functions in its tasks).

A *split* is a byte range ``[start, end)`` of one file.  What a split owns depends on the format:

* **JSONL, text** (uncompressed): the lines that *start* in ``[start, end)``, as Hadoop's
  ``TextInputFormat``.  A split that does not begin at offset 0 skips the partial line it begins
  in (it looks from ``start - 1``, so a range that begins exactly at a line start keeps that line),
  and it reads past ``end`` to finish its last line.  Every line belongs to exactly one split.
* **CSV** (uncompressed): the same line ranges, when the file allows it (see :func:`csv_lines_ok`):
  every split first reads the header (line 0 of the file) for the column names.
* **Parquet** (uncompressed): the row groups whose first column chunk starts in ``[start, end)``.
* **Compressed files (gz, zst) and JSON arrays** cannot be split (a decompressor or a JSON parser
  cannot start in the middle): one split per file, read as a stream in bounded batches.

``source_row`` keeps its meaning whatever the split (the physical line index for JSONL/text, the
data-row index for CSV and Parquet): a cheap *count pass* (:func:`count_split`: newlines per range,
no parsing) gives every split the number of lines before it, and Parquet splits count rows from
the footer.  So the same file gives the same rows, ids and quarantine rows with one split or many.
"""

from __future__ import annotations

from dataclasses import dataclass

from selectllm.text.ranges import CHUNK, open_range

SPLIT_BYTES = 64 << 20  # default bytes per split (``spark.sql.files.maxPartitionBytes`` overrides)
CSV_COUNT_LINE_LIMIT = 4 << 20  # the count pass looks at the quotes of a longer line's head only


@dataclass(frozen=True)
class Split:
    """One task's share of one file.  ``end = -1``: to the end of the file (the whole file)."""

    url: str
    kind: str  # jsonl | json | txt | csv | parquet
    start: int = 0
    end: int = -1
    first_row: int = 0  # source_row of this split's first line / record
    csv_lines: bool = False  # CSV read line by line (a record never spans lines); see csv_lines_ok
    file_index: int = 0  # which input file (for progress: files done)
    part: int = 0  # this split's number within its file
    meta: str = ""  # what a table or partitioned folder adds to the file's rows (InputFile.meta)


def is_splittable(kind: str, compressed: bool) -> bool:
    from selectllm.text.formats import READERS

    return not compressed and READERS[kind].splits is not None


def byte_ranges(size: int, split_bytes: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of about ``split_bytes`` covering ``size`` bytes (one when small)."""
    n = max(1, -(-size // max(1, split_bytes)))
    step = -(-size // n) if size else 0
    return [(i * step, size if i == n - 1 else (i + 1) * step) for i in range(n)]


def plan_files(files: list, fmt: str, split_bytes: int) -> tuple[list[list[Split]], list[Split]]:
    """(splits per file, the line splits the count pass must count) for ``InputFile``s (url, size).

    A splittable file larger than ``split_bytes`` gets several byte ranges; every other file one
    whole-file split.  Counted: the line splits of multi-split JSONL/text files, every CSV split
    (a CSV file's quoting decides how it is read, whatever its size).
    """
    from selectllm.text.formats import detect_format, split_compression

    planned: list[list[Split]] = []
    for i, f in enumerate(files):
        kind = detect_format(f.url, fmt)
        compressed = split_compression(f.url)[1] is not None
        ranges = (byte_ranges(f.size, split_bytes) if is_splittable(kind, compressed) and f.size > split_bytes
                  else [(0, -1)])
        planned.append([Split(f.url, kind, a, b, file_index=i, part=j, meta=getattr(f, "meta", "")) for j, (a, b) in enumerate(ranges)])
    to_count = [s for file in planned for s in file
                if s.kind == "csv" or (s.kind in ("jsonl", "txt") and len(file) > 1)]
    return planned, to_count


def resolve_splits(planned: list[list[Split]], counts: dict[tuple[int, int], tuple[int, int, int]]) -> list[Split]:
    """Every split with its ``first_row`` (prefix sums of the counts); a CSV file in which a quoted
    field may span lines becomes one whole-file split (parsed as a stream)."""
    from dataclasses import replace

    out: list[Split] = []
    for file in planned:
        kind = file[0].kind
        if kind == "csv" and not csv_lines_ok(sum(counts[(s.file_index, s.part)][2] for s in file)):
            out.append(replace(file[0], start=0, end=-1, part=0))
            continue
        before = 0
        for s in file:
            if (s.file_index, s.part) in counts:
                lines, records, _ = counts[(s.file_index, s.part)]
                s = replace(s, first_row=before, csv_lines=kind == "csv")
                before += records if kind == "csv" else lines
            out.append(s)
    return out


def count_split(split: Split) -> tuple[int, int, int]:
    """(lines, csv records, csv lines with an odd number of quotes) owned by one line split.

    ``lines`` counts every physical line (blank ones too), as JSONL/text ``source_row`` does.
    For CSV, ``records`` are the non-empty lines other than the file's line 0 (the header), and
    the odd-quote count says whether a quoted field may span lines.
    """
    from selectllm.text.formats import _iter_lines, _open

    with _open(split.url) as f:
        stream = open_range(f, split.start, split.end)
        if split.kind != "csv":
            lines, tail = 0, b""
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                lines += chunk.count(b"\n")
                tail = chunk[-1:]
            return lines + (1 if tail not in (b"", b"\n") else 0), 0, 0
        lines = records = odd = 0
        for line, _over in _iter_lines(stream, CSV_COUNT_LINE_LIMIT):
            if not (split.start == 0 and lines == 0) and line not in (b"", b"\r"):
                records += 1
            odd += line.count(b'"') & 1
            lines += 1
        return lines, records, odd


def csv_lines_ok(odd_quote_lines: int) -> bool:
    """A CSV file is read line by line (and so can be split) when no line holds an odd number of
    ``"``: then no quoted field can hold a newline.  Otherwise it is one split, parsed as a stream
    by the csv module (quoted newlines allowed)."""
    return odd_quote_lines == 0
