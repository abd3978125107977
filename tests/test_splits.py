"""Input splits (no Spark): a file read as many byte ranges gives exactly the records of one read."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm.io import InputFile
from selectllm.text.formats import iter_records
from selectllm.text.ranges import CHUNK, open_range, range_chunks
from selectllm.text.splits import count_split, plan_files, resolve_splits


def _read_split(path, split_bytes: int, max_chars: int = 20_000, preset: str = "alpaca") -> tuple[list, list]:
    """(records of all splits in order, the splits) as the dedup stage plans them, counted here."""
    f = InputFile(url=str(path), size=path.stat().st_size, version="")
    planned, to_count = plan_files([f], "auto", split_bytes)
    splits = resolve_splits(planned, {(s.file_index, s.part): count_split(s) for s in to_count})
    out = []
    for s in splits:
        out += list(iter_records(str(path), preset=preset, max_chars=max_chars, split=s))
    return out, splits


def _whole(path, max_chars: int = 20_000, preset: str = "alpaca") -> list:
    return list(iter_records(str(path), preset=preset, max_chars=max_chars))


def _jsonl_bytes() -> bytes:
    lines = [b"\xef\xbb\xbf" + json.dumps({"instruction": "first, after a BOM"}).encode()]
    for i in range(60):
        row = {"instruction": f"row {i} " + "word " * (i % 7), "input": "x" * (i % 5)}
        lines.append(json.dumps(row).encode())
        if i % 9 == 0:
            lines.append(b"   ")  # blank: not a record, but counted as a line
        if i % 13 == 0:
            lines.append(b"{not json")
        if i % 17 == 0:
            lines.append(b'{"instruction": "bad \xff byte"}')
        if i % 11 == 0:
            lines.append(b'{"instruction": "crlf line"}\r')
    return b"\n".join(lines)  # no newline at the end


@pytest.mark.parametrize("trailing_newline", [False, True])
def test_jsonl_every_split_size_gives_the_records_of_one_read(tmp_path, trailing_newline):
    p = tmp_path / "a.jsonl"
    p.write_bytes(_jsonl_bytes() + (b"\n" if trailing_newline else b""))
    whole = _whole(p)
    assert any(r[4] == "malformed" for r in whole) and any(r[4] == "bad_encoding" for r in whole)
    size = p.stat().st_size
    for split_bytes in (1, 2, 3, 7, 50, 333, size - 1, size):
        got, splits = _read_split(p, split_bytes)
        assert got == whole, split_bytes
        if split_bytes < size:
            assert len(splits) > 1
    # the index of every record is its physical line (blank lines skipped but counted)
    physical = p.read_bytes().split(b"\n")
    for row, raw, instr, _inp, reason in whole:
        if reason is None:
            assert json.loads(physical[row].removeprefix(b"\xef\xbb\xbf"))["instruction"].strip() == instr.strip()


def test_an_overlong_line_across_split_boundaries_is_one_too_long_record(tmp_path):
    p = tmp_path / "long.jsonl"
    big = json.dumps({"instruction": "y" * (5 << 20)}).encode()  # > raw_line_limit (4 MiB)
    p.write_bytes(b'{"instruction": "a"}\n' + big + b'\n{"instruction": "b"}\n')
    whole = _whole(p, max_chars=100)
    assert [r[4] for r in whole] == [None, "too_long", None]
    got, splits = _read_split(p, 1 << 20, max_chars=100)
    assert len(splits) == 6 and got == whole


def test_range_chunks_are_bounded_and_tile_the_file(tmp_path):
    p = tmp_path / "t.txt"
    data = b"".join(b"line %d " % i + b"z" * (i * 997 % 3000) + b"\n" for i in range(3000))
    p.write_bytes(data)
    size, parts = len(data), []
    bounds = [0, 1, 17, size // 3, size // 2 + 5, size - 2, size]
    with open(p, "rb") as f:
        for a, b in zip(bounds[:-1], bounds[1:]):
            chunks = list(range_chunks(f, a, b, size=4096))
            assert all(len(c) <= 4096 for c in chunks)
            parts.append(b"".join(chunks))
    assert b"".join(parts) == data  # every line in exactly one range
    for part in parts:
        assert not part or part.endswith(b"\n")
    with open(p, "rb") as f:  # a range inside one line owns nothing
        assert open_range(f, 3, 4).read() == b""
    assert CHUNK >= 4096


def test_text_file_splits(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("".join(f"instruction number {i}\n" + ("\n" if i % 4 == 0 else "") for i in range(200)))
    whole = _whole(p)
    got, splits = _read_split(p, 100)
    assert len(splits) > 10 and got == whole


def _csv_text() -> str:
    rows = ["\ufeffinstruction,input,other"]
    for i in range(80):
        rows.append(f'"row {i}, quoted",in{i},"say ""hi"""')
        if i % 10 == 0:
            rows.append("")  # empty line: not a record, not counted
        if i % 15 == 0:
            rows.append("only,two")  # wrong number of fields
        if i % 7 == 0:
            rows.append(f"crlf {i},x,y\r")
    return "\n".join(rows) + "\n"


def test_csv_split_line_by_line_numbers_data_rows_like_one_read(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(_csv_text(), encoding="utf-8")
    whole = _whole(p)
    assert [r[0] for r in whole] == list(range(len(whole)))  # data-row index, empty lines skipped
    assert sum(r[4] == "malformed" for r in whole) == 6
    one, splits1 = _read_split(p, 1 << 30)
    assert len(splits1) == 1 and splits1[0].csv_lines and one == whole
    many, splits = _read_split(p, 64)
    assert len(splits) > 20 and all(s.csv_lines for s in splits) and many == whole


def test_csv_with_a_quoted_newline_is_one_streamed_split(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('instruction,input\n"two\nlines",a\n' + "".join(f"row {i},b\n" for i in range(50)))
    whole = _whole(p)
    assert whole[0][2] == "two\nlines" and len(whole) == 51
    got, splits = _read_split(p, 32)
    assert len(splits) == 1 and not splits[0].csv_lines and got == whole


def test_parquet_split_by_row_groups(tmp_path):
    p = tmp_path / "a.parquet"
    t = pa.table({"instruction": [f"row {i} " + "w" * (i % 50) for i in range(5000)],
                  "input": [""] * 4999 + [None]})
    pq.write_table(t, p, row_group_size=300)
    whole = _whole(p)
    size = p.stat().st_size
    got, splits = _read_split(p, size // 7)
    assert len(splits) >= 7 and got == whole
    assert [r[0] for r in got] == list(range(5000))


def test_compressed_files_are_one_split(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    p.write_bytes(gzip.compress(_jsonl_bytes()))
    got, splits = _read_split(p, 10)
    assert len(splits) == 1 and splits[0].end == -1 and got == _whole(p)
